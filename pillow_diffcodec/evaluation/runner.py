"""``evaluate()``: code every image of a dataset with a diffusion codec at several rate points and with
classical baselines at the same rates, and measure them (see :mod:`.metrics`, :mod:`.baselines`).

For every image (in sorted order) and every point (``bpp=`` targets or ``quality=`` presets): encode with
the diffusion codec (seeded: the codebook seed is stored in the file), decode the file again, measure
PSNR, MS-SSIM and both times; then code the image with each baseline at that file's bpp. With ``out``,
each finished row is appended to ``out/rows.jsonl`` at once and a rerun reuses every row whose key
``(image, codec, point)`` is there, so an interrupted run resumes where it stopped. A run refuses an
``out`` folder written with other settings (codec, model, parameters, crop, seed), which would mix results.
An image that cannot be read is reported and skipped; the others go on.
"""

from __future__ import annotations

import io
import json
import math
import posixpath
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import fsspec
from PIL import Image, UnidentifiedImageError

from pillow_diffcodec.errors import DiffCodecError
from pillow_diffcodec.inputs import expand

from . import metrics
from .baselines import DEFAULT_BASELINES, Baseline, baseline_by_name, encode_at_bpp
from .table import EvalTable, Failure, Row, append_journal, read_journal

CONFIG = "config.json"
SKIPPED_SUFFIXES = frozenset({".ddcm", ".json", ".md", ".txt", ".csv"})


class EvaluationError(DiffCodecError, ValueError):
    """An evaluation cannot run as asked (bad points, unknown baseline, an out folder of another run)."""


@dataclass(frozen=True)
class DatasetImage:
    """One image of the dataset: its name in the results (path below the dataset folder) and its URL."""

    name: str
    url: str


def list_images(dataset: str | Path) -> list[DatasetImage]:
    """Images of a folder (recursively), glob or single file, local or any fsspec URL, sorted by name."""
    Image.init()
    suffixes = frozenset(ext for ext in Image.registered_extensions() if ext not in SKIPPED_SUFFIXES)
    job = expand([str(dataset)], suffixes)
    if job.missing:
        raise EvaluationError(f"No images found at {dataset!s}")
    images = [DatasetImage(posixpath.relpath(source.path, source.base), source.url) for source, _ in job.pairs]
    return sorted(images, key=lambda item: item.name)


def center_crop(image: Image.Image, crop: int | None) -> Image.Image:
    """The central ``crop`` x ``crop`` square (each side capped at the image's), or the image itself."""
    if not crop:
        return image
    width, height = min(crop, image.width), min(crop, image.height)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def load_image(item: DatasetImage, crop: int | None = None) -> Image.Image:
    """Read, fully decode and convert to RGB (alpha dropped); any problem raises OSError/ValueError/SyntaxError."""
    with fsspec.open(item.url, "rb") as handle:
        data = handle.read()
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        return center_crop(opened.convert("RGB"), crop)


def _points(bpp: Sequence[float] | None, quality: Sequence[float] | None) -> list[tuple[str, dict[str, float]]]:
    if bpp and quality:
        raise EvaluationError("Give bpp points or quality points, not both")
    if not bpp and not quality:
        raise EvaluationError("Give at least one rate point (bpp=[...] or quality=[...])")
    if bpp:
        bad = [value for value in bpp if not value > 0]
        if bad:
            raise EvaluationError(f"Expected bpp points > 0, got {bad}")
        return [(f"bpp={value:g}", {"bpp": float(value)}) for value in bpp]
    bad = [value for value in quality or () if not 0 <= value <= 100]
    if bad:
        raise EvaluationError(f"Expected quality points in [0, 100], got {bad}")
    return [(f"quality={value:g}", {"quality": float(value)}) for value in quality or ()]


def _check_config(out: Path, config: dict[str, Any]) -> None:
    path = out / CONFIG
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            previous = None
        if previous != config:
            raise EvaluationError(
                f"{out} holds results of other settings ({previous}); use another out folder or delete it "
                f"to evaluate {config}"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    temporary.replace(path)


def _measure(original: Image.Image, decoded: Image.Image, with_lpips: bool) -> dict[str, Any]:
    stripes = metrics.stripe_ratios(original, decoded)
    values: dict[str, Any] = {
        "psnr": metrics.psnr(original, decoded),
        "ms_ssim": metrics.ms_ssim(original, decoded),
        "stripes_columns": stripes["columns"],
        "stripes_rows": stripes["rows"],
    }
    if with_lpips:
        values["lpips"] = metrics.lpips_distance(original, decoded)
    return values


def evaluate(
    dataset: str | Path,
    *,
    codec: str = "DDCM",
    model: Any = None,
    bpp: Sequence[float] | None = None,
    quality: Sequence[float] | None = None,
    params: dict[str, Any] | None = None,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    crop: int | None = None,
    limit: int | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    device: Any = None,
    progress: bool = True,
    log: TextIO | None = None,
    on_row: Callable[[Row], None] | None = None,
) -> EvalTable:
    """Evaluate ``codec`` on the images of ``dataset`` at the given points against ``baselines``.

    ``dataset``: folder, glob, file or fsspec URL. ``model``: a model reference or object (default:
    the codec's default model, e.g. 'builtin' for DDCM, 'builtin-cdc' for CDC). ``params``: the codec's own parameters (e.g. ``steps``), fixed at every point.
    ``baselines``: names from :data:`.baselines.BASELINES`; ones not installed are skipped with a note.
    ``crop``: centre square crop in pixels. ``limit``: the first N images. ``out``: a local folder for
    the journal (resumable runs); reports are written by :func:`.report.write_report`. Problems with one
    image go to ``log`` (default stderr) as one line and into ``table.failures``.
    """
    import pillow_diffcodec as pdc
    from pillow_diffcodec.codecs import codec_by_name
    from pillow_diffcodec.models import load_model
    from pillow_diffcodec.options import check_known

    log = sys.stderr if log is None else log
    entry = codec_by_name(codec)
    params = dict(params or {})
    check_known(params, entry.options, entry.name)
    points = _points(bpp, quality)
    chosen: list[Baseline] = []
    table = EvalTable(codecs=[entry.name], points=[label for label, _ in points])
    for name in baselines:
        baseline = baseline_by_name(name)
        if baseline.available():
            chosen.append(baseline)
            table.codecs.append(baseline.name)
        else:
            table.notes.append(f"baseline {baseline.name} skipped: not available here ({baseline.requirement})")
    with_lpips = metrics.lpips_available()
    table.notes.append(metrics.perceptual_note())
    for note in table.notes:
        print(f"note: {note}", file=log)

    images = list_images(dataset)[: limit if limit is not None and limit >= 0 else None]
    folder = Path(out) if out is not None else None
    done: dict = {}
    if folder is not None:
        model_ref = model if model is None or isinstance(model, (str, Path)) else getattr(model, "name", repr(model))
        config = {
            "codec": entry.name,
            "model": None if model_ref is None else str(model_ref),
            "params": params,
            "crop": crop,
            "seed": seed,
        }
        _check_config(folder, config)
        done = read_journal(folder)
    loaded = load_model(entry.model_or_default(model), device=device)  # before the loop: one error, not one per image

    def finish(row: Row) -> None:
        table.rows.append(row)
        if folder is not None and row.key not in done:
            append_journal(folder, row)
        if on_row is not None:
            on_row(row)

    from tqdm import tqdm

    bar = tqdm(total=len(images) * len(points), unit="point", disable=not progress, dynamic_ncols=True, file=log)
    try:
        for item in images:
            bar.set_postfix_str(item.name)
            keys = [(item.name, c, label) for label, _ in points for c in table.codecs]
            if all(key in done for key in keys):  # finished in an earlier run: no need to read the image
                table.rows.extend(done[key] for key in keys)
                bar.update(len(points))
                continue
            try:
                original = load_image(item, crop)
            except UnidentifiedImageError:
                message = "cannot read image: not a format Pillow recognises (corrupt or not an image)"
            except (OSError, ValueError, SyntaxError, DiffCodecError) as exc:
                message = f"cannot read image: {exc}"
            else:
                message = ""
            if message:
                table.failures.append(Failure(item.name, message))
                print(f"{item.name}: {message}; skipped", file=log)
                bar.update(len(points))
                continue
            width, height = original.size
            for label, rate in points:
                try:
                    key = (item.name, entry.name, label)
                    if key in done:
                        row = done[key]
                        table.rows.append(row)
                    else:
                        start = time.perf_counter()
                        result = pdc.encode_images(
                            [original], codec=entry.name, model=loaded, seed=seed, device=device, **rate, **params
                        )[0]
                        encode_s = time.perf_counter() - start
                        start = time.perf_counter()
                        decoded = pdc.decode(result.data, model=loaded, device=device).convert("RGB")
                        decode_s = time.perf_counter() - start
                        row = Row(
                            item.name,
                            entry.name,
                            label,
                            rate.get("bpp"),
                            result.bpp,
                            encode_s=encode_s,
                            decode_s=decode_s,
                            setting=json.dumps(pdc.info(result.data)["params"], sort_keys=True),
                            width=width,
                            height=height,
                            **_measure(original, decoded, with_lpips),
                        )
                        finish(row)
                    for baseline in chosen:
                        key = (item.name, baseline.name, label)
                        if key in done:
                            table.rows.append(done[key])
                            continue
                        coded = encode_at_bpp(original, baseline, row.bpp)
                        finish(
                            Row(
                                item.name,
                                baseline.name,
                                label,
                                row.bpp,
                                coded.bpp,
                                encode_s=coded.encode_seconds,
                                decode_s=coded.decode_seconds,
                                setting=f"quality={coded.quality}",
                                reached=coded.reached,
                                width=width,
                                height=height,
                                **_measure(original, coded.reconstruction, with_lpips),
                            )
                        )
                except (DiffCodecError, OSError, ValueError) as exc:
                    message = f"{label}: {exc}"
                    table.failures.append(Failure(item.name, message))
                    print(f"{item.name}: {message}; skipped", file=log)
                bar.update(1)
    finally:
        bar.close()
    return table


def _point_order(label: str) -> tuple[str, float]:
    kind, _, value = label.partition("=")
    try:
        return kind, float(value)
    except ValueError:
        return kind, math.inf


def load_results(out: str | Path) -> EvalTable:
    """The table of the rows finished so far in ``out`` (no image is read, nothing is computed)."""
    from .baselines import BASELINES

    folder = Path(out)
    if not (folder / CONFIG).is_file():
        raise EvaluationError(f"{folder} holds no evaluation (no {CONFIG})")
    config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    rows = list(read_journal(folder).values())
    points = sorted({row.point for row in rows}, key=_point_order)
    table = EvalTable(
        rows=sorted(rows, key=lambda r: (r.image, _point_order(r.point))),
        codecs=[config["codec"], *(b.name for b in BASELINES.values())],
        points=points,
    )
    return table
