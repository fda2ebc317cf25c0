"""Which DDCM family should ``bpp=`` search? PSNR at equal whole-file rate over steps, tile and K.

For each target rate and each (steps, tile, codebook_size) start point, rate control fills the budget
(atoms first, then K; a window below one atom per step) and the encoder's reconstruction (bit-exact
with the decoder's) is scored. Images: centre crops of the project's training photos (never Kodak).
Prints one row per target with the best start point and the PSNR of each; ``--csv`` keeps every row.

    python benchmarks/ladder_study.py --photos ../shared/data/train --count 4 --crop 256
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import pillow_diffcodec as pdc


def psnr(a: Image.Image, b: Image.Image) -> float:
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def crops(folder: Path, count: int, side: int) -> list[Image.Image]:
    """Centre crops of every ``len / count``-th photo, so the set spreads over the folder."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    chosen = paths[:: max(1, len(paths) // count)][:count]
    out = []
    for path in chosen:
        with Image.open(path) as image:
            image = image.convert("RGB")
            left, top = (image.width - side) // 2, (image.height - side) // 2
            out.append(image.crop((left, top, left + side, top + side)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=Path("../shared/data/train"))
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4, 0.8])
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--tiles", nargs="+", default=["32", "64", "128"],
                        help="tile sides, or 'ladder' for rate control's own choice of tile")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256])
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = crops(args.photos, args.count, args.crop)
    rows = []
    for rate in args.rates:
        results = {}
        for steps, tile, size in itertools.product(args.steps, args.tiles, args.sizes):
            scores, rates, seconds = [], [], []
            fixed = {} if tile == "ladder" else {"tile": int(tile)}
            for image in images:
                start = time.perf_counter()
                result = pdc.encode_images([image], model=args.model, bpp=rate, steps=steps, codebook_size=size,
                                           **fixed)[0]
                seconds.append(time.perf_counter() - start)
                scores.append(psnr(image, result.reconstruction))
                rates.append(result.bpp)
                params = pdc.info(result.data)["params"]
            row = dict(target=rate, steps=steps, tile=tile, start_k=size, bpp=float(np.mean(rates)),
                       psnr=float(np.mean(scores)), encode_s=float(np.mean(seconds)), k=params["codebook_size"],
                       atoms=params["atoms"], window=params["window"])
            rows.append(row)
            results[(steps, tile, size)] = row
            print(f"target {rate:.3f} steps {steps:3d} tile {tile:>6} K0 {size:5d}: {row['bpp']:.4f} bpp "
                  f"{row['psnr']:6.2f} dB  (tile {params['tile']}, K {row['k']}, M {row['atoms']}, "
                  f"window {row['window']}) "
                  f"{row['encode_s']:.1f} s", flush=True)
        best = max(results.values(), key=lambda r: r["psnr"])
        print(f"== target {rate}: best steps {best['steps']} tile {best['tile']} K {best['k']} M {best['atoms']} "
              f"-> {best['bpp']:.4f} bpp, {best['psnr']:.2f} dB", flush=True)
    if args.csv:
        with args.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
