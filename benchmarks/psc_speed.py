"""PSC speed (model calls and seconds per image) and rate-distortion next to DDCM, same model and images.

    python benchmarks/psc_speed.py [--model builtin] [--side 32] [--images kodim23 kodim05]
        [--rates 0.5 1 2] [--iterations 8] [--rows 6] [--samples 8] [--ddrm-steps 4] [--final-steps 10]

Part 1 encodes and decodes the first image with the PSC configuration and no byte budget, counting
model calls (NFEs) through the progress callback, and checks that the decoder reproduced the
encoder's image bit for bit. Part 2 encodes centre crops of the Kodak images at each target rate
with PSC (``bpp=`` rate control: payload budget and quantiser step) and with DDCM (``bpp=`` with its
defaults) and prints whole-file bpp and PSNR, mean over the images. Everything runs on the CPU.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec.codecs.psc.format import read_head
from pillow_diffcodec.fileinfo import read_file

KODAK = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kodak"


def psnr(a: Image.Image, b: Image.Image) -> float:
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def centre_crop(name: str, side: int) -> Image.Image:
    with Image.open(KODAK / f"{name}.png") as image:
        w, h = image.size
        return image.convert("RGB").crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2))


class Counter:
    """A progress callback that counts model calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, done: int, total: int) -> None:
        self.calls += 1


def measurements(data: bytes) -> int:
    parsed = read_file(data)
    return read_head(parsed.params, parsed.payload)[0].measurements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--images", nargs="+", default=["kodim23", "kodim05"])
    parser.add_argument("--rates", nargs="+", type=float, default=[0.5, 1.0, 2.0])
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--ddrm-steps", type=int, default=4)
    parser.add_argument("--final-steps", type=int, default=10)
    args = parser.parse_args()
    config = {"iterations": args.iterations, "rows": args.rows, "samples": args.samples,
              "ddrm_steps": args.ddrm_steps, "final_steps": args.final_steps}
    model = pdc.load_model(args.model)  # loaded (and fingerprinted) before anything is timed
    _ = model.fingerprint
    images = [centre_crop(name, args.side) for name in args.images]
    print(f"# PSC vs DDCM, model {args.model!r}, {args.side}x{args.side} centre crops of {args.images}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"# PSC configuration: {config} (final sampler 'mean')")

    counter = Counter()
    start = time.perf_counter()
    result = pdc.encode_images(images[:1], codec="PSC", model=model, progress=counter, **config)[0]
    encode_s, encode_calls = time.perf_counter() - start, counter.calls
    counter = Counter()
    start = time.perf_counter()
    decoded = pdc.decode(result.data, model=model, progress=counter)
    decode_s = time.perf_counter() - start
    exact = np.array_equal(np.asarray(decoded), np.asarray(result.reconstruction))
    print(f"speed: encode {encode_calls} NFEs {encode_s:.1f} s ({1000 * encode_s / encode_calls:.0f} ms/NFE); "
          f"decode {counter.calls} NFEs {decode_s:.1f} s; {measurements(result.data)} measurements, "
          f"{result.bpp:.3f} bpp, PSNR {psnr(images[0], result.reconstruction):.2f} dB; decode bit-exact: {exact}")

    print(f"{'target bpp':>10} | {'PSC bpp':>8} {'PSC dB':>7} {'meas':>5} {'NFEs':>5} {'s/img':>6} | "
          f"{'DDCM bpp':>8} {'DDCM dB':>7} {'s/img':>6} | dB PSC-DDCM")
    for rate in args.rates:
        rows = {"psc": [], "ddcm": []}
        for image in images:
            counter = Counter()
            start = time.perf_counter()
            psc = pdc.encode_images([image], codec="PSC", model=model, bpp=rate, progress=counter, **config)[0]
            rows["psc"].append((psc.bpp, psnr(image, psc.reconstruction), measurements(psc.data), counter.calls,
                                time.perf_counter() - start))
            start = time.perf_counter()
            ddcm = pdc.encode_images([image], model=model, bpp=rate)[0]
            rows["ddcm"].append((ddcm.bpp, psnr(image, ddcm.reconstruction), time.perf_counter() - start))
        p = np.mean(np.array(rows["psc"]), axis=0)
        d = np.mean(np.array(rows["ddcm"]), axis=0)
        print(f"{rate:>10.3f} | {p[0]:>8.3f} {p[1]:>7.2f} {p[2]:>5.0f} {p[3]:>5.0f} {p[4]:>6.1f} | "
              f"{d[0]:>8.3f} {d[1]:>7.2f} {d[2]:>6.1f} | {p[1] - d[1]:+.2f}")


if __name__ == "__main__":
    main()
