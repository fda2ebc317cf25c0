"""Repairing archives: damaged entries re-encoded from their sources, and a lost root ``zarr.json`` rebuilt.

    archive = storage.open_archive("photos.zarr", "a")
    report = archive.verify(repair=True)      # or: diffcodec archive verify --repair photos.zarr
    storage.rebuild_root("photos.zarr")       # or: diffcodec archive repair photos.zarr

An entry is re-encoded only from the source item its archive's job names (``job["source"]`` plus the
entry's key, as :func:`ray_jobs.bulk_compress` lists sources: a folder, a glob, a tar or zip archive),
with the job's codec, model and parameters; the source must still hold the bytes that were encoded
(their sha256 is compared when the entry recorded it), and the new file must come from a model with the
job's fingerprint. Otherwise the entry is marked failed with the reason, so that no damaged entry is
left stored as ok.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import posixpath
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np
import zarr
from fsspec import AbstractFileSystem
from PIL import Image

import pillow_diffcodec
from pillow_diffcodec.errors import DiffCodecError, RateFallbackWarning

from . import archive_layout as layout
from .archive_store import StoreLike, describe, make_store
from .entries import Entry
from .errors import NotAnArchiveError
from .shards import read_values

if TYPE_CHECKING:
    from .archive import Archive

GLOB_CHARACTERS = "*?["
ARCHIVE_KINDS = {".tar": "tar", ".tar.gz": "tar", ".tgz": "tar", ".tar.bz2": "tar", ".tar.xz": "tar", ".zip": "zip"}
PARQUET_SUFFIXES = (".parquet", ".pq")


class Unrepairable(Exception):
    """Why one damaged entry cannot be re-encoded (it is then marked failed with this reason)."""


class SourceLocator:
    """Reads a job's source items by key: ``job["source"]`` as a bulk job lists it (folder, glob, single file,
    tar or zip archive, local or any fsspec URL; parquet tables cannot be read by key)."""

    def __init__(self, source: object, storage_options: dict[str, Any] | None) -> None:
        if not isinstance(source, str) or not source:
            raise Unrepairable("the archive records no source (it was not filled by a bulk job)")
        self.source, self.options = source, dict(storage_options or {})
        self._place: tuple[AbstractFileSystem, str] | None = None

    def read(self, key: str) -> bytes:
        """The bytes of the source item ``key``."""
        try:
            fs, base = self._filesystem()
            return fs.cat_file(posixpath.join(base, key) if base else key)
        except Unrepairable:
            raise
        except Exception as exc:  # noqa: BLE001  (fsspec backends raise many types for a missing item)
            raise Unrepairable(f"its source item in {self.source} cannot be read ({type(exc).__name__}: {exc})")

    def _filesystem(self) -> tuple[AbstractFileSystem, str]:
        """The filesystem the keys are paths in, and the folder they are relative to (made once)."""
        if self._place is None:
            kind = _kind(self.source)
            if kind == "parquet":
                raise Unrepairable(f"its source {self.source} is a parquet table, whose items cannot be read by key")
            self._place = _archive_members(self.source, kind, self.options) if kind else self._files()
        return self._place

    def _files(self) -> tuple[AbstractFileSystem, str]:
        fs, path = fsspec.core.url_to_fs(self.source, **self.options)
        if any(character in path for character in GLOB_CHARACTERS):
            fixed = path[: min(path.index(c) for c in GLOB_CHARACTERS if c in path)]
            return fs, fixed.rsplit("/", 1)[0] if "/" in fixed else ""
        return fs, path.rstrip("/") if fs.isdir(path) else posixpath.dirname(path)


def _kind(source: str) -> str | None:
    """"tar", "zip", "parquet", or None for files (a folder, a glob, one file)."""
    head = source.split("::", 1)[0]
    for kind in ("tar", "zip"):
        if head.startswith(f"{kind}://"):
            return kind
    lowered = source.lower().rstrip("/")
    for suffix, kind in ARCHIVE_KINDS.items():
        if lowered.endswith(suffix):
            return kind
    return "parquet" if lowered.endswith(PARQUET_SUFFIXES) else None


def _archive_members(source: str, kind: str, options: dict[str, Any]) -> tuple[AbstractFileSystem, str]:
    """The members of a tar or zip archive (``photos.tar``, or chained: ``tar://folder::s3://bucket/photos.tar``)."""
    head, _, target = source.partition("::")
    if not head.startswith(f"{kind}://"):
        return fsspec.filesystem(kind, fo=source, target_options=options), ""
    return fsspec.filesystem(kind, fo=target, target_options=options), head[len(kind) + 3 :].strip("/")


def repair_entries(
    archive: Archive, damaged: Mapping[str, str], model: Any = None
) -> tuple[list[str], dict[str, str]]:
    """Re-encode the entries ``damaged`` (keys, as :attr:`VerifyReport.corrupt`) from their source, or mark
    them failed with the reason; returns (re-encoded keys, key -> reason for those marked failed).

    ``archive`` must be open for writing; ``model`` replaces the model its job records (the new files
    must still carry the job's fingerprint). Entries are rewritten in place (same index and key);
    nothing else changes. Do not run it while a job writes the archive.
    """
    try:
        locator: SourceLocator | None = SourceLocator(archive.job.get("source"), archive.storage_options)
        no_source = ""
    except Unrepairable as exc:
        locator, no_source = None, str(exc)
    repaired: list[str] = []
    marked: dict[str, str] = {}
    rows = [archive.info(key) for key in damaged]
    for shard in sorted({row["index"] // archive.items_per_shard for row in rows}):
        archive._reset_unreadable_bitstreams(shard)
    for row in rows:
        try:
            if locator is None:
                raise Unrepairable(no_source)
            entry = _reencoded(archive.job, row, locator.read(row["key"]), model)
            repaired.append(row["key"])
        except Unrepairable as exc:
            marked[row["key"]] = f"its stored file was damaged and cannot be re-encoded: {exc}"
            entry = _failed(row, marked[row["key"]])
        archive.add(row["key"], entry, overwrite=True)
    archive.flush()
    return repaired, marked


def _failed(row: dict[str, Any], reason: str) -> Entry:
    """A failed entry that keeps what the damaged one recorded about its source."""
    entry = Entry.failed(row["key"], reason)
    return dataclasses.replace(entry, source_size=row["source_size"], source_sha256=row["source_sha256"])


def _reencoded(job: dict[str, Any], row: dict[str, Any], raw: bytes, model: Any) -> Entry:
    """The entry encoded again from the source bytes ``raw`` with the job's settings."""
    if row["source_sha256"] and hashlib.sha256(raw).hexdigest() != row["source_sha256"]:
        raise Unrepairable("its source item changed since it was encoded (its sha256 differs)")
    try:
        with Image.open(io.BytesIO(raw)) as image, warnings.catch_warnings():
            warnings.simplefilter("ignore", RateFallbackWarning)  # as in the bulk job that encoded it
            image.load()
            data = pillow_diffcodec.encode(
                image, codec=job.get("codec"), model=model or job.get("model"), **job.get("params", {})
            )
    except (DiffCodecError, OSError, ValueError, TypeError) as exc:
        raise Unrepairable(f"encoding its source failed ({type(exc).__name__}: {exc})") from exc
    fingerprint = str(pillow_diffcodec.info(data)["fingerprint"])
    if job.get("fingerprint") and fingerprint != job["fingerprint"]:
        raise Unrepairable(f"the model at hand has fingerprint {fingerprint}, the archive's job {job['fingerprint']}")
    return Entry.ok(row["key"], data, source=raw)


def rebuild_root(url: StoreLike, storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Write a new root ``zarr.json`` for the archive at ``url`` from its arrays, which must be intact.

    For a root that is missing, truncated or not an archive's any more. The shard size comes from the
    arrays, the length from the keys (the last non-empty one), the job from the copy kept on the ``key``
    array (archives written before that copy existed get the codec, model, fingerprint and parameters of
    their first ok entry, and no source). The bulk report and the last verify are not recovered.
    Returns the archive attribute written, or None when the root is intact (then nothing is written).
    Raises :class:`NotAnArchiveError` when an array is missing or unreadable.
    """
    where = describe(url)
    store = make_store(url, read_only=False, storage_options=storage_options)
    try:
        layout.read_attributes(layout.open_group(store, where, writable=False, consolidated=False), where)
        return None
    except NotAnArchiveError:
        pass
    arrays = _arrays(store, where)
    attributes = _attributes_from(arrays, where)
    with layout.quiet_zarr():
        zarr.core.sync.sync(store.delete("zarr.json"))
        group = zarr.open_group(store, mode="a", zarr_format=3, use_consolidated=False)
        group.attrs[layout.ATTRIBUTE] = attributes
        zarr.consolidate_metadata(store, zarr_format=3)
    return attributes


def _arrays(store: zarr.abc.store.Store, where: str) -> dict[str, zarr.Array]:
    """Every column array, opened from its own zarr.json."""
    arrays = {}
    for name in layout.COLUMN_NAMES:
        try:
            with layout.quiet_zarr():
                arrays[name] = zarr.open_array(store, path=name, mode="r", zarr_format=3)
        except (FileNotFoundError, ValueError, TypeError, KeyError, OSError) as exc:
            raise NotAnArchiveError(
                f"{where}: cannot rebuild the root, the {name!r} array does not open ({type(exc).__name__}: {exc})"
            ) from None
    return arrays


def _attributes_from(arrays: dict[str, zarr.Array], where: str) -> dict[str, Any]:
    """The archive attribute the arrays imply."""
    sizes = {(array.shards or array.chunks)[0] for array in arrays.values()}
    if len(sizes) != 1:
        raise NotAnArchiveError(f"{where}: the arrays are cut into shards of different sizes {sorted(sizes)}")
    keys = read_values(arrays["key"], slice(0, arrays["key"].shape[0]))
    filled = np.flatnonzero([bool(key) for key in keys])
    length = int(filled[-1]) + 1 if filled.size else 0
    job = arrays["key"].attrs.get(layout.JOB_BACKUP)
    return {
        "format_version": layout.FORMAT_VERSION,
        "items_per_shard": sizes.pop(),
        "length": length,
        "created": "unknown (root rebuilt)",
        "rebuilt": datetime.now(UTC).isoformat(timespec="seconds"),
        "library_version": pillow_diffcodec.__version__,
        "job": dict(job) if isinstance(job, dict) else _job_from_entries(arrays, length),
    }


def _job_from_entries(arrays: dict[str, zarr.Array], length: int) -> dict[str, Any]:
    """The first ok entry's codec, model, fingerprint and parameters (an older archive with no job copy)."""
    status = read_values(arrays["status"], slice(0, length))
    for slot in np.flatnonzero(status == layout.Status.OK):
        try:
            header = pillow_diffcodec.info(bytes(read_values(arrays["bitstream"], slice(slot, slot + 1))[0]))
        except Exception:  # noqa: BLE001  (a damaged entry: try the next one)
            continue
        return {key: header[key] for key in ("codec", "model", "fingerprint", "params")}
    return {}
