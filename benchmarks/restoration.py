"""Compressed restoration (DDCM Sec. 6) on Kodak crops, beside "restore plainly, then compress with DDCM".

For each crop (``--side`` pixels, from the image centre) the degraded input is made (4x bicubic down-sampling for
``sr4``, BT.601 luma for ``colorize``); then, side by side in one run:

* ``plain``: the plain restoration (bicubic upscale, or the grey image in RGB), not compressed;
* ``plain+DDCM``: that plain restoration compressed with DDCM at the restored file's size (``bpp=``);
* ``DDCM restore``: ``pillow_diffcodec.restore`` (posterior sampling, eq. 10);
* ``DDCM restore, perception W``: the perception-distortion selection (eq. 11-12) with NIQE, weight W.

Prints bpp, PSNR against the original crop, NIQE (lower is better; the project's NIQE, see
pillow_diffcodec/evaluation/niqe.py), the fit to the input (PSNR of the output degraded again against the
degraded input) and encode seconds, as means over the crops. Kodak is evaluation data: nothing is tuned on it.

    python benchmarks/restoration.py /path/to/kodak [--task sr4] [--side 128] [--count 6] [--quality 25]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec.evaluation.niqe import grey, niqe


def psnr(a: Image.Image, b: Image.Image) -> float:
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def degrade(image: Image.Image, task: str) -> Image.Image:
    if task == "sr4":
        return image.resize((image.width // 4, image.height // 4), Image.Resampling.BICUBIC)
    return image.convert("L")


def plain_restoration(degraded: Image.Image, task: str, size: tuple[int, int]) -> Image.Image:
    if task == "sr4":
        return degraded.resize(size, Image.Resampling.BICUBIC)
    return degraded.convert("RGB")


def fit(output: Image.Image, degraded: Image.Image, task: str) -> float:
    return psnr(degrade(output.convert("RGB"), task), degraded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kodak", type=Path)
    parser.add_argument("--task", choices=("sr4", "colorize"), default="sr4")
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--quality", type=float, default=25)
    parser.add_argument("--perception", type=float, default=0.003)
    args = parser.parse_args()
    paths = sorted(args.kodak.glob("kodim*.png"))[: args.count]
    rows: dict[str, list[tuple[float, float, float, float, float]]] = {}

    def add(label: str, output: Image.Image, nbytes: int, seconds: float, original: Image.Image,
            degraded: Image.Image) -> None:
        bpp = 8 * nbytes / (original.width * original.height)
        rows.setdefault(label, []).append(
            (bpp, psnr(output, original), niqe(grey(output)), fit(output, degraded, args.task), seconds))

    for path in paths:
        with Image.open(path) as image:
            left, top = (image.width - args.side) // 2, (image.height - args.side) // 2
            original = image.convert("RGB").crop((left, top, left + args.side, top + args.side))
        degraded = degrade(original, args.task)
        plain = plain_restoration(degraded, args.task, original.size)
        add("plain (not compressed)", plain, 0, 0.0, original, degraded)
        start = time.perf_counter()
        restored = pdc.encode_images([degraded], restore=args.task, model=args.model, quality=args.quality)[0]
        add("DDCM restore", restored.reconstruction, len(restored.data), time.perf_counter() - start, original,
            degraded)
        start = time.perf_counter()
        perceptual = pdc.encode_images([degraded], restore=args.task, model=args.model, quality=args.quality,
                                       perception=args.perception)[0]
        add(f"DDCM restore, perception {args.perception:g}", perceptual.reconstruction, len(perceptual.data),
            time.perf_counter() - start, original, degraded)
        start = time.perf_counter()
        compressed = pdc.encode_images([plain], model=args.model, bpp=restored.bpp)[0]
        add("plain+DDCM", compressed.reconstruction, len(compressed.data), time.perf_counter() - start, original,
            degraded)
        print(f"{path.name}: done", flush=True)
    print(f"\ntask {args.task}, model {args.model}, {len(paths)} Kodak crops of {args.side}x{args.side} "
          f"(centre), quality {args.quality:g}; means")
    print(f"{'method':34s} {'bpp':>6s} {'PSNR':>6s} {'NIQE':>6s} {'fit':>6s} {'enc s':>6s}")
    for label, values in rows.items():
        bpp, quality, score, consistency, seconds = np.mean(np.asarray(values), axis=0)
        print(f"{label:34s} {bpp:6.3f} {quality:6.2f} {score:6.2f} {consistency:6.2f} {seconds:6.1f}")


if __name__ == "__main__":
    main()
