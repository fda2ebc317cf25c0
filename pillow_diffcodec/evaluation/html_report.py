"""``report.html``: one static page of an evaluation that opens from disk (nothing is fetched).

It shows the RD plots (the PNGs :mod:`.report` writes beside it), the per-point table with BD-rates, and
per image and rate point a strip of crops: the original, then each codec's decode and each baseline's
at about the same bytes (:mod:`.crops`), with bpp and metrics under each. The zoom buttons scale every
crop (nearest neighbour, so coding artefacts stay visible); clicking a crop zooms its strip alone.
Styles and the few lines of script are inline. Crops a run did not write (an older journal) show as
"no crop"; the page links no file that does not exist.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from urllib.parse import quote

from .bdrate import ANCHOR, BD_METRICS, bd_rates
from .crops import crop_path, original_path
from .report import EXTRA_COLUMNS, PLOTS, _write_atomic, extra_metrics, metric_cell
from .table import EvalTable, Row

PAGE = "report.html"
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th:first-child, td:first-child, td:nth-child(2) { text-align: left; }
.plots img { max-width: 48%; margin: 0 1% 1em 0; }
.strip { display: flex; gap: 10px; overflow-x: auto; padding-bottom: 6px; align-items: flex-start; }
.strip figure { margin: 0; flex: none; }
.strip img { image-rendering: pixelated; cursor: zoom-in; display: block; border: 1px solid #999; }
.strip figcaption { font-size: 12px; max-width: 220px; }
.missing { border: 1px dashed #999; padding: 2em 1em; color: #777; }
.zoom button.on { font-weight: bold; }
"""
SCRIPT = """
function zoomImages(images, factor) {
  for (const img of images) { img.style.width = (img.naturalWidth * factor) + "px"; }
}
function zoomAll(factor) {
  zoomImages(document.querySelectorAll(".strip img"), factor);
  document.querySelectorAll(".zoom button").forEach(b => b.classList.toggle("on", b.dataset.z == factor));
}
document.addEventListener("click", event => {
  const target = event.target;
  if (target.matches(".zoom button")) { zoomAll(Number(target.dataset.z)); }
  if (target.matches(".strip img")) {
    const strip = target.closest(".strip");
    const next = strip.dataset.z == "4" ? 1 : 4;
    strip.dataset.z = next;
    zoomImages(strip.querySelectorAll("img"), next);
  }
});
window.addEventListener("load", () => zoomAll(2));
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _src(path: Path, folder: Path) -> str:
    return quote(path.relative_to(folder).as_posix())


def _number(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else ("inf" if value > 0 else "n/a")


def _caption(row: Row, extra: list[str]) -> str:
    parts = [f"{row.bpp:.3f} bpp", f"PSNR {_number(row.psnr, 2)}", f"MS-SSIM {row.ms_ssim:.3f}"]
    parts += [f"{EXTRA_COLUMNS[m][0]} {metric_cell(getattr(row, m), m)}" for m in extra]
    if row.setting.startswith("quality="):
        parts.append(row.setting + ("" if row.reached else " (its floor: above the target)"))
    return " · ".join(parts)


def _figure(folder: Path, path: Path, name: str, caption: str) -> str:
    picture = (
        f'<img src="{_src(path, folder)}" alt="{_e(name)}">' if path.is_file() else '<div class="missing">no crop</div>'
    )
    return f"<figure>{picture}<figcaption><b>{_e(name)}</b><br>{_e(caption)}</figcaption></figure>"


def _summary_table(table: EvalTable, extra: list[str]) -> list[str]:
    head = ["codec", "point", "images", "bpp", "PSNR dB", "MS-SSIM", *(EXTRA_COLUMNS[m][0] for m in extra)]
    head += ["encode s", "decode s"]
    lines = ["<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for s in table.summary():
        cells = [s.codec, s.point, s.images, f"{s.bpp:.4f}", _number(s.psnr, 2), f"{s.ms_ssim:.4f}"]
        cells += [metric_cell(getattr(s, m), m) for m in extra] + [f"{s.encode_s:.2f}", f"{s.decode_s:.2f}"]
        lines.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    lines.append("</table>")
    bd = bd_rates(table, ANCHOR)
    if bd:
        lines.append(f"<p>BD-rate against {ANCHOR} (%, negative = fewer bits for the same quality):</p><table>")
        lines.append("<tr><th>codec</th>" + "".join(f"<th>{m}</th>" for m in BD_METRICS) + "</tr>")
        for codec, values in bd.items():
            cells = ("n/a" if math.isnan(values[m]) else f"{values[m]:+.1f}" for m in BD_METRICS)
            lines.append(f"<tr><td>{_e(codec)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        lines.append("</table>")
    return lines


def _strips(table: EvalTable, folder: Path, extra: list[str]) -> list[str]:
    by_key = {(row.image, row.codec, row.point): row for row in table.rows}
    lines = []
    for image in dict.fromkeys(row.image for row in table.rows):
        lines.append(f"<h3>{_e(image)}</h3>")
        for point in table.point_names():
            rows = [by_key[(image, c, point)] for c in table.codec_names() if (image, c, point) in by_key]
            if not rows:
                continue
            size = f"{rows[0].width}x{rows[0].height}"
            figures = [_figure(folder, original_path(folder, image), "original", size)]
            figures += [
                _figure(folder, crop_path(folder, image, row.point, row.codec), row.codec, _caption(row, extra))
                for row in rows
            ]
            lines.append(f"<h4>{_e(point)}</h4><div class=\"strip\">{''.join(figures)}</div>")
    return lines


def write_html(table: EvalTable, out: str | Path, title: str = "") -> Path:
    """Write ``out/report.html`` for ``table`` (plots and crops already in ``out``) and return its path."""
    folder = Path(out)
    extra = extra_metrics(table)
    heading = title or "Rate-distortion evaluation"
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(heading)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(heading)}</h1>",
    ]
    lines += [f"<p>note: {_e(note)}</p>" for note in table.notes]
    lines += [f"<p>failed: {_e(f.image)}: {_e(f.message)}</p>" for f in table.failures]
    plots = [(folder / name, label) for name, label in PLOTS.values() if (folder / name).is_file()]
    if plots:
        lines.append('<h2>Rate-distortion</h2><div class="plots">')
        lines += [f'<img src="{_src(path, folder)}" alt="{_e(label)}">' for path, label in plots]
        lines.append("</div>")
    lines.append("<h2>Means per codec and point</h2>")
    lines += _summary_table(table, extra)
    lines.append('<h2>Crops</h2><p class="zoom">Zoom: ')
    lines += [f'<button data-z="{z}">{z}x</button>' for z in (1, 2, 4, 8)]
    lines.append(" (click a crop to zoom its strip)</p>")
    lines += _strips(table, folder, extra)
    lines.append(f"<script>{SCRIPT}</script></body></html>")
    path = folder / PAGE
    _write_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return path
