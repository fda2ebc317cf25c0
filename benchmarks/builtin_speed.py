"""Encode and decode seconds of built-in models on the same images, measured side by side in one run.

For each target (a rate ``bpp=`` through the model's rate ladder, or a ``quality=`` preset) and image,
every model encodes the image and decodes the file, one after the other in this process, so the ratios
between models are taken under the same load.

    python benchmarks/builtin_speed.py [IMAGE ...] [--models builtin-v1 builtin] [--rates 0.05 0.4 0.8]
    python benchmarks/builtin_speed.py kodim01.png kodim05.png --models builtin builtin-latent --quality 0 50 75

Prints one row per (target, image, model): file bpp, PSNR, encode and decode seconds, and each model's
times as a ratio of the first model's; then per target and model the ratio of the summed times.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec.evaluation.metrics import psnr

DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak" / "kodim01.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*", type=Path, default=[DEFAULT_IMAGE])
    parser.add_argument("--models", nargs="+", default=["builtin-v1", "builtin"])
    targets = parser.add_mutually_exclusive_group()
    targets.add_argument("--rates", type=float, nargs="+", help="bpp targets (default 0.05 0.4 0.8)")
    targets.add_argument("--quality", type=int, nargs="+", help="quality presets instead of bpp targets")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chosen = [("quality", q) for q in args.quality] if args.quality else [("bpp", r) for r in args.rates or [0.05, 0.4, 0.8]]
    images = {}
    for path in args.images:
        with Image.open(path) as opened:
            images[path.name] = opened.convert("RGB")
    sizes = ", ".join(f"{name} {im.width}x{im.height}" for name, im in images.items())
    print(f"{sizes}; {args.threads} thread(s), device {args.device}")
    print("target       image         model            bpp     PSNR   encode s  decode s  encode ratio  decode ratio")
    for key, value in chosen:
        totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for name, image in images.items():
            first: tuple[float, float] | None = None
            for model in args.models:
                start = time.perf_counter()
                result = pdc.encode_images([image], model=model, device=args.device, **{key: value})[0]
                encode_s = time.perf_counter() - start
                start = time.perf_counter()
                decoded = pdc.decode(result.data, device=args.device)
                decode_s = time.perf_counter() - start
                first = first or (encode_s, decode_s)
                totals[model][0] += encode_s
                totals[model][1] += decode_s
                print(f"{key}={value:<6} {name:<13} {model:<15} {result.bpp:.4f} {psnr(image, decoded):6.2f}"
                      f" {encode_s:9.1f} {decode_s:9.1f} {encode_s / first[0]:13.2f} {decode_s / first[1]:13.2f}",
                      flush=True)
        base = totals[args.models[0]]
        for model in args.models[1:]:
            encode_s, decode_s = totals[model]
            print(f"{key}={value}, {len(images)} image(s): time of {args.models[0]} / time of {model}: encode "
                  f"{base[0] / encode_s:.2f}, decode {base[1] / decode_s:.2f}", flush=True)


if __name__ == "__main__":
    main()
