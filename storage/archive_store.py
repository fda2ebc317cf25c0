"""From a URL to a zarr store: local paths get zarr's LocalStore (atomic writes), other URLs an FsspecStore."""

from __future__ import annotations

import os
from typing import Any

import fsspec
from zarr.abc.store import Store
from zarr.storage import FsspecStore, LocalStore

StoreLike = str | os.PathLike[str] | Store


def describe(target: StoreLike) -> str:
    """How a store appears in messages: its URL or path."""
    if isinstance(target, FsspecStore):
        return target.fs.unstrip_protocol(target.path)
    if isinstance(target, LocalStore):
        return str(target.root)
    return os.fspath(target) if isinstance(target, (str, os.PathLike)) else repr(target)


def make_store(target: StoreLike, *, read_only: bool, storage_options: dict[str, Any] | None = None) -> Store:
    """A zarr store for ``target``: a path or fsspec URL (with ``storage_options``), or a store as is.

    Local paths and ``file://`` URLs use zarr's LocalStore, which writes every object through a
    temporary file and a rename, so a killed writer never leaves a half-written object behind.
    Object stores (S3, GCS, ``memory://``) replace objects atomically by themselves.
    """
    if isinstance(target, Store):
        return target.with_read_only(read_only) if target.read_only != read_only else target
    url = os.fspath(target)
    protocol, path = fsspec.core.split_protocol(url)
    if protocol in (None, "file", "local") and "::" not in url:
        return LocalStore(os.path.abspath(path), read_only=read_only)
    return FsspecStore.from_url(url, storage_options=storage_options, read_only=read_only)
