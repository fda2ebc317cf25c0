"""Atomic writes to any fsspec URL (used by the CLI here and by ``storage``)."""

from __future__ import annotations

import uuid
from typing import Any

import fsspec


def write_bytes_atomic(data: bytes, url: str, *, storage_options: dict[str, Any] | None = None) -> None:
    """Write ``data`` to ``url`` via a temporary sibling and a move; nothing partial is ever visible.

    On any failure the temporary file is removed and an existing file at ``url`` is left untouched.
    """
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    parent = fs._parent(path)
    if parent and not fs.exists(parent):
        fs.makedirs(parent, exist_ok=True)
    temporary = f"{path}.{uuid.uuid4().hex}.partial"
    try:
        fs.pipe_file(temporary, data)
        fs.mv(temporary, path)
    except BaseException:
        if fs.exists(temporary):
            fs.rm_file(temporary)
        raise
