"""Encode and decode seconds of built-in models on one 768x512 image, measured side by side in one run.

For each target rate, every model encodes the image with ``bpp=`` (its own rate ladder) and decodes the
file, one after the other in this process, so the ratios between models are taken under the same load.

    python benchmarks/builtin_speed.py [IMAGE] [--models builtin-v1 builtin] [--rates 0.05 0.4 0.8] [--threads 1]

Prints one row per (rate, model): file bpp, PSNR, encode and decode seconds, and each model's times as a
ratio of the first model's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec.evaluation.metrics import psnr

DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak" / "kodim01.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--models", nargs="+", default=["builtin-v1", "builtin"])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.05, 0.4, 0.8])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with Image.open(args.image) as opened:
        image = opened.convert("RGB")
    print(f"{args.image.name} {image.width}x{image.height}, {args.threads} thread(s), device {args.device}")
    print("target  model        bpp     PSNR   encode s  decode s  encode ratio  decode ratio")
    for rate in args.rates:
        first: tuple[float, float] | None = None
        for model in args.models:
            start = time.perf_counter()
            result = pdc.encode_images([image], model=model, bpp=rate, device=args.device)[0]
            encode_s = time.perf_counter() - start
            start = time.perf_counter()
            decoded = pdc.decode(result.data, device=args.device)
            decode_s = time.perf_counter() - start
            first = first or (encode_s, decode_s)
            print(f"{rate:<7} {model:<12} {result.bpp:.4f} {psnr(image, decoded):6.2f} {encode_s:9.1f} {decode_s:9.1f}"
                  f" {encode_s / first[0]:13.2f} {decode_s / first[1]:13.2f}", flush=True)


if __name__ == "__main__":
    main()
