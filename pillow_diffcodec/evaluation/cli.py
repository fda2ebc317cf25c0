"""``diffcodec eval DATASET``: rate-distortion of diffusion codecs against Pillow's classical codecs.

Registered through the ``diffcodec.commands`` entry point (``eval =
"pillow_diffcodec.evaluation.cli:register"``); torch, pytorch-msssim and matplotlib load only when the
command runs.

    diffcodec eval photos/ --bpp 0.05,0.1,0.2 --crop 256 --out results/
    diffcodec eval photos/ --codec DDCM,CDC,PSC --model DDCM=builtin-latent --quality 25,75
    diffcodec eval 's3://bucket/set/*.png' --quality 20,40,60 --param steps=50 --baselines jpeg,avif
    diffcodec eval --suite quick -o /tmp/quick

Writes ``per_image``/``per_point``/``bd_rate`` CSV and JSON, ``summary.txt``/``.md``, an RD plot per
metric, the crops and ``report.html`` to ``--out`` and prints the summary table. Rerunning with the same
``--out`` reuses every finished row. Each problem is one line on stderr; exit status 1 when any image
failed, 2 when the evaluation cannot run as given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_OUT = "results"


def _numbers(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return values


def _names(text: str) -> list[str]:
    return [part.strip().lower() for part in text.split(",") if part.strip()]


def _param(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE or CODEC.NAME=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _typed(option: Any, value: str) -> Any:
    """``value`` read as ``option``'s type (JSON for lists such as ``window=[999,500]``)."""
    from pillow_diffcodec.errors import InvalidParameterError

    try:
        return json.loads(value) if option.nargs or value.startswith("[") else (option.type or str)(value)
    except (ValueError, json.JSONDecodeError):
        raise InvalidParameterError(
            f"Parameter {option.name}: cannot read {value!r} as {getattr(option.type, '__name__', 'text')}"
        ) from None


def _codec_params(codecs: list[str], pairs: list[tuple[str, str]]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``NAME=VALUE`` pairs (for every codec that has NAME) and ``CODEC.NAME=VALUE`` pairs (for that codec),
    typed by the codecs' own options: (shared parameters, parameters per codec)."""
    from pillow_diffcodec.codecs import codec_by_name
    from pillow_diffcodec.errors import InvalidParameterError

    options = {codec_by_name(codec).name: {o.name: o for o in codec_by_name(codec).options} for codec in codecs}
    shared: dict[str, Any] = {}
    own: dict[str, dict[str, Any]] = {}
    for key, value in pairs:
        codec, dot, name = key.rpartition(".")
        name = name.replace("-", "_")
        if dot:
            codec = codec_by_name(codec).name
            if codec not in options:
                raise InvalidParameterError(f"--param {key}: {codec} is not among the codecs {sorted(options)}")
            if name not in options[codec]:
                raise InvalidParameterError(
                    f"Unknown {codec} parameter {name!r}; expected some of {sorted(options[codec])}")
            own.setdefault(codec, {})[name] = _typed(options[codec][name], value)
            continue
        having = [known[name] for known in options.values() if name in known]
        if not having:
            every = sorted(set().union(*options.values()))
            raise InvalidParameterError(f"Unknown {'/'.join(options)} parameter {name!r}; expected some of {every}")
        shared[name] = _typed(having[0], value)
    return shared, own


def _models(codecs: list[str], given: list[str] | None) -> Any:
    """``--model`` values: one bare reference (for one codec), or ``CODEC=MODEL`` each (a codec may repeat)."""
    from pillow_diffcodec.codecs import CODECS_BY_NAME

    if not given:
        return None
    per_codec: dict[str, list[str]] = {}
    bare = []
    for text in given:
        codec, separator, reference = text.partition("=")
        if separator and codec.strip().upper() in CODECS_BY_NAME:
            per_codec.setdefault(codec.strip().upper(), []).append(reference.strip())
        else:
            bare.append(text)
    if bare and (per_codec or len(bare) > 1 or len(codecs) > 1):
        raise ValueError(f"--model {bare[0]}: with several codecs or models write CODEC=MODEL, e.g. DDCM={bare[0]}")
    if bare:
        return bare[0]
    return {codec: refs[0] if len(refs) == 1 else refs for codec, refs in per_codec.items()}


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the reports, print the summary; one line per problem."""
    from pillow_diffcodec.errors import DiffCodecError

    try:
        from .report import format_summary, write_report
        from .runner import evaluate
        from .suites import SUITES
    except ImportError as exc:
        print(f"diffcodec eval: needs the eval extra ({exc}); pip install 'pillow-diffcodec[eval]'", file=sys.stderr)
        return 2
    where = args.dataset or f"--suite {args.suite}"
    try:
        suite = SUITES[args.suite] if args.suite else None
        if suite is None and (not args.dataset or not (args.bpp or args.quality)):
            raise ValueError("give DATASET and --bpp or --quality, or a --suite (quick, kodak)")
        codecs = args.codec or (suite.codecs if suite else ["DDCM"])
        params, codec_params = _codec_params(codecs, args.param or [])
        if suite:
            codec_params = {**suite.codec_params, **codec_params}
        bpp, quality = args.bpp, args.quality
        if suite and not (bpp or quality):
            quality = list(suite.quality)
        table = evaluate(
            suite.dataset(args.dataset) if suite else args.dataset,
            codec=codecs,
            model=_models(codecs, args.model),
            bpp=bpp,
            quality=quality,
            params=params,
            codec_params={codec: values for codec, values in codec_params.items() if codec in codecs},
            baselines=args.baselines,
            crop=args.crop if args.crop is not None or not suite else suite.crop,
            limit=args.limit if args.limit is not None or not suite else suite.limit,
            out=args.out,
            seed=args.seed,
            device=args.device,
            progress=not args.no_progress,
            skip_unavailable=suite is not None,
        )
        written = write_report(table, args.out, plots=not args.no_plots, title=f"{suite.name} suite" if suite else "")
    except (DiffCodecError, ValueError, OSError) as exc:
        print(f"diffcodec eval {where}: {exc}", file=sys.stderr)
        return 2
    print(format_summary(table))
    print(f"wrote {len(written)} files to {args.out}; open {Path(args.out) / 'report.html'}", file=sys.stderr)
    return 1 if table.failures else 0


def register(subparsers: Any) -> None:
    """Add ``eval`` to the diffcodec command line (cheap: nothing heavy is imported here)."""
    parser = subparsers.add_parser(
        "eval",
        help="rate-distortion evaluation against JPEG/WebP/AVIF/JPEG XL (plots, BD-rate, HTML report)",
        description="Code every image of DATASET with diffusion codecs at each rate point and with classical "
        "codecs at about the same bpp; write CSV/JSON per image and per point, BD-rates, RD plots and "
        "report.html with crops of every decode.",
    )
    parser.add_argument(
        "dataset", nargs="?", help="image folder, glob, file or fsspec URL (with --suite kodak: the Kodak folder)"
    )
    parser.add_argument(
        "--suite",
        choices=["quick", "kodak"],
        help="ready-made run: quick (3 sample crops, quality 25/75, every codec; minutes on a CPU) or kodak "
        "(24 Kodak images, quality 0/25/50/75; folder DATASET or ../shared/data/kodak)",
    )
    parser.add_argument(
        "--codec", type=lambda text: [n.upper() for n in _names(text)],
        help="comma-separated diffusion codecs, e.g. DDCM,CDC,PSC (default: DDCM; with --suite: all)",
    )
    parser.add_argument(
        "--model", action="append", metavar="[CODEC=]MODEL",
        help="model reference, per codec as CODEC=MODEL, e.g. DDCM=builtin-latent (repeatable; a codec given "
        "twice runs with both models; default: each codec's built-in model)",
    )
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--bpp", type=_numbers, help="comma-separated target rates, e.g. 0.05,0.1,0.2")
    rate.add_argument("--quality", type=_numbers, help="comma-separated quality presets, e.g. 20,40,60")
    parser.add_argument(
        "--param",
        type=_param,
        action="append",
        metavar="[CODEC.]NAME=VALUE",
        help="codec parameter fixed at every point, e.g. steps=50 (every codec that has it) or PSC.iterations=4 "
        "(repeatable)",
    )
    parser.add_argument(
        "--baselines",
        type=_names,
        default=["jpeg", "webp", "avif", "jxl"],
        help="comma-separated classical codecs: jpeg, webp, avif, jxl (default: all; "
        "ones not installed are skipped with a note)",
    )
    parser.add_argument("--crop", type=int, help="centre square crop in pixels, e.g. 256")
    parser.add_argument("--limit", type=int, help="only the first N images (sorted by name)")
    parser.add_argument("-o", "--out", default=DEFAULT_OUT, help=f"local results folder (default: {DEFAULT_OUT}/)")
    parser.add_argument("--seed", type=int, default=0, help="codebook seed stored in the files (default: 0)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu, cuda (default: cpu)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
