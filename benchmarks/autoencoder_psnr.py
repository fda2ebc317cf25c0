"""The autoencoder's own round trip D(E(x)) on a set of images: the ceiling of every latent codec on it.

    python benchmarks/autoencoder_psnr.py "../shared/data/kodak/kodim*.png" [--model builtin-latent]

Prints PSNR and MS-SSIM per image and their means (the round trip of ``LatentDiffusionModel.autoencoder_bound``,
as the latent codecs use it: padded to the model's size multiple, cropped back).
"""

from __future__ import annotations

import argparse
import glob

import numpy as np
import torch
from PIL import Image

from pillow_diffcodec.evaluation.metrics import ms_ssim, psnr
from pillow_diffcodec.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pattern")
    parser.add_argument("--model", default="builtin-latent")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    scores = []
    for path in sorted(glob.glob(args.pattern)):
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
        bound = model.autoencoder_bound(pixels)
        decoded = Image.fromarray(bound.permute(1, 2, 0).numpy())
        scores.append((psnr(image, decoded), ms_ssim(image, decoded)))
        print(f"{path.rsplit('/', 1)[-1]:<14} PSNR {scores[-1][0]:6.2f} dB  MS-SSIM {scores[-1][1]:.4f}", flush=True)
    print(f"mean over {len(scores)} image(s): PSNR {np.mean([s[0] for s in scores]):.2f} dB, "
          f"MS-SSIM {np.mean([s[1] for s in scores]):.4f}")


if __name__ == "__main__":
    main()
