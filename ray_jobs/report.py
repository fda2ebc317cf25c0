"""The report of a bulk job: printed by the CLI, returned by ``bulk_compress`` and stored in the archive.

It is stored as the root group attribute ``diffcodec_bulk_report`` (next to the archive's own
``diffcodec_archive`` attribute, which it leaves alone), so ``zarr.open_group(url).attrs`` shows how
the archive was last filled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import zarr

from storage.archive_layout import quiet_zarr
from storage.archive_store import make_store

REPORT_ATTRIBUTE = "diffcodec_bulk_report"


@dataclass(frozen=True)
class BulkReport:
    """What a bulk job did.

    ``ok``, ``failed`` and ``pending`` count the whole job's entries as they stand at the end;
    ``skipped`` is the items whose shards an earlier run had finished; ``encoded`` and the byte, bpp
    and speed figures cover the items this run processed. ``errors`` holds, per shard that could not
    be written after every retry, the last error.
    """

    source: str
    dest: str
    items: int
    ok: int
    failed: int
    pending: int
    skipped: int
    encoded: int
    bytes_in: int
    bytes_out: int
    mean_bpp: float
    images_per_second: float
    wall_seconds: float
    startup_seconds: float
    shards: int
    workers: int
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when every item has an entry (ok or failed)."""
        return self.pending == 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """The report as a few lines of text."""
        ratio = f" ({self.bytes_in / self.bytes_out:.1f}x smaller)" if self.bytes_out else ""
        lines = [
            f"bulk {self.source} -> {self.dest}",
            (
                f"  items {self.items}: {self.ok} ok, {self.failed} failed, {self.pending} pending; "
                f"{self.skipped} skipped (done by an earlier run)"
            ),
            (
                f"  this run: {self.encoded} images in {self.shards} shard(s) on {self.workers} worker(s); "
                f"{self.bytes_in} bytes in, {self.bytes_out} bytes out{ratio}, mean {self.mean_bpp:.4f} bpp"
            ),
            (
                f"  {self.images_per_second:.2f} images/s, wall time {self.wall_seconds:.1f}s "
                f"(Ray start-up {self.startup_seconds:.1f}s)"
            ),
        ]
        lines += [f"  shard {shard} not written: {error}" for shard, error in self.errors.items()]
        return "\n".join(lines)


def store_report(url: str, report: BulkReport, storage_options: dict[str, Any] | None = None) -> None:
    """Record ``report`` in the archive's root attributes (and re-consolidate its metadata)."""
    store = make_store(url, read_only=False, storage_options=storage_options)
    with quiet_zarr():
        group = zarr.open_group(store, mode="r+", zarr_format=3, use_consolidated=False)
        group.attrs[REPORT_ATTRIBUTE] = json.loads(json.dumps(report.as_dict()))
        zarr.consolidate_metadata(store, zarr_format=3)


def read_report(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The last bulk report stored in the archive at ``url``, or None when no bulk job wrote it."""
    store = make_store(url, read_only=True, storage_options=storage_options)
    with quiet_zarr():
        group = zarr.open_group(store, mode="r", zarr_format=3)
    value = group.attrs.get(REPORT_ATTRIBUTE)
    return dict(value) if isinstance(value, dict) else None
