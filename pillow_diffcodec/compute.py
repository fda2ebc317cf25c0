"""Pinned compute settings: the same numbers in every process, whatever torch's thread count.

CPU kernels (oneDNN convolutions, BLAS) split their reductions by the number of intra-op threads, so
one convolution gives results that differ in the last bit between 1 and 2 threads; over a diffusion
chain that becomes a pixel off by one. A codec whose decoder must reproduce its encoder therefore runs
its maths on a fixed number of threads (:attr:`CodecEntry.compute_threads
<pillow_diffcodec.codecs.CodecEntry>`), and cuDNN in its deterministic mode.

``torch.set_num_threads`` is process-wide, so :func:`pinned_compute` is shared between Python threads:
any number of threads may compute under the same count at once (each torch op then runs in its calling
thread, so a thread pool of single-threaded decodes is truly parallel), while a caller asking for
another count waits until they are done. The caller's settings come back when the last one leaves.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

__all__ = ["pinned_compute"]

_state = threading.Condition()
_holders = 0
_pinned: int | None = None
_saved: tuple[int, bool, bool] | None = None


@contextlib.contextmanager
def pinned_compute(threads: int) -> Iterator[None]:
    """Run the body with ``threads`` intra-op CPU threads and deterministic cuDNN, then restore the caller's."""
    global _holders, _pinned, _saved
    with _state:
        _state.wait_for(lambda: _holders == 0 or _pinned == threads)
        if _holders == 0:
            _saved = torch.get_num_threads(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
            torch.set_num_threads(threads)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
            _pinned = threads
        _holders += 1
    try:
        yield
    finally:
        with _state:
            _holders -= 1
            if _holders == 0 and _saved is not None:
                torch.set_num_threads(_saved[0])
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = _saved[1], _saved[2]
                _pinned, _saved = None, None
                _state.notify_all()
