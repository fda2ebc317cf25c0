"""Zarr image archives: many diffcodec files in one zarr v3 group, read item by item.

    with storage.open_archive("memory://photos.zarr", "w") as archive:
        archive.add("cats/tom.png", image, quality=40)
    archive = storage.open_archive("memory://photos.zarr")
    archive["cats/tom.png"]          # PIL image, decoded when its pixels are first used
    archive.read_bytes(0)            # the standalone .ddcm file of entry 0

Reading lives in :mod:`storage.archive_reader` (:class:`ArchiveReader`, the base of :class:`Archive`);
this module adds writing, verifying and repairing, and :func:`open_archive`. The layout is specified in
docs/ARCHIVE.md; :mod:`storage.shards` holds the contract for many processes writing one archive at once.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr
from PIL import Image

import pillow_diffcodec
from pillow_diffcodec.errors import (
    DiffCodecError,
    InvalidParameterError,
    ModelNotFoundError,
    NotDiffCodecFileError,
    UnknownCodecError,
)

from . import archive_layout as layout
from .archive_layout import ATTRIBUTE, ROW_COLUMNS, Status
from .archive_reader import ArchiveReader, Mode
from .archive_store import StoreLike, describe, make_store
from .entries import Entry, check_key
from .errors import (
    ArchiveError,
    ArchiveNotFoundError,
    CorruptEntryError,
    DuplicateKeyError,
    JobMismatchError,
    ReadOnlyArchiveError,
    UnsupportedArchiveVersionError,
)
from .shards import Reservation, in_parallel, read_values, store_entries
from .verify import VerifyReport, verify

# Errors that belong to one image (recorded as a failed entry by add); anything else is the caller's to fix.
IMAGE_ERRORS = (DiffCodecError, OSError, ValueError)
CALLER_ERRORS = (InvalidParameterError, ModelNotFoundError, UnknownCodecError)


class Archive(ArchiveReader):
    """An open archive (see :class:`ArchiveReader` for reading): writing entries one by one or by
    reservation (:mod:`storage.shards`), verifying and repairing. Use :func:`open_archive` to make one.
    Reads see the archive as it was when it was opened, plus this object's own writes. An Archive is
    not meant to be shared between threads that write; open one per process (or per thread).
    """

    # ----------------------------------------------------------------- writing

    def _writable(self) -> None:
        if self.mode == "r":
            raise ReadOnlyArchiveError(f"{self.url} was opened read-only; open it with mode 'a' to write")

    def _make_entry(self, key: str, value: Image.Image | bytes | Entry, save_options: dict[str, Any]) -> Entry:
        if isinstance(value, Entry):
            if value.key != key or save_options:
                raise InvalidParameterError(f"add() takes an Entry as is, under its own key {value.key!r}")
            return value
        if isinstance(value, Image.Image):
            try:
                return Entry.ok(key, pillow_diffcodec.encode(value, **save_options))
            except CALLER_ERRORS:
                raise
            except IMAGE_ERRORS as exc:
                return Entry.failed(key, exc)
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise InvalidParameterError(
                f"add() takes a PIL image, a diffcodec file or an image file's bytes, got {type(value).__name__}"
            )
        data = bytes(value)
        try:
            entry = Entry.ok(key, data)
        except CorruptEntryError as exc:
            if not isinstance(exc.__cause__, NotDiffCodecFileError):  # our magic, but damaged
                return Entry.failed(key, exc.__cause__ or exc)
        else:
            if save_options:
                raise InvalidParameterError(
                    f"Entry {key!r} is already encoded; save options {sorted(save_options)} apply to images only"
                )
            return entry
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                return Entry.ok(key, pillow_diffcodec.encode(image, **save_options), source=data)
        except CALLER_ERRORS:
            raise
        except IMAGE_ERRORS as exc:
            return Entry.failed(key, exc, source=data)

    def add(
        self, key: str, value: Image.Image | bytes | Entry, *, overwrite: bool = False, **save_options: Any
    ) -> dict[str, Any]:
        """Add an entry: a PIL image (encoded with ``save_options`` as for ``Image.save(..., format="DDCM")``),
        an already encoded diffcodec file, the bytes of any image file Pillow opens (its size and
        sha256 are recorded), or a prepared :class:`Entry` of this key (stored as it is).

        An image that cannot be encoded is recorded as a failed entry with its error (and returned
        as such); bad options raise. A key that exists is an error unless ``overwrite=True`` or the
        entry is pending (reserved). Entries are buffered and written a whole shard at a time; they
        are durable once :meth:`flush` (or the ``with`` block, or :meth:`close`) returns.
        Returns the entry's :meth:`info`.
        """
        self._writable()
        check_key(key)
        slot = self._key_slots().get(key)
        if slot is not None and not overwrite and self._field(slot, "status") != Status.PENDING:
            raise DuplicateKeyError(
                f"Key {key!r} is already in {self.url} (entry {slot}); pass overwrite=True to replace it"
            )
        entry = self._make_entry(key, value, save_options)
        slot = len(self) if slot is None else slot
        self._buffer[slot] = entry
        self._key_slots()[key] = slot
        if len(self._buffer) >= self.items_per_shard:
            self.flush()
        return self._row(slot)

    def reserve(self, keys: Sequence[str]) -> Reservation:
        """Append a pending entry for each key (for a bulk job; see :mod:`storage.shards`).

        Reserving keys that are already reserved together, in the same order, returns their existing
        reservation, so a rerun resumes; any other overlap with existing keys is an error.
        """
        self._writable()
        self.flush()
        keys = tuple(check_key(key) for key in keys)
        if len(set(keys)) != len(keys):
            twice = sorted({key for key in keys if keys.count(key) > 1})[:5]
            raise DuplicateKeyError(f"reserve() got keys more than once: {twice}")
        existing = self._key_slots()
        found = [existing.get(key) for key in keys]
        if keys and found == list(range(found[0] or 0, (found[0] or 0) + len(keys))):  # reserved before, in order
            return Reservation(found[0], found[0] + len(keys), self.items_per_shard, keys)
        clash = [key for key, slot in zip(keys, found) if slot is not None]
        if clash:
            raise DuplicateKeyError(
                f"{len(clash)} of the keys are already in {self.url} (e.g. {clash[:3]}) but not as one earlier "
                "reservation in this order; reserve only new keys, or list the sources in the same order as before"
            )
        start, stop = self._length, self._length + len(keys)
        capacity = self._columns["status"].shape[0]
        self._grow(stop)
        key_values = np.empty(len(keys), dtype=object)
        key_values[:] = keys
        self._columns["key"][start:stop] = key_values
        stale = slice(start, min(stop, capacity))  # slots a crashed writer may have left behind
        if stale.start < stale.stop:
            self._columns["status"][stale] = np.zeros(stale.stop - stale.start, dtype=np.uint8)
        self._commit_length(stop)
        for slot, key in enumerate(keys, start):
            existing[key] = slot
        return Reservation(start, stop, self.items_per_shard, keys)

    def _grow(self, length: int) -> None:
        """Make every array long enough for ``length`` entries (whole shards), then re-consolidate."""
        capacity = math.ceil(length / self.items_per_shard) * self.items_per_shard
        if capacity <= self._columns["status"].shape[0]:
            return
        with layout.quiet_zarr():
            in_parallel([lambda array=array: array.resize((capacity,)) for array in self._columns.values()])
        self._consolidate()

    def _consolidate(self) -> None:
        with layout.quiet_zarr():
            self._group = zarr.consolidate_metadata(self._store, zarr_format=3)

    def _commit_length(self, length: int) -> None:
        """Publish the new length (the last write of an append: entries beyond it are invisible)."""
        with layout.quiet_zarr():
            self._group.attrs[ATTRIBUTE] = {**self._attributes, "length": length}
        self._attributes = layout.read_attributes(self._group, self.url)
        self._length = length

    def flush(self) -> None:
        """Write the buffered entries (shard by shard, each shard's status last), then the new length."""
        if not self._buffer:
            return
        self._writable()
        length = len(self)
        self._grow(length)
        by_shard: dict[int, list[int]] = {}
        for slot in sorted(self._buffer):
            by_shard.setdefault(slot // self.items_per_shard, []).append(slot)
        for slots in by_shard.values():
            store_entries(self._columns, slots, [self._buffer[slot] for slot in slots], with_keys=True)
            for name in ROW_COLUMNS:
                self._rows.pop((slots[0] // self.items_per_shard, name), None)
        if not self._attributes["job"]:
            self._attributes["job"] = _job_of(next((e for e in self._buffer.values() if e.status == Status.OK), None))
            if self._attributes["job"]:
                layout.back_up_job(self._columns["key"], self._attributes["job"])
        self._buffer.clear()
        self._commit_length(length)

    def close(self) -> None:
        """Flush (in modes "w" and "a"); the archive stays readable afterwards."""
        if self.mode != "r":
            self.flush()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- whole-archive operations

    def verify(self, sample: int | None = None, *, repair: bool = False, **decode_options: Any) -> VerifyReport:
        """Check every ok entry's bitstream (header, CRC, agreement with its columns) and decode
        ``sample`` of them; see :func:`storage.verify.verify`.

        ``repair=True`` (modes "a" and "w" only) re-encodes every damaged entry from its source, with the
        source URL, codec, model and parameters the archive's job records (the source is read with this
        archive's storage options; ``decode_options["model"]`` replaces the recorded model), and marks it
        failed with the reason where that is not possible (no source recorded, source gone or changed,
        another model): see :func:`storage.repair.repair_entries`. An archive opened for writing stores
        the outcome in its attributes (:attr:`last_verify`, shown by ``diffcodec archive info`` and
        ``ls``); one opened read-only is only checked.
        """
        if repair:
            self._writable()
        return verify(self, sample, repair=repair, **decode_options)

    def _record_verify(self, outcome: dict[str, Any]) -> None:
        """Store ``outcome`` as :attr:`last_verify` (in the root attributes, next to the archive's own)."""
        self._writable()
        with layout.quiet_zarr():
            self._group.attrs[layout.VERIFY_ATTRIBUTE] = outcome

    def _reset_unreadable_bitstreams(self, shard: int) -> None:
        """Replace shard ``shard``'s bitstream object when zarr cannot read it (e.g. its index is damaged) by
        one holding every bitstream that is still readable alone, so that entries can be written into it
        again (zarr reads a shard object before writing any part of it, even all of it)."""
        size = self.items_per_shard
        whole = slice(shard * size, (shard + 1) * size)  # arrays grow by whole shards
        try:
            read_values(self._columns["bitstream"], whole)
            return
        except Exception:  # noqa: BLE001  (whatever a damaged object makes zarr raise)
            pass
        kept = [self._bitstream_or_error(slot) if slot < self._length else b"" for slot in range(whole.start, whole.stop)]
        values = np.empty(size, dtype=object)
        values[:] = [data if isinstance(data, bytes) else b"" for data in kept]
        array = self._columns["bitstream"]
        zarr.core.sync.sync(self._store.delete(f"{array.path}/{array.metadata.encode_chunk_key((shard,))}"))
        array[whole] = values


def _job_of(entry: Entry | None) -> dict[str, Any]:
    """What an archive filled by add() records as its job when the writer declared none: the first file's codec."""
    if entry is None:
        return {}
    header = pillow_diffcodec.info(entry.bitstream)
    return {key: header[key] for key in ("codec", "model", "fingerprint", "params")}


def _check_job(group: zarr.Group, where: str, job: Mapping[str, Any]) -> None:
    attributes = layout.read_attributes(group, where)
    recorded = attributes["job"]
    if not recorded:
        with layout.quiet_zarr():
            group.attrs[ATTRIBUTE] = {**attributes, "job": dict(job)}
            layout.back_up_job(group["key"], dict(job))
        return
    if recorded != dict(job):
        fields = sorted(k for k in set(recorded) | set(job) if recorded.get(k) != job.get(k))
        detail = "; ".join(f"{k}: archive has {recorded.get(k)!r}, this job {job.get(k)!r}" for k in fields)
        raise JobMismatchError(
            f"{where} was written by a job with other settings ({detail}); rerun with the same settings, "
            "or write to a new archive"
        )


def _refuse_to_replace_other_data(store: zarr.abc.store.Store, where: str) -> None:
    """Creating an archive clears its location: allowed when that is empty or holds an archive, never otherwise."""
    try:
        layout.read_attributes(layout.open_group(store, where, writable=False, consolidated=True), where)
    except ArchiveNotFoundError:
        if layout.holds_data(store):
            raise ArchiveError(
                f"{where} holds other data (no archive); refusing to replace it with a new archive: "
                "choose an empty location, or remove what is there first"
            ) from None
    except UnsupportedArchiveVersionError:
        raise
    except ArchiveError:
        raise ArchiveError(
            f"{where} holds a zarr group that is not a diffcodec archive; refusing to replace it: "
            "choose an empty location, or remove what is there first"
        ) from None


def open_archive(
    url: StoreLike,
    mode: Mode = "r",
    storage_options: dict[str, Any] | None = None,
    *,
    items_per_shard: int = layout.DEFAULT_ITEMS_PER_SHARD,
    job: Mapping[str, Any] | None = None,
) -> Archive:
    """Open the archive at ``url`` (a path, any fsspec URL with ``storage_options``, or a zarr store).

    ``mode``: "r" reads an existing archive; "w" creates one, replacing whatever is at ``url``;
    "a" opens an existing archive for writing, or creates it. ``items_per_shard`` sets the shard size
    of a new archive (an existing one keeps its own). ``job`` (JSON-able: codec, model, fingerprint,
    params, source, ...) is recorded in a new archive; for an existing one it must equal what is
    recorded, so a rerun with other settings is refused with :class:`JobMismatchError`.
    """
    if mode not in ("r", "w", "a"):
        raise InvalidParameterError(f"Expected mode 'r', 'w' or 'a', got {mode!r}")
    where = describe(url)
    store = make_store(url, read_only=mode == "r", storage_options=storage_options)
    if mode == "r":
        group = layout.open_group(store, where, writable=False, consolidated=True)
        return Archive(url, storage_options, mode, group)
    if mode == "a":
        try:
            group = layout.open_group(store, where, writable=True, consolidated=False)
        except ArchiveNotFoundError:
            pass
        else:
            if job is not None:
                _check_job(group, where, job)
            layout.open_columns(group, where, layout.read_attributes(group, where))
            with layout.quiet_zarr():
                group = zarr.consolidate_metadata(store, zarr_format=3)  # repairs a copy left stale by a killed writer
            return Archive(url, storage_options, mode, group)
    layout.check_items_per_shard(items_per_shard)
    _refuse_to_replace_other_data(store, where)
    try:
        with layout.quiet_zarr():
            group = zarr.open_group(store, mode="w")
        layout.create(group, items_per_shard, dict(job or {}))
        with layout.quiet_zarr():
            group = zarr.consolidate_metadata(store, zarr_format=3)
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"Cannot create an archive at {where}: {exc}") from exc
    return Archive(url, storage_options, mode, group)
