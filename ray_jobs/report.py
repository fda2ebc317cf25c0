"""The report of a bulk job: printed by the CLI, returned by ``bulk_compress`` and stored in the archive.

It is stored in the root group attribute ``diffcodec_bulk_report`` (next to the archive's own
``diffcodec_archive`` attribute, which it leaves alone) as ``{"runs": [report, ...], "totals": {...}}``:
every run's report in order (a rerun that resumes or completes the job adds one) and their totals, so
``zarr.open_group(url).attrs`` shows how the archive was filled over all runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import zarr

from storage import make_store, quiet_zarr

REPORT_ATTRIBUTE = "diffcodec_bulk_report"
SUMMED = ("encoded", "bytes_in", "bytes_out", "pixels", "warned", "wall_seconds")  # per-run figures the totals add


@dataclass(frozen=True)
class BulkReport:
    """What a bulk job did.

    ``source`` and ``dest`` are absolute (local paths) or URLs. ``ok``, ``failed`` and ``pending`` count
    the whole job's entries as they stand at the end; ``skipped`` is the items whose shards an earlier
    run had finished; ``encoded`` and the byte, pixel, bpp and speed figures cover the items this run
    processed. ``mean_bpp`` is weighted by bytes: this run's file bits over its pixels (ok entries), so
    a few tiny images do not skew it. ``warned`` counts this run's items encoded with a warning;
    ``warnings`` names a few of them with the warning (each entry keeps its own: ``Entry.warning``).
    ``errors`` holds, per shard that could not be written after every retry, the last error.
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
    pixels: int
    mean_bpp: float
    images_per_second: float
    wall_seconds: float
    startup_seconds: float
    shards: int
    workers: int
    warned: int = 0
    warnings: dict[str, str] = field(default_factory=dict)
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
        if self.warned:
            key, text = next(iter(self.warnings.items()))
            lines.append(f"  {self.warned} item(s) encoded with a warning (listed by archive ls), e.g. {key}: {text}")
        lines += [f"  shard {shard} not written: {error}" for shard, error in self.errors.items()]
        return "\n".join(lines)


def store_report(url: str, report: BulkReport, storage_options: dict[str, Any] | None = None) -> None:
    """Add ``report`` to the runs recorded in the archive's root attributes, update the totals (and
    re-consolidate the archive's metadata)."""
    store = make_store(url, read_only=False, storage_options=storage_options)
    with quiet_zarr():
        group = zarr.open_group(store, mode="r+", zarr_format=3, use_consolidated=False)
        runs = [*_runs(group.attrs.get(REPORT_ATTRIBUTE)), json.loads(json.dumps(report.as_dict()))]
        group.attrs[REPORT_ATTRIBUTE] = {"runs": runs, "totals": _totals(runs)}
        zarr.consolidate_metadata(store, zarr_format=3)


def read_report(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The bulk reports stored in the archive at ``url`` (``{"runs": [...], "totals": {...}}``), or None
    when no bulk job wrote it."""
    store = make_store(url, read_only=True, storage_options=storage_options)
    with quiet_zarr():
        group = zarr.open_group(store, mode="r", zarr_format=3)
    runs = _runs(group.attrs.get(REPORT_ATTRIBUTE))
    return {"runs": runs, "totals": _totals(runs)} if runs else None


def _runs(stored: object) -> list[dict[str, Any]]:
    """The runs of a stored attribute; one written before runs were kept (a single report) is the first."""
    if not isinstance(stored, dict):
        return []
    runs = stored.get("runs", [stored])
    return [dict(run) for run in runs if isinstance(run, dict)]


def _totals(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums over ``runs`` (encoded items, bytes, pixels, warned items, wall time) and their bytes-weighted bpp."""
    totals: dict[str, Any] = {name: sum(run.get(name, 0) for run in runs) for name in SUMMED}
    measured = [run for run in runs if run.get("pixels")]  # runs written before pixels were counted have none
    pixels = sum(run["pixels"] for run in measured)
    totals["mean_bpp"] = 8 * sum(run["bytes_out"] for run in measured) / pixels if pixels else 0.0
    totals["runs"] = len(runs)
    return totals
