"""How good is a model's clean-image estimate at each noise level? PSNR of ``x0hat`` per timestep.

DDCM picks every codeword against ``x0 - x0hat`` (Ohayon et al. 2025, eq. 7), so a model whose estimate is
worse than flat grey at high noise steers its first steps blindly. For each model and timestep t, centre
crops of training photos (never Kodak) are noised to ``sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (eps from a
seeded generator) and denoised once; the table prints the PSNR of the noisy input (rescaled by
``1 / sqrt(abar_t)``) and of the clipped estimate, side by side for every model (models that share one
sample space and schedule: the first model's are used to noise).

    python benchmarks/denoiser_quality.py builtin-v1 builtin --photos ../shared/data/train
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from ladder_study import crops
from pillow_diffcodec.models import load_model

TIMESTEPS = (10, 50, 100, 200, 400, 700, 900)


def psnr(estimate: torch.Tensor, clean: torch.Tensor) -> float:
    """PSNR of samples in [-1, 1] (peak-to-peak 2)."""
    mse = float((estimate.clamp(-1, 1) - clean).square().mean())
    return 10 * math.log10(4 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="model references (names or folders)")
    parser.add_argument("--photos", type=Path, default=Path("../shared/data/train"))
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = [torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in crops(args.photos, args.count, args.crop)]
    models = [load_model(name) for name in args.models]
    print("t     noisy  " + "  ".join(f"{name:>14}" for name in args.models))
    for t in TIMESTEPS:
        noisy, denoised = [], {name: [] for name in args.models}
        for number, pixels in enumerate(images):
            clean = models[0].to_model_space(pixels)
            abar = float(models[0].schedule.alphas_cumprod[t])
            eps = torch.randn(clean.shape, generator=torch.Generator().manual_seed(number))
            x_t = math.sqrt(abar) * clean + math.sqrt(1 - abar) * eps
            noisy.append(psnr(x_t / math.sqrt(abar), clean))
            with torch.no_grad():
                for name, model in zip(args.models, models):
                    denoised[name].append(psnr(model.predict_x0(x_t, t), clean))
        row = "  ".join(f"{np.mean(denoised[name]):14.2f}" for name in args.models)
        print(f"{t:<5} {np.mean(noisy):6.2f}  {row}", flush=True)


if __name__ == "__main__":
    main()
