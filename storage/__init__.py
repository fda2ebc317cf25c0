"""fsspec-aware reading and writing of single images, and zarr archives of many images.

Archives (docs/ARCHIVE.md): ``open_archive(url, mode)`` returns an :class:`Archive`; bulk jobs write
them shard by shard with ``Archive.reserve`` and ``write_shard`` (see :mod:`storage.shards`);
``Archive.verify(repair=True)`` and ``rebuild_root`` repair them (see :mod:`storage.repair`).

``save_image`` encodes the whole file in memory first and then writes it to a temporary sibling
that is moved into place, so a failure at any point leaves no partial file and an existing file
untouched. ``open_image`` reads local paths, ``memory://``, cloud URLs and chained URLs such as
``tar://x.ddcm::file:///a.tar``.
"""

from __future__ import annotations

import io
from typing import Any

import fsspec
from PIL import Image

import pillow_diffcodec  # noqa: F401  (registers the diffcodec formats with Pillow)
from pillow_diffcodec.codecs import DEFAULT_CODEC
from pillow_diffcodec.fsio import write_bytes_atomic

from .archive import Archive, open_archive
from .archive_layout import Status, quiet_zarr
from .archive_reader import ArchiveReader
from .archive_store import make_store
from .entries import Entry
from .errors import (
    ArchiveError,
    ArchiveNotFoundError,
    CorruptEntryError,
    DuplicateKeyError,
    EntryIndexError,
    EntryNotFoundError,
    FailedEntryError,
    InvalidKeyError,
    JobMismatchError,
    NotAnArchiveError,
    PendingEntryError,
    ReadOnlyArchiveError,
    UnreservedKeyError,
    UnsupportedArchiveVersionError,
)
from .extract import ExtractReport, OutputFormat, extract_entry, output_bases
from .repair import rebuild_root, repair_entries
from .shards import Reservation, ShardReport, write_shard
from .verify import VerifyReport

__all__ = [
    "Archive",
    "ArchiveReader",
    "ArchiveError",
    "ArchiveNotFoundError",
    "CorruptEntryError",
    "DuplicateKeyError",
    "Entry",
    "EntryIndexError",
    "EntryNotFoundError",
    "ExtractReport",
    "FailedEntryError",
    "InvalidKeyError",
    "JobMismatchError",
    "NotAnArchiveError",
    "OutputFormat",
    "PendingEntryError",
    "ReadOnlyArchiveError",
    "Reservation",
    "ShardReport",
    "Status",
    "UnreservedKeyError",
    "UnsupportedArchiveVersionError",
    "VerifyReport",
    "extract_entry",
    "make_store",
    "open_archive",
    "open_image",
    "output_bases",
    "quiet_zarr",
    "rebuild_root",
    "repair_entries",
    "save_image",
    "write_bytes_atomic",
    "write_shard",
]


def save_image(
    image: Image.Image, url: str, *, format: str = DEFAULT_CODEC, storage_options: dict[str, Any] | None = None, **options: Any
) -> None:
    """Encode ``image`` with Pillow (``format``, ``options`` as for ``Image.save``) and write it atomically."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    write_bytes_atomic(buffer.getvalue(), url, storage_options=storage_options)


def open_image(url: str, *, storage_options: dict[str, Any] | None = None) -> Image.Image:
    """Read and decode the image at ``url`` (any Pillow format, diffcodec formats included)."""
    with fsspec.open(url, "rb", **(storage_options or {})) as handle:
        data = handle.read()
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
