"""Zarr image archives: many diffcodec files in one zarr v3 group, read item by item.

    with storage.open_archive("memory://photos.zarr", "w") as archive:
        archive.add("cats/tom.png", image, quality=40)
    archive = storage.open_archive("memory://photos.zarr")
    archive["cats/tom.png"]          # PIL image, decoded when its pixels are first used
    archive.read_bytes(0)            # the standalone .ddcm file of entry 0

The layout is specified in docs/ARCHIVE.md; :mod:`storage.shards` holds the contract for many
processes writing one archive at once.
"""

from __future__ import annotations

import io
import math
import operator
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

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
from .archive_store import StoreLike, describe, make_store
from .entries import Entry, check_key
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
    PendingEntryError,
    ReadOnlyArchiveError,
    UnsupportedArchiveVersionError,
)
from .shards import Reservation, complete_shards, in_parallel, read_values, store_entries

if TYPE_CHECKING:
    from .extract import ExtractReport
    from .torch_dataset import ArchiveDataset
    from .verify import VerifyReport

Mode = Literal["r", "w", "a"]
Item = int | str
STATUS_NAMES = {Status.PENDING: "pending", Status.OK: "ok", Status.FAILED: "failed"}
CACHED_SHARDS = 4
# Errors that belong to one image (recorded as a failed entry by add); anything else is the caller's to fix.
IMAGE_ERRORS = (DiffCodecError, OSError, ValueError)
CALLER_ERRORS = (InvalidParameterError, ModelNotFoundError, UnknownCodecError)
REPAIR_HINT = (
    "repair it with `diffcodec archive verify --repair URL` (Archive.verify(repair=True)), which re-encodes it "
    "from its source, or rewrite it with add(..., overwrite=True)"
)


class Archive:
    """An open archive. Entries are addressed by index (``0 .. len-1``, negative from the end) or key.

    Every source item has an entry whose status is ``ok``, ``failed`` (with its error) or
    ``pending`` (reserved by a job that has not written it yet); ``len()`` counts them all.
    Reads see the archive as it was when it was opened, plus this object's own writes. An Archive
    is not meant to be shared between threads that write; open one per process (or per thread).
    Use :func:`open_archive` to make one.
    """

    def __init__(
        self, target: StoreLike, storage_options: dict[str, Any] | None, mode: Mode, group: zarr.Group
    ) -> None:
        self.url = describe(target)
        self.mode = mode
        self.target = target  # what open_archive was given, to reopen it (e.g. in data-loader workers)
        self.storage_options = storage_options
        self._store = group.store
        self._group = group
        self._attributes = layout.read_attributes(group, self.url)
        self._length = self._attributes["length"]
        self._columns = layout.open_columns(group, self.url, self._attributes)
        self._buffer: dict[int, Entry] = {}  # written by add(), not yet flushed
        self._slots: dict[str, int] | None = None  # key -> entry index, built on first use
        self._rows: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()  # (shard, column) -> values

    # ----------------------------------------------------------------- properties

    @property
    def items_per_shard(self) -> int:
        """Entries per shard object."""
        return self._attributes["items_per_shard"]

    @property
    def job(self) -> dict[str, Any]:
        """How the entries were made (codec, model, fingerprint, params, source...), as recorded."""
        return dict(self._attributes["job"])

    @property
    def attributes(self) -> dict[str, Any]:
        """The archive's group attribute: format version, shard size, length, creation time, versions, job."""
        return {**self._attributes, "job": self.job}

    def __len__(self) -> int:
        return max(self._length, max(self._buffer, default=-1) + 1)

    def __repr__(self) -> str:
        return f"<Archive {self.url!r} mode={self.mode!r} entries={len(self)}>"

    # ----------------------------------------------------------------- addressing

    def _slot(self, item: Item) -> int:
        if isinstance(item, str):
            slot = self._key_slots().get(item)
            if slot is None:
                raise EntryNotFoundError(f"No entry with key {item!r} in {self.url} ({len(self)} entries; see keys())")
            return slot
        try:
            index = operator.index(item)
        except TypeError:
            raise InvalidKeyError(f"Entries are addressed by int index or str key, got {type(item).__name__}") from None
        if isinstance(item, bool):
            raise InvalidKeyError(f"Entries are addressed by int index or str key, got {item!r}")
        slot = index + len(self) if index < 0 else index
        if not 0 <= slot < len(self):
            raise EntryIndexError(f"Index {index} is out of range for {self.url}, which has {len(self)} entries")
        return slot

    def _key_slots(self) -> dict[str, int]:
        if self._slots is None:
            keys = read_values(self._columns["key"], slice(0, self._length)) if self._length else []
            self._slots = {}
            for slot, key in enumerate(keys):
                self._slots.setdefault(str(key), slot)
            for slot, entry in self._buffer.items():
                self._slots[entry.key] = slot
        return self._slots

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._key_slots()

    def keys(self) -> list[str]:
        """Every entry's key, in entry order (pending and failed entries included)."""
        slots = self._key_slots()
        return sorted(slots, key=slots.__getitem__)

    def __iter__(self) -> Iterator[str]:
        """Iterates over keys, like a mapping; :meth:`items` yields images."""
        return iter(self.keys())

    # ----------------------------------------------------------------- rows

    def _shard_columns(self, shard: int, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Columns ``names`` of one shard (one request per column not cached yet, made at once), cached."""
        missing = [name for name in names if (shard, name) not in self._rows]
        size = self.items_per_shard
        span = slice(shard * size, min((shard + 1) * size, self._length))
        values = in_parallel([lambda name=name: read_values(self._columns[name], span) for name in missing])
        self._rows.update({(shard, name): value for name, value in zip(missing, values)})
        for name in names:
            self._rows.move_to_end((shard, name))
        while len(self._rows) > CACHED_SHARDS * len(ROW_COLUMNS):
            self._rows.popitem(last=False)
        return {name: self._rows[(shard, name)] for name in names}

    def _field(self, slot: int, name: str) -> Any:
        """One column's value for one entry (the cheap way to read a status or a key)."""
        if slot in self._buffer:
            return getattr(self._buffer[slot], name)
        return self._shard_columns(slot // self.items_per_shard, (name,))[name][slot % self.items_per_shard]

    def _row(self, slot: int) -> dict[str, Any]:
        if slot in self._buffer:
            entry = self._buffer[slot]
            values = {name: getattr(entry, name) for name in ROW_COLUMNS}
        else:
            columns = self._shard_columns(slot // self.items_per_shard, ROW_COLUMNS)
            values = {name: column[slot % self.items_per_shard] for name, column in columns.items()}
        return _row_dict(slot, values)

    def info(self, item: Item) -> dict[str, Any]:
        """Metadata of one entry, read from the archive's columns (the bitstream is not read).

        Keys: index, key, status ("ok" | "failed" | "pending"), width, height, mode, bpp, bytes,
        source_size (-1 if unknown), source_sha256 ("" if unknown), error ("" unless failed).
        """
        return self._row(self._slot(item))

    def entries(self) -> Iterator[dict[str, Any]]:
        """:meth:`info` of every entry in order, read one shard at a time."""
        for slot in range(len(self)):
            yield self._row(slot)

    def counts(self) -> dict[str, int]:
        """Number of entries per status: {"ok": n, "failed": n, "pending": n}."""
        status = self._status()
        return {name: int(np.count_nonzero(status == value)) for value, name in STATUS_NAMES.items()}

    def failed(self) -> dict[str, str]:
        """Keys of the entries recorded as failed, with their errors."""
        return {row["key"]: row["error"] for row in self.entries() if row["status"] == "failed"}

    def pending(self) -> list[str]:
        """Keys of the entries reserved but not written yet."""
        return [row["key"] for row in self.entries() if row["status"] == "pending"]

    def _status(self) -> np.ndarray:
        status = np.zeros(len(self), dtype=np.uint8)
        if self._length:
            status[: self._length] = read_values(self._columns["status"], slice(0, self._length))
        for slot, entry in self._buffer.items():
            status[slot] = entry.status
        return status

    def complete_shards(self) -> list[int]:
        """Shards all of whose entries are ok or failed, read fresh from the store (for resuming a job).

        Counts only what is in the store: flush() first for this object's own add()s.
        """
        status = read_values(self._columns["status"], slice(0, self._length)) if self._length else np.zeros(0)
        return complete_shards(status, self.items_per_shard)

    # ----------------------------------------------------------------- bitstreams and images

    def _refuse(self, row: dict[str, Any]) -> None:
        """Raise the error of an entry that is not ok."""
        if row["status"] == "failed":
            raise FailedEntryError(f"Entry {row['key']!r} in {self.url} failed when it was written: {row['error']}")
        if row["status"] == "pending":
            shard = row["index"] // self.items_per_shard
            raise PendingEntryError(
                f"Entry {row['key']!r} in {self.url} is reserved but not written yet (shard {shard} is incomplete); "
                "rerun the job that reserved it"
            )
        raise CorruptEntryError(
            f"Entry {row['key']!r} in {self.url} has status {row['status']}: its status object is damaged"
        )

    def _bitstreams(self, span: slice) -> list[bytes | ArchiveError]:
        """Bitstreams of ``span`` (one read of their shard); if that fails, each entry is read alone so
        that an unreadable one becomes its own error (entries past the length are then left out)."""
        try:
            return [bytes(value) for value in read_values(self._columns["bitstream"], span)]
        except Exception:  # whatever a damaged shard makes zarr raise: retry entry by entry
            if span.stop - span.start == 1:
                raise
            return [self._bitstream_or_error(slot) for slot in range(span.start, min(span.stop, self._length))]

    def _bitstream_or_error(self, slot: int) -> bytes | ArchiveError:
        try:
            return self._bitstreams(slice(slot, slot + 1))[0]
        except Exception as exc:  # noqa: BLE001  (zarr and codec errors vary by store and damage)
            key = self._field(slot, "key")
            return CorruptEntryError(
                f"Entry {key!r} in {self.url}: its bitstream cannot be read ({type(exc).__name__}: {exc}); "
                f"{REPAIR_HINT}"
            )

    def _validated(self, key: str, data: bytes | ArchiveError, check: bool) -> bytes:
        if isinstance(data, ArchiveError):
            raise data
        if not data:
            raise CorruptEntryError(
                f"Entry {key!r} in {self.url} is marked ok but its bitstream is missing; {REPAIR_HINT}"
            )
        if check:
            try:
                pillow_diffcodec.info(data)
            except DiffCodecError as exc:
                raise CorruptEntryError(f"Entry {key!r} in {self.url} is damaged: {exc}; {REPAIR_HINT}") from exc
        return data

    def read_bytes(self, item: Item, *, check: bool = True) -> bytes:
        """The entry's standalone diffcodec file (its CRC is verified unless ``check=False``).

        Costs the shard's status object and two ranged reads of its bitstream object (index, entry):
        a constant number of requests, whatever the archive's size.
        """
        slot = self._slot(item)
        if self._field(slot, "status") != Status.OK:
            self._refuse(self._row(slot))
        data = self._buffer[slot].bitstream if slot in self._buffer else self._bitstream_or_error(slot)
        if isinstance(data, bytes) and data and (not check or _is_sound(data)):
            return data
        return self._validated(str(self._field(slot, "key")), data, check)  # raises, naming the key

    def __getitem__(self, item: Item) -> Image.Image:
        """The entry as a PIL image; its pixels are decoded (with the model named in the file) on first use."""
        return Image.open(io.BytesIO(self.read_bytes(item)))

    def decode(self, item: Item, **decode_options: Any) -> Image.Image:
        """Decode the entry now; ``decode_options`` as :func:`pillow_diffcodec.decode` (``model``, ``device``...)."""
        return pillow_diffcodec.decode(self.read_bytes(item), **decode_options)

    @property
    def shards(self) -> range:
        """Indices of the shards that hold entries."""
        return range(math.ceil(len(self) / self.items_per_shard))

    def records(
        self, shards: Iterable[int] | None = None
    ) -> Iterator[tuple[dict[str, Any], bytes | ArchiveError | None]]:
        """Every entry's :meth:`info` with its checked bitstream: bytes for a sound ok entry, the
        :class:`CorruptEntryError` for a damaged one, None for failed and pending entries.

        Reads one shard at a time (its bitstreams in one request), for scans such as verify and
        extract; ``shards`` limits it to some shards (e.g. one per task of a distributed reader).
        """
        size = self.items_per_shard
        for shard in self.shards if shards is None else shards:
            if shard not in self.shards:
                raise EntryIndexError(f"{self.url} has no shard {shard}; its shards are {self.shards}")
            low, high = shard * size, min((shard + 1) * size, len(self))
            rows = [self._row(slot) for slot in range(low, high)]
            # The whole shard, even past the last entry, so that zarr fetches its object in one request.
            whole = slice(low, min(low + size, self._columns["bitstream"].shape[0]))
            stored = self._bitstreams(whole) if low < self._length else []
            for slot, row in zip(range(low, high), rows):
                if row["status"] != "ok":
                    yield row, None
                    continue
                data = self._buffer[slot].bitstream if slot in self._buffer else stored[slot - low]
                try:
                    checked: bytes | ArchiveError = self._validated(row["key"], data, check=True)
                except ArchiveError as exc:
                    checked = exc
                yield row, checked

    def items(self) -> Iterator[tuple[str, Image.Image]]:
        """``(key, image)`` for every ok entry in order (failed and pending ones are in failed() / pending()).

        A damaged entry raises its :class:`CorruptEntryError` when reached.
        """
        for row, data in self.records():
            if isinstance(data, ArchiveError):
                raise data
            if data is not None:
                yield row["key"], Image.open(io.BytesIO(data))

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
        from .verify import verify

        if repair:
            self._writable()
        return verify(self, sample, repair=repair, **decode_options)

    @property
    def last_verify(self) -> dict[str, Any] | None:
        """The outcome of the last :meth:`verify` run with write access (None: never verified), as stored:
        time, summary, entries, ok, failed, pending, damaged (key -> error, what is still damaged),
        repaired, marked_failed (key -> reason), decoded, decode_errors, healthy."""
        value = self._group.attrs.get(layout.VERIFY_ATTRIBUTE)
        return dict(value) if isinstance(value, dict) else None

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

    def extract(self, dest_url: str, format: str | None = "PNG", **options: Any) -> ExtractReport:
        """Write every ok entry below ``dest_url``; see :func:`storage.extract.extract`."""
        from .extract import extract

        return extract(self, dest_url, format, **options)

    def as_torch_dataset(self, transform: Any = None, **decode_options: Any) -> ArchiveDataset:
        """A map-style ``torch.utils.data.Dataset`` of the ok entries; see :mod:`storage.torch_dataset`."""
        from .torch_dataset import ArchiveDataset

        return ArchiveDataset(self, transform, **decode_options)


def _is_sound(data: bytes) -> bool:
    try:
        pillow_diffcodec.info(data)
    except DiffCodecError:
        return False
    return True


def _row_dict(slot: int, values: Mapping[str, Any]) -> dict[str, Any]:
    width, height, bpp = int(values["width"]), int(values["height"]), float(values["bpp"])
    status = STATUS_NAMES.get(int(values["status"]), f"invalid ({int(values['status'])})")
    return {
        "index": slot,
        "key": str(values["key"]),
        "status": status,
        "width": width,
        "height": height,
        "mode": str(values["mode"]),
        "bpp": bpp,
        "bytes": round(bpp * width * height / 8) if status == "ok" else 0,
        "source_size": int(values["source_size"]),
        "source_sha256": str(values["source_sha256"]),
        "error": str(values["error"]),
    }


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
