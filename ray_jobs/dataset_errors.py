"""The error a dataset of :func:`ray_jobs.read_archive` raises for a damaged entry.

It imports Ray, so it is loaded only where Ray runs (the decoder actors, and the driver when the error
arrives), not by ``import ray_jobs``.
"""

from __future__ import annotations

from ray.exceptions import UserCodeException

import storage


class DamagedEntryError(storage.CorruptEntryError, UserCodeException):
    """A damaged entry met by a dataset of :func:`ray_jobs.read_archive` (``on_error="raise"``): a
    :class:`storage.CorruptEntryError` whose message names the key. It is also a Ray
    ``UserCodeException``, so that Ray Data reports it as an error in the data (in a short log line),
    not as a failure of Ray itself."""
