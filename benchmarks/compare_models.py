"""Side by side: two evaluation runs (``kodak_rd.py`` / ``diffcodec eval`` out folders) of the same codec with
different models, over the (image, point) rows both have finished, with JPEG at the second run's rates.

    python benchmarks/compare_models.py benchmarks/results/kodak-v1 benchmarks/results/kodak

Prints one Markdown row per point: images compared, then bpp / PSNR dB / MS-SSIM / encode s / decode s of
each run (means), the PSNR gain of the second run (mean and smallest per image), and JPEG's bpp / PSNR /
MS-SSIM at the second run's files' rates (rows of that run's baselines, when present).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from pillow_diffcodec.evaluation import load_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()
    first, second = load_results(args.first), load_results(args.second)
    codec = first.codecs[0]
    rows_a = {(r.image, r.point): r for r in first.rows if r.codec == codec}
    rows_b = {(r.image, r.point): r for r in second.rows if r.codec == codec}
    jpeg = {(r.image, r.point): r for r in second.rows if r.codec == "JPEG"}
    print(f"| point | images | {args.first.name}: bpp / PSNR / MS-SSIM / enc s / dec s | {args.second.name}: same "
          "| PSNR gain (mean, smallest) | JPEG at the second's rates |")
    print("| --- | ---: | --- | --- | --- | --- |")
    for point in [p for p in second.points if p in first.points]:  # load_results orders them by rate
        keys = sorted(k for k in rows_a if k[1] == point and k in rows_b)

        def cell(rows: dict, keys: list = keys) -> str:
            mean = lambda name: statistics.mean(getattr(rows[k], name) for k in keys)
            return " / ".join(
                [f"{mean('bpp'):.3f}", f"{mean('psnr'):.2f}", f"{mean('ms_ssim'):.3f}", f"{mean('encode_s'):.1f}",
                 f"{mean('decode_s'):.2f}"])

        gains = [rows_b[k].psnr - rows_a[k].psnr for k in keys]
        with_jpeg = [k for k in keys if k in jpeg]
        reference = " / ".join(cell(jpeg, with_jpeg).split(" / ")[:3]) if with_jpeg else "n/a"
        print(f"| {point} | {len(keys)} | {cell(rows_a)} | {cell(rows_b)} | "
              f"{statistics.mean(gains):+.2f} dB, {min(gains):+.2f} dB | {reference} |")


if __name__ == "__main__":
    main()
