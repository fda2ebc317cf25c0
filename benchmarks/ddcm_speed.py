"""DDCM encoding/decoding speed and memory at two codebook sizes, measured side by side in one run.

Model: a randomly initialised UNet2DModel with the google/ddpm-cifar10-32 architecture (35.7M
parameters; speed does not depend on the weights). Each configuration runs in its own subprocess so
that its peak memory (max RSS above the loaded-model baseline) is its own.

    python benchmarks/ddcm_speed.py [--sizes 256 4096] [--steps 20] [--side 32] [--compile]

Prints, per codebook size K: the split of an encoding step into model call, codebook generation,
search (inner products + selection) and entropy coding; encode and decode seconds; decode/encode;
codebook work as a share of an encoding step; peak extra memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def cifar10_architecture():
    import torch
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 256, 256, 256),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    )


def worker(size: int, steps: int, side: int, compile_codebook: bool) -> dict[str, float]:
    import numpy as np
    from PIL import Image

    import pillow_diffcodec as pdc
    from pillow_diffcodec import codebook
    from pillow_diffcodec.codecs.ddcm import entropy
    from pillow_diffcodec.codecs.ddcm import format as ddcm_format
    from pillow_diffcodec.codecs.ddcm import runner as ddcm
    from pillow_diffcodec.models import PixelDiffusionModel
    from pillow_diffcodec.schedule import NoiseSchedule

    if compile_codebook:
        codebook.use_torch_compile(True)
    model = PixelDiffusionModel(cifar10_architecture(), NoiseSchedule.from_config({}), "cifar10-architecture")
    _ = model.fingerprint
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8))
    params = dict(steps=steps, codebook_size=size, atoms=1, selection="mp", tile=0)  # the paper's single-atom search
    pdc.encode(image, model=model, **{**params, "steps": 2})  # warm-up (and compilation)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    timers = {"model": 0.0, "scan": 0.0, "generation": 0.0, "coding": 0.0}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timers[name] += time.perf_counter() - start
        return wrapper

    model.predict_x0 = timed("model", model.predict_x0)
    ddcm.codebook_scores = timed("scan", ddcm.codebook_scores)
    codebook._block_fn = timed("generation", codebook._block_fn)
    ddcm_format.entropy.encode_uniform = timed("coding", entropy.encode_uniform)
    start = time.perf_counter()
    data = pdc.encode(image, model=model, **params)
    encode_s = time.perf_counter() - start
    encode_timers = dict(timers)
    timers["generation"] = 0.0
    start = time.perf_counter()
    pdc.decode(data, model=model)
    decode_s = time.perf_counter() - start
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024

    coded_steps = steps - 1
    return {
        "K": size,
        "model_per_step": encode_timers["model"] / steps,
        "generation_per_step": encode_timers["generation"] / coded_steps,
        "search_per_step": (encode_timers["scan"] - encode_timers["generation"]) / coded_steps,
        "coding_per_step": encode_timers["coding"] / coded_steps,
        "encode_s": encode_s,
        "decode_s": decode_s,
        "codebook_share": encode_timers["scan"] / encode_s,
        "decode_generation_s": timers["generation"],
        "peak_extra_mb": peak_mb,
        "peak_total_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "bytes": len(data),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 4096])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--compile", action="store_true", help="always generate codewords with torch.compile")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.steps, args.side, args.compile)))
        return
    rows = []
    for size in args.sizes:
        command = [sys.executable, __file__, "--worker", str(size), "--steps", str(args.steps), "--side", str(args.side)]
        command += ["--compile"] if args.compile else []
        rows.append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))
    print(f"DDCM speed: cifar10-32 UNet architecture, {args.side}x{args.side} image, T={args.steps}, M=1,"
          f" codebook {'compiled' if args.compile else 'automatic (compiled for scans of >= 2**22 values)'}")
    print(f"{'K':>6} {'model/step':>11} {'gen/step':>9} {'search/step':>12} {'coding/step':>12} "
          f"{'encode s':>9} {'decode s':>9} {'dec/enc':>8} {'codebook%':>10} {'peak MB':>8}")
    for r in rows:
        print(f"{r['K']:>6} {r['model_per_step'] * 1e3:>9.1f}ms {r['generation_per_step'] * 1e3:>7.1f}ms "
              f"{r['search_per_step'] * 1e3:>10.1f}ms {r['coding_per_step'] * 1e3:>10.2f}ms {r['encode_s']:>9.2f} "
              f"{r['decode_s']:>9.2f} {r['decode_s'] / r['encode_s']:>8.2f} {100 * r['codebook_share']:>9.0f}% "
              f"{r['peak_extra_mb']:>8.1f}")
    if len(rows) > 1:
        print(f"peak RSS ratio K={rows[-1]['K']} / K={rows[0]['K']}: "
              f"{rows[-1]['peak_total_mb'] / rows[0]['peak_total_mb']:.2f} (1.00 = flat in K)")


if __name__ == "__main__":
    main()
