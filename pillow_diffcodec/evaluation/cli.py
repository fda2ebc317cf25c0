"""``diffcodec eval DATASET``: rate-distortion of a diffusion codec against Pillow's classical codecs.

Registered through the ``diffcodec.commands`` entry point (``eval =
"pillow_diffcodec.evaluation.cli:register"``); torch, pytorch-msssim and matplotlib load only when the
command runs.

    diffcodec eval photos/ --bpp 0.05,0.1,0.2 --crop 256 --out results/
    diffcodec eval 's3://bucket/set/*.png' --quality 20,40,60 --param steps=50 --baselines jpeg,avif

Writes ``per_image``/``per_point``/``bd_rate`` CSV and JSON, ``summary.txt`` and ``rd_psnr.png`` /
``rd_ms_ssim.png`` to ``--out`` and prints the summary table. Rerunning with the same ``--out`` reuses
every finished row. Each problem is one line on stderr; exit status 1 when any image failed, 2 when the
evaluation cannot run as given.
"""

from __future__ import annotations

import argparse
import json
import sys
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
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _codec_params(codec: str, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs typed by the codec's own options (JSON for lists such as ``window=[999,500]``)."""
    from pillow_diffcodec.codecs import codec_by_name
    from pillow_diffcodec.errors import InvalidParameterError

    options = {option.name: option for option in codec_by_name(codec).options}
    params: dict[str, Any] = {}
    for name, value in pairs:
        name = name.replace("-", "_")
        if name not in options:
            raise InvalidParameterError(f"Unknown {codec} parameter {name!r}; expected some of {sorted(options)}")
        option = options[name]
        try:
            params[name] = json.loads(value) if option.nargs or value.startswith("[") else (option.type or str)(value)
        except (ValueError, json.JSONDecodeError):
            raise InvalidParameterError(
                f"Parameter {name}: cannot read {value!r} as {getattr(option.type, '__name__', 'text')}"
            ) from None
    return params


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the reports, print the summary; one line per problem."""
    from pillow_diffcodec.errors import DiffCodecError

    try:
        from .report import format_summary, write_report
        from .runner import evaluate
    except ImportError as exc:
        print(f"diffcodec eval: needs the eval extra ({exc}); pip install 'pillow-diffcodec[eval]'", file=sys.stderr)
        return 2
    try:
        params = _codec_params(args.codec, args.param or [])
        table = evaluate(
            args.dataset,
            codec=args.codec,
            model=args.model,
            bpp=args.bpp,
            quality=args.quality,
            params=params,
            baselines=args.baselines,
            crop=args.crop,
            limit=args.limit,
            out=args.out,
            seed=args.seed,
            device=args.device,
            progress=not args.no_progress,
        )
        written = write_report(table, args.out, plots=not args.no_plots)
    except (DiffCodecError, ValueError, OSError) as exc:
        print(f"diffcodec eval {args.dataset}: {exc}", file=sys.stderr)
        return 2
    print(format_summary(table))
    print(f"wrote {len(written)} files to {args.out}", file=sys.stderr)
    return 1 if table.failures else 0


def register(subparsers: Any) -> None:
    """Add ``eval`` to the diffcodec command line (cheap: nothing heavy is imported here)."""
    parser = subparsers.add_parser(
        "eval",
        help="rate-distortion evaluation against JPEG/WebP/AVIF/JPEG XL (plots, BD-rate)",
        description="Code every image of DATASET with a diffusion codec at each rate point and with classical "
        "codecs at the same bpp; write CSV/JSON per image and per point, BD-rates and RD plots.",
    )
    parser.add_argument("dataset", help="image folder, glob, file or fsspec URL")
    parser.add_argument("--codec", default="DDCM", help="diffusion codec (default: DDCM)")
    parser.add_argument("--model", default=None, help="model reference (default: the codec's built-in model)")
    rate = parser.add_mutually_exclusive_group(required=True)
    rate.add_argument("--bpp", type=_numbers, help="comma-separated target rates, e.g. 0.05,0.1,0.2")
    rate.add_argument("--quality", type=_numbers, help="comma-separated quality presets, e.g. 20,40,60")
    parser.add_argument(
        "--param",
        type=_param,
        action="append",
        metavar="NAME=VALUE",
        help="codec parameter fixed at every point, e.g. steps=50 (repeatable)",
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
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"local results folder (default: {DEFAULT_OUT}/)")
    parser.add_argument("--seed", type=int, default=0, help="codebook seed stored in the files (default: 0)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu, cuda (default: cpu)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
