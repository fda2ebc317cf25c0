"""Throughput of one batched ``encode_images`` call on same-size images against one call per image.

A batch shares the codebook scans of every step (codewords are generated once and scored against every
image); the model is still called image by image, so that a file decodes bit-exactly on its own (a batched
UNet call sums in another order). Both ways run alternately in this process (``--rounds`` times, best kept)
and must give identical files.

    python benchmarks/batch_encode.py [--photos ../shared/data/train] [--count 8] [--side 256]
        [--models builtin builtin-latent] [--quality 50] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from ladder_study import crops  # benchmarks/ is on sys.path when a script in it runs

import pillow_diffcodec as pdc
from pillow_diffcodec.codecs import codec_by_name
from pillow_diffcodec.compute import pinned_compute
from pillow_diffcodec.models import load_model
from pillow_diffcodec.models.base import DiffusionModel

T = TypeVar("T")


def best_of(rounds: int, **ways: Callable[[], T]) -> tuple[dict[str, float], dict[str, T]]:
    """Run the ``ways`` alternately ``rounds`` times: the best seconds of each, and each one's last result."""
    best, results = dict.fromkeys(ways, float("inf")), {}
    for _ in range(rounds):
        for name, work in ways.items():
            start = time.perf_counter()
            results[name] = work()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, results


def model_call_ceiling(model: DiffusionModel, side: int, count: int, rounds: int) -> tuple[float, float]:
    """Throughput of one batched model call over ``count`` single calls (best of ``rounds``, on DDCM's pinned
    thread count), and the largest absolute difference between their clean estimates."""
    x = torch.randn((count, *model.sample_shape(side, side)), generator=torch.Generator().manual_seed(0))
    t = model.schedule.num_train_timesteps // 2
    with pinned_compute(codec_by_name("DDCM").compute_threads):
        model.predict_x0_batch(x, t)  # warm-up
        best, out = best_of(rounds, single=lambda: torch.stack([model.predict_x0(one, t) for one in x]),
                            batched=lambda: model.predict_x0_batch(x, t))
    return best["single"] / best["batched"], float((out["single"] - out["batched"]).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "train")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--models", nargs="+", default=["builtin", "builtin-latent"])
    parser.add_argument("--quality", type=float, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = crops(args.photos, args.count, args.side)
    print(f"{len(images)} crops of {args.side}x{args.side}, quality {args.quality:g}, {torch.get_num_threads()} thread(s)")
    for name in args.models:
        model = load_model(name)
        pdc.encode(images[0].crop((0, 0, 64, 64)), model=model, quality=args.quality)  # warm-up (kernel compile)
        best, files = best_of(
            args.rounds, single=lambda: [pdc.encode(image, model=model, quality=args.quality) for image in images],
            batched=lambda: pdc.encode_batch(images, model=model, quality=args.quality))
        same = files["single"] == files["batched"]
        print(f"{name:15s} one call per image {best['single']:6.1f} s   batched {best['batched']:6.1f} s   "
              f"throughput x{best['single'] / best['batched']:.2f}   identical files: {same}", flush=True)
        ratio, diff = model_call_ceiling(model, args.side, args.count, max(args.rounds, 3))
        print(f"{'':15s} model calls alone: one batch of {args.count} vs {args.count} single calls x{ratio:.2f}, "
              f"largest difference {diff:.3g}" + (" (bit-exact)" if diff == 0 else ""), flush=True)


if __name__ == "__main__":
    main()
