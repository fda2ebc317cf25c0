"""Rate-distortion of the built-in model on Kodak (24 images, 768x512) against JPEG, WebP, AVIF and JPEG XL.

Runs :func:`pillow_diffcodec.evaluation.evaluate` (the engine of ``diffcodec eval``): for every image
and target rate, a DDCM file with ``bpp=`` (whole file, header included), decoded again and measured
(PSNR, MS-SSIM via pytorch-msssim, encode/decode seconds), and each Pillow baseline at that file's
bpp (quality searched; a target below a codec's lowest quality gives its floor, flagged). Writes the
per-image and per-point CSV/JSON, BD-rates against JPEG and the RD plots to ``--out``, and prints the
summary. Resumable: finished rows live in ``--out/rows.jsonl`` and a rerun continues after them;
``--report-only`` rebuilds the reports from the rows finished so far without computing anything.

    python benchmarks/kodak_rd.py                          # ../shared/data/kodak -> benchmarks/results/kodak
    python benchmarks/kodak_rd.py --bpp 0.05,0.2 --limit 4 --out /tmp/rd
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pillow_diffcodec.evaluation import evaluate, format_summary, load_results, write_report

REPO = Path(__file__).resolve().parents[1]
DEFAULT_KODAK = REPO.parent / "shared" / "data" / "kodak"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "kodak"
DEFAULT_RATES = "0.05,0.1,0.2,0.4,0.8"
TITLE = "Built-in DDCM model vs Pillow codecs on Kodak"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "kodak", nargs="?", type=Path, default=DEFAULT_KODAK, help=f"Kodak folder (default: {DEFAULT_KODAK})"
    )
    parser.add_argument("--bpp", default=DEFAULT_RATES, help=f"comma-separated target rates (default: {DEFAULT_RATES})")
    parser.add_argument("--model", default=None, help="model reference (default: the built-in model)")
    parser.add_argument("--baselines", default="jpeg,webp,avif,jxl")
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--device", default=None, help="where the model runs (default cpu), e.g. cuda")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--report-only", action="store_true", help="rebuild reports from the finished rows only")
    args = parser.parse_args()

    if args.report_only:
        table = load_results(args.out)
    else:
        if not args.kodak.is_dir():
            print(f"kodak_rd: no Kodak folder at {args.kodak}; pass its path as the first argument", file=sys.stderr)
            return 2
        rates = [float(value) for value in args.bpp.split(",") if value.strip()]
        table = evaluate(
            args.kodak / "kodim*.png",
            model=args.model,
            bpp=rates,
            limit=args.limit,
            baselines=[b for b in args.baselines.split(",") if b.strip()],
            out=args.out,
            device=args.device,
        )
    write_report(table, args.out, title=TITLE)
    print(format_summary(table))
    return 1 if table.failures else 0


if __name__ == "__main__":
    sys.exit(main())
