"""DDCM encode and decode seconds per quality preset, their ratio, and how much of a decode is model calls.

For each model, preset and image: encode, then decode the file, in this process one after the other. The
model's calls (denoiser and, for latent models, the VAE's decode) are timed by wrapping the loaded model's
``predict_x0_batch`` and ``to_pixels``, so ``decode / model`` says how close decoding is to the cost of the
model itself (issue 23: at most 1.1) and ``enc / dec`` how far encoding is from decoding (at most 1.5).

    python benchmarks/encode_decode_ratio.py IMAGE [IMAGE ...] [--models builtin builtin-latent]
        [--quality 0 50 75] [--threads 1] [--crop 256]

The first encode in a process includes compiling the codeword kernel (or loading it from inductor's cache):
give a preset twice (``--quality 75 75``) to see the second, steady-state one.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec.evaluation.metrics import psnr
from pillow_diffcodec.models import load_model


class ModelClock:
    """Adds up the seconds spent in a loaded model's calls (wrapping its methods on this instance)."""

    def __init__(self, model: Any) -> None:
        self.seconds = 0.0
        for name in ("predict_x0_batch", "to_pixels"):
            setattr(model, name, self._timed(getattr(model, name)))

    def _timed(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--models", nargs="+", default=["builtin", "builtin-latent"])
    parser.add_argument("--quality", type=int, nargs="+", default=[0, 50, 75])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--crop", type=int, help="centre crop of this side instead of the whole image")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} thread(s)")
    print(f"{'model':15s} {'image':12s} {'preset':>6s} {'bpp':>6s} {'tile':>4s} {'K':>5s} {'M':>4s} "
          f"{'PSNR':>6s} {'enc s':>6s} {'dec s':>6s} {'enc/dec':>7s} {'model s':>7s} {'dec/model':>9s}")
    for name in args.models:
        model = load_model(name)
        clock = ModelClock(model)
        for quality in args.quality:
            for path in args.images:
                with Image.open(path) as image:
                    image = image.convert("RGB")
                if args.crop:
                    left, top = (image.width - args.crop) // 2, (image.height - args.crop) // 2
                    image = image.crop((left, top, left + args.crop, top + args.crop))
                start = time.perf_counter()
                data = pdc.encode(image, model=model, quality=quality)
                encode = time.perf_counter() - start
                clock.seconds = 0.0
                start = time.perf_counter()
                decoded = pdc.decode(data, model=model)
                decode = time.perf_counter() - start
                info = pdc.info(data)
                params = info["params"]
                print(f"{name:15s} {path.name:12s} {quality:6d} {info['bpp']:6.3f} {params['tile']:4d} "
                      f"{params['codebook_size']:5d} {params['atoms']:4d} {psnr(decoded, image):6.2f} {encode:6.1f} {decode:6.1f} "
                      f"{encode / decode:7.2f} {clock.seconds:7.1f} {decode / clock.seconds:9.2f}", flush=True)


if __name__ == "__main__":
    main()
