"""PSC with the s posterior samples in one model call per step, against one call per sample, side by side.

Encodes the same crop both ways (alternating, ``--rounds`` times) with the same parameters and prints, for
each, the UNet calls per image (counted by a forward hook), the best encode time and the speed-up, and
how far apart the two reconstructions are (batched kernels may sum in another order: the pixels agree to
a level or two, which is why a file records which way it was made).

    python benchmarks/psc_batching.py [IMAGE] [--model builtin] [--side 32] [--samples 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pillow_diffcodec.codecs.psc import runner as psc
from pillow_diffcodec.codecs.psc.format import PSCParams
from pillow_diffcodec.models import load_model

DEFAULT_IMAGE = Path(__file__).resolve().parents[1] / "ray_jobs" / "sample" / "nature" / "tiger.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model = load_model(args.model)
    with Image.open(args.image) as image:
        crop = image.convert("RGB").crop((0, 0, args.side, args.side))
    pixels = torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1)
    params = PSCParams(iterations=args.iterations, rows=args.samples - 2, samples=args.samples, ddrm_steps=4,
                       final_steps=10, final_sampler="mean")
    calls: list[int] = []
    model.unet.register_forward_hook(lambda module, inputs, output: calls.append(1))
    best, count, recon = {}, {}, {}
    threads = torch.get_num_threads()
    for _ in range(args.rounds):
        for batched in (False, True):
            calls.clear()
            start = time.perf_counter()
            _, recon[batched], _ = psc.encode_one(model, params, 0, pixels, psc.compute_signature(model, batched),
                                                  threads, batched=batched)
            best[batched] = min(best.get(batched, float("inf")), time.perf_counter() - start)
            count[batched] = len(calls)
    diff = (recon[True].int() - recon[False].int()).abs().max().item()
    print(f"{args.side}x{args.side} crop, model {args.model}, {params.samples} samples, {threads} threads, "
          f"best of {args.rounds}")
    for batched, label in ((False, "one sample per call"), (True, "samples batched")):
        print(f"{label:20s}: {count[batched]:4d} UNet calls  {best[batched]:7.2f} s")
    print(f"UNet calls: {count[False] / count[True]:.1f}x fewer; encode speed-up {best[False] / best[True]:.2f}x; "
          f"max pixel difference {diff}")


if __name__ == "__main__":
    main()
