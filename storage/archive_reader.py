"""Reading a zarr image archive: addressing entries by index or key, their rows, bitstreams and images.

:class:`ArchiveReader` is everything an open archive can do without writing; :class:`storage.Archive`
(``storage/archive.py``) adds writing, verifying and repairing. Extraction and the torch dataset take an
:class:`ArchiveReader`, so they need nothing from the writing side. The layout is in docs/ARCHIVE.md.
"""

from __future__ import annotations

import io
import math
import operator
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import zarr
from PIL import Image

import pillow_diffcodec
from pillow_diffcodec.errors import DiffCodecError

from . import archive_layout as layout
from .archive_layout import ROW_COLUMNS, Status
from .archive_store import StoreLike, describe
from .entries import Entry
from .errors import (
    ArchiveError,
    CorruptEntryError,
    EntryIndexError,
    EntryNotFoundError,
    FailedEntryError,
    InvalidKeyError,
    PendingEntryError,
)
from .extract import ExtractReport, extract
from .shards import complete_shards, in_parallel, read_values

if TYPE_CHECKING:
    from .torch_dataset import ArchiveDataset  # imports torch, so only when a dataset is asked for

Mode = Literal["r", "w", "a"]
Item = int | str
STATUS_NAMES = {Status.PENDING: "pending", Status.OK: "ok", Status.FAILED: "failed"}
CACHED_SHARDS = 4
REPAIR_HINT = (
    "repair it with `diffcodec archive verify --repair URL` (Archive.verify(repair=True)), which re-encodes it "
    "from its source, or rewrite it with add(..., overwrite=True)"
)


class ArchiveReader:
    """An open archive, read side. Entries are addressed by index (``0 .. len-1``, negative from the end) or key.

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
        source_size (-1 if unknown), source_sha256 ("" if unknown), error (a failed entry's error; for an ok
        entry the warning raised while it was encoded, "" if none).
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

    @property
    def last_verify(self) -> dict[str, Any] | None:
        """The outcome of the last :meth:`verify` run with write access (None: never verified), as stored:
        time, summary, entries, ok, failed, pending, damaged (key -> error, what is still damaged),
        repaired, marked_failed (key -> reason), decoded, decode_errors, healthy."""
        value = self._group.attrs.get(layout.VERIFY_ATTRIBUTE)
        return dict(value) if isinstance(value, dict) else None

    def extract(self, dest_url: str, format: str | None = "PNG", **options: Any) -> ExtractReport:
        """Write every ok entry below ``dest_url``; see :func:`storage.extract.extract`."""
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
