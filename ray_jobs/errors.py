"""Errors raised by Ray bulk jobs; each also derives from :class:`pillow_diffcodec.errors.DiffCodecError`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pillow_diffcodec.errors import DiffCodecError

if TYPE_CHECKING:
    from .report import BulkReport


class SourceError(DiffCodecError, OSError):
    """A source cannot be listed: nothing there, no images in it, or a parquet table without the named columns."""


class ClusterError(DiffCodecError, RuntimeError):
    """Ray cannot be started or joined, or the cluster has no resources for one encoder."""


class IncompleteJobError(DiffCodecError, RuntimeError):
    """Some shards could not be written after every retry; the archive is left resumable.

    ``report`` is the job's :class:`~ray_jobs.report.BulkReport` (also stored in the archive); rerunning
    the same job writes the missing shards.
    """

    def __init__(self, message: str, report: BulkReport) -> None:
        super().__init__(message)
        self.report = report
