"""``evaluate()``: code every image of a dataset with one or more diffusion codecs (each with one or
more models) at several rate points and with classical baselines at about the same rates, and measure
them (see :mod:`.metrics`, :mod:`.baselines`).

For every image (in sorted order) and every point (``bpp=`` targets or ``quality=`` presets): encode with
each codec (seeded: the codebook seed is stored in the file), decode the file again and measure the
decode as a user gets it (the source's mode and size) and both times; then code the image once with each
baseline at the median bpp of those files. With ``out``, each finished row is appended to
``out/rows.jsonl`` at once (its decode's crop to ``out/crops/``, :mod:`.crops`) and a rerun reuses every
row whose key ``(image, codec, model, point)`` is there, so an interrupted run resumes where it stopped.
A run refuses an ``out`` folder written with other settings (codecs, models, parameters, crop, seed),
which would mix results. An image that cannot be read is reported and skipped; the others go on.
"""

from __future__ import annotations

import io
import json
import math
import posixpath
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import fsspec
from PIL import Image, UnidentifiedImageError

from pillow_diffcodec.errors import DiffCodecError, InvalidParameterError
from pillow_diffcodec.inputs import expand

from . import metrics
from .baselines import DEFAULT_BASELINES, Baseline, baseline_by_name, encode_at_bpp
from .crops import crop_path, original_path, save_crop
from .iqa import VIF_MIN_SIDE
from .table import EvalTable, Failure, Row, append_journal, read_journal

CONFIG = "config.json"
SKIPPED_SUFFIXES = frozenset({".ddcm", ".json", ".md", ".txt", ".csv", ".html"})
GREY_MODES = frozenset({"1", "L", "LA", "La"})


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
    """Read and fully decode, as L for a grey source and RGB otherwise (alpha dropped); any problem raises
    OSError/ValueError/SyntaxError."""
    with fsspec.open(item.url, "rb") as handle:
        data = handle.read()
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        return center_crop(opened.convert("L" if opened.mode in GREY_MODES else "RGB"), crop)


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


def _measure(original: Image.Image, decoded: Image.Image, with_lpips: bool, with_dists: bool) -> dict[str, Any]:
    """Every metric of ``decoded`` (as decoded: mode and size of the source) against ``original``."""
    stripes = metrics.stripe_ratios(original, decoded)
    values: dict[str, Any] = {
        "psnr": metrics.psnr(original, decoded),
        "ms_ssim": metrics.ms_ssim(original, decoded),
        "stripes_columns": stripes["columns"],
        "stripes_rows": stripes["rows"],
        "gmsd": metrics.gmsd(original, decoded),
        "haarpsi": metrics.haarpsi(original, decoded),
    }
    if min(original.size) >= VIF_MIN_SIDE:  # smaller images: VIF is undefined, the row keeps None
        values["vif"] = metrics.vif(original, decoded)
    if with_lpips:
        values["lpips"] = metrics.lpips_distance(original, decoded)
    if with_dists:
        values["dists"] = metrics.dists_distance(original, decoded)
    return values


@dataclass(frozen=True)
class Contender:
    """One diffusion codec with one model in a run. ``label`` names its rows: the codec's name, or
    ``CODEC:model`` when the run codes that codec with several models."""

    codec: str
    model: Any  # as given: a reference, a loaded model, or None for the codec's default
    reference: str  # the model's name in rows and config (the default's name when none was given)
    label: str
    params: dict[str, Any]

    @property
    def model_or_reference(self) -> Any:
        """What to load: the model as given, or the codec's default by name."""
        return self.reference if self.model is None else self.model


def _reference(model: Any) -> str:
    return str(model) if isinstance(model, (str, Path)) else str(getattr(model, "name", repr(model)))


def contenders(
    codec: str | Sequence[str],
    model: Any = None,
    params: Mapping[str, Any] | None = None,
    codec_params: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Contender]:
    """The (codec, model) pairs of a run. ``codec``: a name, "DDCM,CDC" or a list. ``model``: None (each
    codec's default), one reference (for one codec) or ``{codec: reference or [references]}``.
    ``params`` apply to every codec that has the option (an option no codec has is an error);
    ``codec_params`` to the one codec named."""
    from pillow_diffcodec.codecs import codec_by_name
    from pillow_diffcodec.options import check_known

    names = [part.strip() for part in codec.split(",")] if isinstance(codec, str) else list(codec)
    entries = list({entry.name: entry for entry in map(codec_by_name, filter(None, names))}.values())
    if not entries:
        raise EvaluationError("Give at least one codec")
    if isinstance(model, Mapping):
        chosen = {codec_by_name(name).name: value for name, value in model.items()}
        strays = sorted(set(chosen) - {entry.name for entry in entries})
        if strays:
            raise EvaluationError(f"A model is given for {', '.join(strays)}, which this run does not code")
    elif model is not None and len(entries) > 1:
        raise EvaluationError("With several codecs give the models per codec, e.g. {'DDCM': 'builtin-latent'}")
    else:
        chosen = {entries[0].name: model} if model is not None else {}
    params = dict(params or {})
    per_codec = {codec_by_name(name).name: dict(values) for name, values in (codec_params or {}).items()}
    known = {entry.name: {option.name for option in entry.options} for entry in entries}
    unknown = sorted(name for name in params if not any(name in options for options in known.values()))
    if unknown:
        what = "/".join(known)
        raise InvalidParameterError(
            f"Unknown {what} parameter {unknown[0]!r}; expected some of {sorted(set().union(*known.values()))}"
        )
    result = []
    for entry in entries:
        given = chosen.get(entry.name)
        models = list(given) if isinstance(given, (list, tuple)) else [given]
        own = {name: value for name, value in params.items() if name in known[entry.name]}
        own.update(per_codec.pop(entry.name, {}))
        check_known(own, entry.options, entry.name)
        for item in models:
            reference = _reference(entry.model_or_default(item))
            short = Path(reference).name if "/" in reference else reference
            label = f"{entry.name}:{short}" if len(models) > 1 else entry.name
            result.append(Contender(entry.name, item, reference, label, own))
    if per_codec:
        raise EvaluationError(f"Parameters are given for {', '.join(per_codec)}, which this run does not code")
    return result


def _config(runs: list[Contender], crop: int | None, seed: int) -> dict[str, Any]:
    """The settings an out folder holds; one codec keeps the layout of single-codec runs (older folders resume)."""
    if len(runs) == 1:
        run = runs[0]
        model = None if run.model is None else run.reference
        return {"codec": run.codec, "model": model, "params": run.params, "crop": crop, "seed": seed}
    codecs = [{"codec": run.codec, "model": run.reference, "label": run.label, "params": run.params} for run in runs]
    return {"codecs": codecs, "crop": crop, "seed": seed}


def evaluate(
    dataset: str | Path,
    *,
    codec: str | Sequence[str] = "DDCM",
    model: Any = None,
    bpp: Sequence[float] | None = None,
    quality: Sequence[float] | None = None,
    params: Mapping[str, Any] | None = None,
    codec_params: Mapping[str, Mapping[str, Any]] | None = None,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    crop: int | None = None,
    limit: int | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    device: Any = None,
    progress: bool = True,
    skip_unavailable: bool = False,
    log: TextIO | None = None,
    on_row: Callable[[Row], None] | None = None,
) -> EvalTable:
    """Evaluate diffusion codecs on the images of ``dataset`` at the given points against ``baselines``.

    ``dataset``: folder, glob, file or fsspec URL. ``codec``, ``model``, ``params``, ``codec_params``: the
    codecs and their models and parameters (:func:`contenders`; default models: 'builtin' for DDCM and
    PSC, 'builtin-cdc' for CDC). ``baselines``: names from :data:`.baselines.BASELINES`, coded once per
    image and point at the median rate of the codecs' files; ones not installed are skipped with a note.
    ``crop``: centre square crop in pixels. ``limit``: the first N images. ``out``: a local folder for
    the journal (resumable runs) and the crops of the HTML report; reports are written by
    :func:`.report.write_report`. ``skip_unavailable``: a codec whose model does not load is left out
    with a note instead of stopping the run. Problems with one image go to ``log`` (default stderr) as
    one line and into ``table.failures``.
    """
    from pillow_diffcodec.models import load_model

    log = sys.stderr if log is None else log
    runs = contenders(codec, model, params, codec_params)
    points = _points(bpp, quality)
    table = EvalTable(points=[label for label, _ in points])
    loaded: dict[str, Any] = {}
    for run in runs:  # before the loop: one error, not one per image
        try:
            loaded[run.label] = load_model(run.model_or_reference, device=device)
        except (DiffCodecError, OSError) as exc:
            if not skip_unavailable:
                raise
            table.notes.append(f"{run.label} skipped: its model {run.reference} does not load ({exc})")
    runs = [run for run in runs if run.label in loaded]
    if not runs:
        raise EvaluationError("No codec of this run has a model that loads")
    table.codecs = [run.label for run in runs]
    chosen: list[Baseline] = []
    for name in baselines:
        baseline = baseline_by_name(name)
        if baseline.available():
            chosen.append(baseline)
            table.codecs.append(baseline.name)
        else:
            table.notes.append(f"baseline {baseline.name} skipped: not available here ({baseline.requirement})")
    with_lpips, with_dists = metrics.lpips_available(), metrics.dists_available()
    table.notes.append(metrics.perceptual_note())
    for note in table.notes:
        print(f"note: {note}", file=log)

    images = list_images(dataset)[: limit if limit is not None and limit >= 0 else None]
    folder = Path(out) if out is not None else None
    done: dict = {}
    if folder is not None:
        _check_config(folder, _config(runs, crop, seed))
        done = read_journal(folder)
        if len(runs) == 1:  # single-codec journals written before rows named their model
            done.update({(i, c, runs[0].reference, p): replace(r, model=runs[0].reference)
                         for (i, c, m, p), r in list(done.items()) if c == runs[0].label and not m})

    def finish(row: Row, decoded: Image.Image) -> None:
        table.rows.append(row)
        if folder is not None and row.key not in done:
            save_crop(decoded, crop_path(folder, row.image, row.point, row.codec))
            append_journal(folder, row)
        if on_row is not None:
            on_row(row)

    from tqdm import tqdm

    bar = tqdm(total=len(images) * len(points) * len(runs), unit="file", disable=not progress, file=log,
               dynamic_ncols=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}")
    try:
        for item in images:
            bar.set_postfix_str(item.name)
            keys = [(item.name, run.label, run.reference, label) for label, _ in points for run in runs]
            keys += [(item.name, b.name, "", label) for label, _ in points for b in chosen]
            if all(key in done for key in keys):  # finished in an earlier run: no need to read the image
                table.rows.extend(done[key] for key in keys)
                bar.update(len(points) * len(runs))
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
                bar.update(len(points) * len(runs))
                continue
            if folder is not None:
                save_crop(original, original_path(folder, item.name))
            for label, rate in points:
                rates = []
                for run in runs:
                    bar.set_postfix_str(f"{item.name} {run.label} {label}")
                    try:
                        key = (item.name, run.label, run.reference, label)
                        if key in done:
                            table.rows.append(done[key])
                        else:
                            finish(*_code(item.name, original, run, loaded[run.label], label, rate, seed, device,
                                          (with_lpips, with_dists)))
                        rates.append(table.rows[-1].bpp)
                    except (DiffCodecError, OSError, ValueError) as exc:
                        _fail(table, item.name, f"{run.label} {label}: {exc}", log)
                    bar.update(1)
                if not rates:
                    continue
                target = statistics.median(rates)
                for baseline in chosen:
                    key = (item.name, baseline.name, "", label)
                    try:
                        if key in done:
                            table.rows.append(done[key])
                            continue
                        coded = encode_at_bpp(original, baseline, target)
                        row = Row(
                            item.name,
                            baseline.name,
                            label,
                            target,
                            coded.bpp,
                            encode_s=coded.encode_seconds,
                            decode_s=coded.decode_seconds,
                            setting=f"quality={coded.quality}",
                            reached=coded.reached,
                            width=original.width,
                            height=original.height,
                            **_measure(original, coded.reconstruction, with_lpips, with_dists),
                        )
                        finish(row, coded.reconstruction)
                    except (DiffCodecError, OSError, ValueError) as exc:
                        _fail(table, item.name, f"{baseline.name} {label}: {exc}", log)
    finally:
        bar.close()
    return table


def _fail(table: EvalTable, image: str, message: str, log: TextIO) -> None:
    table.failures.append(Failure(image, message))
    print(f"{image}: {message}; skipped", file=log)


def _code(
    image: str,
    original: Image.Image,
    run: Contender,
    model: Any,
    label: str,
    rate: dict[str, float],
    seed: int,
    device: Any,
    optional: tuple[bool, bool],
) -> tuple[Row, Image.Image]:
    """Encode ``original`` with ``run`` at one point, decode the file again, measure: the row and the decode."""
    import pillow_diffcodec as pdc

    start = time.perf_counter()
    result = pdc.encode_images([original], codec=run.codec, model=model, seed=seed, device=device,
                               **rate, **run.params)[0]
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = pdc.decode(result.data, model=model, device=device)
    decode_s = time.perf_counter() - start
    row = Row(
        image,
        run.label,
        label,
        rate.get("bpp"),
        result.bpp,
        encode_s=encode_s,
        decode_s=decode_s,
        setting=json.dumps(pdc.info(result.data)["params"], sort_keys=True),
        width=original.width,
        height=original.height,
        model=run.reference,
        **_measure(original, decoded, *optional),
    )
    return row, decoded


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
    series = [run["label"] for run in config["codecs"]] if "codecs" in config else [config["codec"]]
    rows = list(read_journal(folder).values())
    points = sorted({row.point for row in rows}, key=_point_order)
    table = EvalTable(
        rows=sorted(rows, key=lambda r: (r.image, _point_order(r.point))),
        codecs=[*series, *(b.name for b in BASELINES.values())],
        points=points,
    )
    return table
