"""Writing entries shard by shard: the contract that lets many processes fill one archive at once.

A bulk job (e.g. ``ray_jobs``) works in three steps; docs/ARCHIVE.md ("Parallel writers") has the
details and the guarantees.

1. The driver lists its N source items once, in a deterministic order, opens the archive in mode
   "a" with ``job=`` (its codec, model, parameters and source, so a rerun with other settings is
   refused) and calls ``reservation = archive.reserve(keys)``. That appends N pending entries (the
   keys are stored now) and returns which shards hold them. Reserving the same keys again returns the
   same reservation, so a rerun of the driver resumes instead of duplicating.
2. For each shard in ``reservation.shards`` that is not in ``archive.complete_shards()``, a worker
   that knows only the URL calls ``write_shard(url, shard, entries)`` with one :class:`Entry` per key
   of ``reservation.shard_keys(shard)`` (ok or failed). It writes that shard's objects and nothing
   else, the status object last; rewriting a shard (a retry) replaces it and never duplicates.
3. The driver checks ``archive.complete_shards()`` again (a fresh ``open_archive`` sees the workers'
   writes) and retries what is missing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import zarr

from .archive_layout import PAYLOAD_COLUMNS, Status, open_columns, open_group, read_attributes
from .archive_store import StoreLike, describe, make_store
from .entries import Entry
from .errors import ArchiveError, DuplicateKeyError, UnreservedKeyError

T = TypeVar("T")
POOL_THREADS = 16  # concurrent requests per process: one per column of a shard, with room to spare


@dataclass(frozen=True)
class Reservation:
    """Entries ``start .. stop-1`` with their keys, as made by ``Archive.reserve``."""

    start: int
    stop: int
    items_per_shard: int
    keys: tuple[str, ...]

    @property
    def shards(self) -> range:
        """Indices of the shards that hold the reserved entries (the first and last may be shared)."""
        if self.start == self.stop:
            return range(0)
        return range(self.start // self.items_per_shard, (self.stop - 1) // self.items_per_shard + 1)

    def shard_slots(self, shard_index: int) -> range:
        """Entry indices of this reservation in shard ``shard_index``."""
        if shard_index not in self.shards:
            raise ArchiveError(f"Shard {shard_index} holds none of the reserved entries; use one of {self.shards}")
        low = max(self.start, shard_index * self.items_per_shard)
        high = min(self.stop, (shard_index + 1) * self.items_per_shard)
        return range(low, high)

    def shard_keys(self, shard_index: int) -> list[str]:
        """The keys a writer of shard ``shard_index`` must store, in entry order."""
        slots = self.shard_slots(shard_index)
        return list(self.keys[slots.start - self.start : slots.stop - self.start])


@dataclass(frozen=True)
class ShardReport:
    """What ``write_shard`` stored."""

    shard_index: int
    ok: int
    failed: int


_pool: list[ThreadPoolExecutor] = []  # one per process, made on first use


def _forget_pool() -> None:
    _pool.clear()  # a forked child has none of its parent's threads


os.register_at_fork(after_in_child=_forget_pool)


def in_parallel(tasks: Sequence[Callable[[], T]]) -> list[T]:
    """Run independent store operations at once (zarr's sync API may be called from several threads).

    Tasks must not call ``in_parallel`` themselves (the pool is bounded).
    """
    if len(tasks) <= 1:
        return [task() for task in tasks]
    if not _pool:
        _pool.append(ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="diffcodec-archive"))
    return list(_pool[0].map(lambda task: task(), tasks))


def _selection(slots: Sequence[int]) -> slice | np.ndarray:
    """A slice when the slots are contiguous (zarr then writes whole chunks without reading), else indices."""
    if slots[-1] - slots[0] + 1 == len(slots):
        return slice(slots[0], slots[-1] + 1)
    return np.asarray(slots, dtype=np.int64)


def read_values(array: zarr.Array, selection: slice | np.ndarray) -> np.ndarray:
    """Elements of a column (always through a selection: zarr's scalar reads mangle bytes ending in NUL)."""
    return array[selection] if isinstance(selection, slice) else array.oindex[selection]


def _write_values(array: zarr.Array, selection: slice | np.ndarray, values: np.ndarray) -> None:
    if isinstance(selection, slice):
        array[selection] = values
    else:
        array.oindex[selection] = values


def _column_values(entries: Sequence[Entry]) -> dict[str, np.ndarray]:
    def objects(values: list[Any]) -> np.ndarray:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array

    return {
        "key": objects([e.key for e in entries]),
        "bitstream": objects([e.bitstream for e in entries]),
        "width": np.array([e.width for e in entries], dtype=np.uint32),
        "height": np.array([e.height for e in entries], dtype=np.uint32),
        "mode": objects([e.mode for e in entries]),
        "bpp": np.array([e.bpp for e in entries], dtype=np.float64),
        "source_size": np.array([e.source_size for e in entries], dtype=np.int64),
        "source_sha256": objects([e.source_sha256 for e in entries]),
        "error": objects([e.error for e in entries]),
        "status": np.array([int(e.status) for e in entries], dtype=np.uint8),
    }


def store_entries(
    columns: dict[str, zarr.Array], slots: Sequence[int], entries: Sequence[Entry], *, with_keys: bool
) -> None:
    """Write ``entries`` to ``slots`` (ascending, all in one shard), publishing them last.

    Entries that are already visible are first set back to pending, so while they are rewritten a
    reader sees either the old entry or "pending", never a mix of old and new columns. Then the
    payload columns are written (at once), and finally the status object, which makes them visible.
    """
    selection = _selection(slots)
    status = columns["status"]
    if np.any(read_values(status, selection) != Status.PENDING):
        _write_values(status, selection, np.zeros(len(slots), dtype=np.uint8))
    values = _column_values(entries)
    names = PAYLOAD_COLUMNS + (("key",) if with_keys else ())
    in_parallel([lambda name=name: _write_values(columns[name], selection, values[name]) for name in names])
    _write_values(status, selection, values["status"])


def complete_shards(status: np.ndarray, items_per_shard: int) -> list[int]:
    """Shards whose every entry (of ``status``, the first ``length`` elements) is ok or failed."""
    count = math.ceil(len(status) / items_per_shard)
    return [
        shard
        for shard in range(count)
        if np.all(status[shard * items_per_shard : (shard + 1) * items_per_shard] != Status.PENDING)
    ]


def write_shard(
    url: StoreLike, shard_index: int, entries: Sequence[Entry], *, storage_options: dict[str, Any] | None = None
) -> ShardReport:
    """Store ``entries`` (keys reserved in shard ``shard_index``) in the archive at ``url``.

    Made for worker processes that know only the URL: it reads the archive's metadata and the
    shard's keys (two requests), writes the shard's objects of each column, then its status object.
    Give each reserved key of the shard one entry (``Entry.ok`` or ``Entry.failed``); a shard with
    keys left out stays incomplete. It touches no object of any other shard and no metadata, so
    writers of different shards never conflict; two writers of the same shard must not run at once.
    Calling it again for the same shard replaces the entries, so retries never duplicate.
    """
    where = describe(url)
    store = make_store(url, read_only=False, storage_options=storage_options)
    group = open_group(store, where, writable=True, consolidated=True)
    attributes = read_attributes(group, where)
    size, length = attributes["items_per_shard"], attributes["length"]
    shards = math.ceil(length / size)
    if isinstance(shard_index, bool) or not isinstance(shard_index, int) or not 0 <= shard_index < shards:
        raise ArchiveError(
            f"{where} has no shard {shard_index!r}: its {length} entries fill shards 0..{shards - 1} "
            f"({size} per shard); reserve the keys with Archive.reserve first"
        )
    columns = open_columns(group, where, attributes)
    low, high = shard_index * size, min(length, (shard_index + 1) * size)
    slot_of = {key: low + offset for offset, key in enumerate(read_values(columns["key"], slice(low, high)))}
    placed: dict[int, Entry] = {}
    for entry in entries:
        if not isinstance(entry, Entry):
            raise ArchiveError(f"write_shard takes storage.Entry objects, got {type(entry).__name__}")
        slot = slot_of.get(entry.key)
        if slot is None:
            raise UnreservedKeyError(
                f"Key {entry.key!r} is not reserved in shard {shard_index} of {where} (entries {low}..{high - 1}); "
                "give each shard the keys of Reservation.shard_keys(shard)"
            )
        if slot in placed:
            raise DuplicateKeyError(f"Key {entry.key!r} appears twice in the entries for shard {shard_index}")
        placed[slot] = entry
    if placed:
        slots = sorted(placed)
        store_entries(columns, slots, [placed[slot] for slot in slots], with_keys=False)
    failed = sum(entry.status == Status.FAILED for entry in placed.values())
    return ShardReport(shard_index, ok=len(placed) - failed, failed=failed)
