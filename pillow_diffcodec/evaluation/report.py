"""Reports of an :class:`~.table.EvalTable`: CSV and JSON per image and per point, BD-rates, a printed
summary, rate-distortion plots (each metric over bpp; matplotlib with the Agg backend, PNG) and
``report.html`` (:mod:`.html_report`). Files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from .bdrate import ANCHOR, BD_METRICS, bd_rates
from .table import EvalTable, PointSummary, Row

PLOTS = {
    "psnr": ("rd_psnr.png", "PSNR (dB, RGB)"),
    "ms_ssim": ("rd_ms_ssim.png", "MS-SSIM (RGB)"),
    "vif": ("rd_vif.png", "VIF-p (1 = identical)"),
    "gmsd": ("rd_gmsd.png", "GMSD (0 = identical, lower is better)"),
    "haarpsi": ("rd_haarpsi.png", "HaarPSI (1 = identical)"),
    "lpips": ("rd_lpips.png", "LPIPS (0 = identical, lower is better)"),
    "dists": ("rd_dists.png", "DISTS (0 = identical, lower is better)"),
}
# (column title, format) of each metric beyond PSNR/MS-SSIM in the summaries, shown when any row has it
EXTRA_COLUMNS = {"vif": ("VIF", ".3f"), "gmsd": ("GMSD", ".4f"), "haarpsi": ("HaarPSI", ".3f"),
                 "lpips": ("LPIPS", ".4f"), "dists": ("DISTS", ".4f")}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def _csv_bytes(records: list[dict[str, Any]], fields: list[str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue().encode("utf-8")


def _write_pair(folder: Path, stem: str, records: list[dict[str, Any]], fields: list[str]) -> list[Path]:
    csv_path, json_path = folder / f"{stem}.csv", folder / f"{stem}.json"
    _write_atomic(csv_path, _csv_bytes(records, fields))
    _write_atomic(json_path, json.dumps(_json_safe(records), indent=1).encode("utf-8"))
    return [csv_path, json_path]


def bd_records(table: EvalTable, anchor: str = ANCHOR) -> list[dict[str, Any]]:
    """One record per codec: its BD-rate (percent) against ``anchor`` for each metric."""
    return [
        {"codec": codec, "anchor": anchor, **{f"bd_rate_{m}": values[m] for m in BD_METRICS}}
        for codec, values in bd_rates(table, anchor).items()
    ]


def plot(table: EvalTable, metric: str, path: Path, title: str = "") -> Path:
    """Mean ``metric`` over mean bpp per point, one line per codec (log rate axis), as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    label = PLOTS[metric][1]
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    try:
        for index, codec in enumerate(table.codec_names()):
            rates, values = table.curve(codec, metric)
            finite = [(r, v) for r, v in zip(rates, values) if math.isfinite(v)]
            if finite:
                axes.plot(
                    *zip(*finite), marker="o" if index == 0 else ".", linewidth=2.2 if index == 0 else 1.3, label=codec
                )
        axes.set_xscale("log")
        axes.set_xlabel("bits per pixel (whole file)")
        axes.set_ylabel(label)
        images = len({row.image for row in table.rows})
        count = f"mean of {images} image{'s' * (images != 1)}"
        axes.set_title(f"{title}\n({count})" if title else f"{label} vs rate, {count}", fontsize=11)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    _write_atomic(path, buffer.getvalue())
    return path


def _stripes(summary: PointSummary) -> str:
    """Mean stripe ratios "columns/rows" (metrics.stripe_ratios: 1 = as in the original, > 3 visible), or "-"."""
    if summary.stripes_columns is None or summary.stripes_rows is None:
        return "-"
    return f"{summary.stripes_columns:.1f}/{summary.stripes_rows:.1f}"


def extra_metrics(table: EvalTable) -> list[str]:
    """The metrics beyond PSNR/MS-SSIM that at least one row of ``table`` has, in :data:`EXTRA_COLUMNS` order."""
    return [m for m in EXTRA_COLUMNS if any(getattr(row, m) is not None for row in table.rows)]


def metric_cell(value: float | None, metric: str) -> str:
    """``value`` formatted for ``metric``'s column, "-" when not computed."""
    return "-" if value is None else format(value, EXTRA_COLUMNS[metric][1])


def format_summary(table: EvalTable, anchor: str = ANCHOR) -> str:
    """The per-point means and BD-rates as a fixed-width text table."""
    extra = extra_metrics(table)
    width = max([8, *(len(codec) for codec in table.codec_names())])
    lines = [
        f"{'codec':<{width}} {'point':<13} {'n':>3} {'bpp':>7} {'PSNR':>6} {'MS-SSIM':>7} "
        + "".join(f"{EXTRA_COLUMNS[m][0]:>8} " for m in extra)
        + f"{'enc s':>7} {'dec s':>7} {'stripes c/r':>11}  note"
    ]
    for s in table.summary():
        note = f"{s.unreached} at the codec's lowest quality (target below it)" if s.unreached else ""
        lines.append(
            f"{s.codec:<{width}} {s.point:<13} {s.images:>3} {s.bpp:>7.4f} {s.psnr:>6.2f} {s.ms_ssim:>7.4f} "
            + "".join(f"{metric_cell(getattr(s, m), m):>8} " for m in extra)
            + f"{s.encode_s:>7.2f} {s.decode_s:>7.2f} {_stripes(s):>11}  {note}".rstrip()
        )
    bd = bd_rates(table, anchor)
    if bd:
        lines.append("")
        lines.append(
            f"BD-rate against {anchor} (%, negative = fewer bits for the same quality; n/a = curves do not overlap in quality)"
        )
        for codec, values in bd.items():
            cells = ("n/a" if math.isnan(values[m]) else f"{values[m]:+.1f}" for m in BD_METRICS)
            lines.append(f"{codec:<{width}} " + "  ".join(f"{m}: {c:>8}" for m, c in zip(BD_METRICS, cells)))
    for failure in table.failures:
        lines.append(f"failed: {failure.image}: {failure.message}")
    return "\n".join(lines)


def format_markdown(table: EvalTable, anchor: str = ANCHOR) -> str:
    """The per-point means and BD-rates as Markdown tables (for READMEs and reports)."""
    extra = extra_metrics(table)
    lines = [
        "| codec | point | images | bpp | PSNR (dB) | MS-SSIM | "
        + "".join(f"{EXTRA_COLUMNS[m][0]} | " for m in extra)
        + "encode s | decode s | stripes columns / rows |",
        "| --- | --- | ---: | ---: | ---: | ---: | " + "---: | " * len(extra) + "---: | ---: | ---: |",
    ]
    for s in table.summary():
        floor = f" ({s.unreached} at floor)" if s.unreached else ""
        lines.append(
            f"| {s.codec} | {s.point} | {s.images}{floor} | {s.bpp:.4f} | {s.psnr:.2f} | {s.ms_ssim:.4f} | "
            + "".join(f"{metric_cell(getattr(s, m), m)} | " for m in extra)
            + f"{s.encode_s:.2f} | {s.decode_s:.2f} | {_stripes(s)} |"
        )
    bd = bd_rates(table, anchor)
    if bd:
        lines += ["", f"| codec | BD-rate vs {anchor}, PSNR | BD-rate vs {anchor}, MS-SSIM |", "| --- | ---: | ---: |"]
        for codec, values in bd.items():
            cells = " | ".join("n/a" if math.isnan(values[m]) else f"{values[m]:+.1f} %" for m in BD_METRICS)
            lines.append(f"| {codec} | {cells} |")
    return "\n".join(lines)


def write_report(table: EvalTable, out: str | Path, *, plots: bool = True, title: str = "") -> list[Path]:
    """Write per_image/per_point/bd_rate CSV+JSON, summary.txt/.md, (with ``plots``) the RD plots of every
    metric some row has, and report.html to ``out``."""
    from .html_report import write_html

    folder = Path(out)
    row_fields = [f.name for f in dataclasses.fields(Row)]
    point_fields = [f.name for f in dataclasses.fields(PointSummary)]
    written = _write_pair(folder, "per_image", [r.to_dict() for r in table.rows], row_fields)
    written += _write_pair(folder, "per_point", [s.to_dict() for s in table.summary()], point_fields)
    written += _write_pair(
        folder, "bd_rate", bd_records(table), ["codec", "anchor", *(f"bd_rate_{m}" for m in BD_METRICS)]
    )
    failures = [dataclasses.asdict(f) for f in table.failures]
    _write_atomic(folder / "failures.json", json.dumps(failures, indent=1).encode("utf-8"))
    _write_atomic(folder / "summary.txt", (format_summary(table) + "\n").encode("utf-8"))
    _write_atomic(folder / "summary.md", (format_markdown(table) + "\n").encode("utf-8"))
    written += [folder / "failures.json", folder / "summary.txt", folder / "summary.md"]
    if plots and table.rows:
        os.environ.setdefault("MPLBACKEND", "Agg")
        for metric, (name, _) in PLOTS.items():
            if metric in BD_METRICS or metric in extra_metrics(table):
                written.append(plot(table, metric, folder / name, title=title and f"{title}: {PLOTS[metric][1]}"))
    written.append(write_html(table, folder, title=title))
    return written
