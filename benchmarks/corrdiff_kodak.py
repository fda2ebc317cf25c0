"""CorrDiff on Kodak: corrected (Algorithm 2), e2e-only (D(y_hat)) and correction-off (plain conditional DDIM)
decodes of the same files, beside CDC at the same rate point and JPEG at each CorrDiff file's bpp.

For every image and rate point: one CORRDIFF file (seed 0, 8 steps), decoded three ways; one CDC file
(its encoder's reconstruction is what a default decode gives, bit for bit, so it is not decoded again);
JPEG (Pillow, quality searched) at the CorrDiff file's whole-file bpp. Prints one row per image and
codec and the means per rate point; one torch thread (the codecs pin it).

    python benchmarks/corrdiff_kodak.py --limit 4 > benchmarks/results/corrdiff_kodak.txt
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec.evaluation.baselines import baseline_by_name, encode_at_bpp
from pillow_diffcodec.evaluation.metrics import ms_ssim, psnr
from pillow_diffcodec.models import load_model

REPO = Path(__file__).resolve().parents[1]
KODAK = REPO.parent / "shared" / "data" / "kodak"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kodak", nargs="?", type=Path, default=KODAK)
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--model", default="builtin-corrdiff")
    parser.add_argument("--cdc-model", default="builtin-cdc")
    parser.add_argument("--crop", type=int, help="centre crop side (default: whole images)")
    args = parser.parse_args()
    model, cdc_model = load_model(args.model), load_model(args.cdc_model)
    paths = sorted(args.kodak.glob("kodim*.png"))[: args.limit]
    rows: list[tuple[str, str, str, float, float, float, float, float]] = []
    print(f"# {' '.join(sys.argv)}\n# model {args.model}, CDC model {args.cdc_model}, {len(paths)} images")
    print(f"{'image':<12} {'rate':<5} {'codec':<20} {'bpp':>7} {'PSNR':>7} {'MS-SSIM':>8} {'enc s':>7} {'dec s':>7}")
    for path in paths:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        if args.crop:
            w, h = image.size
            image = image.crop(((w - args.crop) // 2, (h - args.crop) // 2, (w + args.crop) // 2, (h + args.crop) // 2))
        pixels = image.width * image.height
        for point, rate in enumerate(p.name for p in model.rate_points):
            def row(codec: str, decoded: Image.Image, size: int, enc: float, dec: float) -> None:
                rows.append((path.stem, rate, codec, 8 * size / pixels, psnr(image, decoded), ms_ssim(image, decoded),
                             enc, dec))
                print(f"{path.stem:<12} {rate:<5} {codec:<20} {rows[-1][3]:7.4f} {rows[-1][4]:7.2f} {rows[-1][5]:8.4f} "
                      f"{enc:7.1f} {dec:7.1f}", flush=True)

            start = time.perf_counter()
            result = pdc.encode_images([image], codec="CORRDIFF", model=model, rate_point=point, seed=0)[0]
            enc = time.perf_counter() - start
            for codec, options in (("CorrDiff corrected", {}), ("CorrDiff e2e (D)", {"e2e": True}),
                                   ("CorrDiff corr. off", {"correction": False})):
                start = time.perf_counter()
                decoded = pdc.decode(result.data, model=model, **options)
                dec = time.perf_counter() - start
                if not options:
                    assert np.array_equal(np.asarray(decoded), np.asarray(result.reconstruction))
                row(codec, decoded, len(result.data), enc, dec)
            start = time.perf_counter()
            cdc = pdc.encode_images([image], codec="CDC", model=cdc_model, rate_point=point, seed=0)[0]
            row("CDC (17 steps)", cdc.reconstruction, len(cdc.data), time.perf_counter() - start, float("nan"))
            start = time.perf_counter()
            jpeg = encode_at_bpp(image, baseline_by_name("jpeg"), 8 * len(result.data) / pixels)
            row("JPEG @ CorrDiff bpp", jpeg.reconstruction, len(jpeg.data), jpeg.encode_seconds, jpeg.decode_seconds)
    print("\n# means per rate point")
    for rate in dict.fromkeys(r[1] for r in rows):
        for codec in dict.fromkeys(r[2] for r in rows):
            sel = [r for r in rows if r[1] == rate and r[2] == codec]
            with warnings.catch_warnings():  # CDC has no separate decode time (nan)
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(np.array([r[3:] for r in sel], dtype=float), axis=0)
            print(f"{'mean':<12} {rate:<5} {codec:<20} {mean[0]:7.4f} {mean[1]:7.2f} {mean[2]:8.4f} {mean[3]:7.1f} "
                  f"{mean[4]:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
