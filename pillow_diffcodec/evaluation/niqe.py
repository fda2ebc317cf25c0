"""NIQE, the Natural Image Quality Evaluator: a no-reference quality measure that needs no trained network.

Mittal, Soundararajan & Bovik, "Making a 'completely blind' image quality analyzer", IEEE Signal Processing
Letters 20(3), 2013. Implemented from the paper:

* MSCN coefficients ``(I - mu) / (sigma + 1)`` with a 7x7 Gaussian window (sigma 7/6) (their eq. 1-3);
* per patch, a generalised Gaussian fitted to the MSCN values (shape, variance) and an asymmetric
  generalised Gaussian (shape, mean, left and right variances) to each of the four neighbour products
  (horizontal, vertical, both diagonals): 18 features (Sec. II-C, after BRISQUE), at the image's scale and
  at half of it: 36;
* a multivariate Gaussian of the features of sharp patches of natural images (the "pristine" model; patches
  whose mean local sigma is at least 0.75 of the sharpest, Sec. II-B), and of the test image's patches; the
  quality is ``sqrt((nu1 - nu2)^T ((S1 + S2) / 2)^+ (nu1 - nu2))`` (eq. 10). Lower is better.

The paper's patches are 96 pixels; here they are 32 (:data:`PATCH`), so that the small images and tiles this
library restores on a CPU hold several. The pristine model (``niqe_prior.json``) was fitted with
:func:`fit_prior` on the project's training photos (``python -m pillow_diffcodec.evaluation.niqe PHOTOS...``);
its values are not comparable with NIQE numbers from other implementations.
"""

from __future__ import annotations

import argparse
import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..restoration import Colorization

PATCH = 32
SHARPNESS_SHARE = 0.75
PRIOR_PATH = Path(__file__).with_name("niqe_prior.json")
_SHAPES = np.arange(0.2, 10.0, 0.001)


@lru_cache(maxsize=1)
def _ratio_tables() -> tuple[np.ndarray, np.ndarray]:
    """For shapes a: Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)), the moment ratio both fits invert (in log-gamma)."""
    lg = np.vectorize(math.lgamma)
    log_ratio = 2 * lg(2 / _SHAPES) - lg(1 / _SHAPES) - lg(3 / _SHAPES)
    return _SHAPES, np.exp(log_ratio)


def _gaussian_window() -> torch.Tensor:
    x = torch.arange(-3, 4, dtype=torch.float64)
    g = torch.exp(-(x**2) / (2 * (7 / 6) ** 2))
    return (g / g.sum())


def mscn(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MSCN coefficients and the local sigma of a grey image (H, W) in [0, 255] (eq. 1-3)."""
    x = torch.from_numpy(image.astype(np.float64))[None, None]
    g = _gaussian_window()

    def blur(v: torch.Tensor) -> torch.Tensor:
        v = F.pad(v, (3, 3, 3, 3), mode="replicate")
        v = F.conv2d(v, g.view(1, 1, 1, 7))
        return F.conv2d(v, g.view(1, 1, 7, 1))

    mu = blur(x)
    sigma = (blur(x * x) - mu * mu).clamp(min=0).sqrt()
    return ((x - mu) / (sigma + 1.0))[0, 0].numpy(), sigma[0, 0].numpy()


def fit_ggd(values: np.ndarray) -> tuple[float, float]:
    """Shape and variance of a zero-mean generalised Gaussian, by moment matching."""
    shapes, ratio = _ratio_tables()
    variance = float(np.mean(values**2))
    mean_abs = float(np.mean(np.abs(values)))
    rho = mean_abs**2 / variance if variance > 0 else 0.0
    return float(shapes[np.argmin(np.abs(ratio - rho))]), variance


def fit_aggd(values: np.ndarray) -> tuple[float, float, float, float]:
    """Shape, mean, left and right variances of an asymmetric generalised Gaussian (Lasmar et al. 2009)."""
    shapes, ratio = _ratio_tables()
    left, right = values[values < 0], values[values > 0]
    left_var = float(np.mean(left**2)) if left.size else 0.0
    right_var = float(np.mean(right**2)) if right.size else 0.0
    if left_var == 0.0 or right_var == 0.0:
        return 10.0, 0.0, left_var, right_var
    gamma = math.sqrt(left_var / right_var)
    r_hat = float(np.mean(np.abs(values))) ** 2 / float(np.mean(values**2))
    big_r = r_hat * (gamma**3 + 1) * (gamma + 1) / (gamma**2 + 1) ** 2
    shape = float(shapes[np.argmin(np.abs(ratio - big_r))])
    scale = math.exp(math.lgamma(2 / shape) - 0.5 * (math.lgamma(1 / shape) + math.lgamma(3 / shape)))
    mean = (math.sqrt(right_var) - math.sqrt(left_var)) * scale
    return shape, mean, left_var, right_var


def _patch_features(coefficients: np.ndarray) -> list[float]:
    """The 18 features of one patch's MSCN coefficients."""
    c = coefficients
    products = (c[:, :-1] * c[:, 1:], c[:-1, :] * c[1:, :], c[:-1, :-1] * c[1:, 1:], c[:-1, 1:] * c[1:, :-1])
    features = list(fit_ggd(c.ravel()))
    for product in products:
        features += fit_aggd(product.ravel())
    return features


def _half(image: np.ndarray) -> np.ndarray:
    """The image at half resolution (bicubic with antialiasing, as MATLAB's imresize(0.5))."""
    x = torch.from_numpy(image.astype(np.float64))[None, None]
    return F.interpolate(x, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)[0, 0].numpy()


def patch_features(image: np.ndarray, patch: int = PATCH) -> tuple[np.ndarray, np.ndarray]:
    """(features (P, 36), sharpness (P,)) of the whole patches of a grey image (H, W) in [0, 255]; an image
    smaller than a patch is one patch."""
    height, width = image.shape
    patch = max(2, min(patch, height, width))
    rows, cols = height // patch, width // patch
    image = image[: rows * patch, : cols * patch]
    scales = [(image, patch), (_half(image), patch // 2)]
    per_scale, sharpness = [], None
    for scaled, size in scales:
        coefficients, sigma = mscn(scaled)
        features = []
        local = []
        for r in range(rows):
            for c in range(cols):
                box = (slice(r * size, (r + 1) * size), slice(c * size, (c + 1) * size))
                features.append(_patch_features(coefficients[box]))
                local.append(float(np.mean(sigma[box])))
        per_scale.append(np.asarray(features))
        if sharpness is None:
            sharpness = np.asarray(local)
    return np.concatenate(per_scale, axis=1), sharpness


def grey(image: Image.Image) -> np.ndarray:
    """The luma of a PIL image as float64 (H, W) in [0, 255]."""
    return np.asarray(image.convert("L"), dtype=np.float64)


def fit_prior(images: list[Image.Image], patch: int = PATCH) -> dict[str, list]:
    """The pristine model: mean and covariance of the features of the sharp patches of ``images`` (Sec. II-B)."""
    selected = []
    for image in images:
        features, sharpness = patch_features(grey(image), patch)
        selected.append(features[sharpness >= SHARPNESS_SHARE * sharpness.max()])
    data = np.concatenate(selected)
    return {"patch": patch, "patches": int(len(data)), "mean": data.mean(axis=0).tolist(),
            "cov": np.cov(data, rowvar=False).tolist()}


@lru_cache(maxsize=1)
def _prior() -> tuple[np.ndarray, np.ndarray, int]:
    with PRIOR_PATH.open(encoding="utf-8") as handle:
        data = json.load(handle)
    return np.asarray(data["mean"]), np.asarray(data["cov"]), int(data["patch"])


def niqe(image: np.ndarray) -> float:
    """NIQE of a grey image (H, W) in [0, 255] against the shipped pristine model (eq. 10); lower is better."""
    mean, cov, patch = _prior()
    features, _ = patch_features(image, patch)
    test_mean = features.mean(axis=0)
    test_cov = np.cov(features, rowvar=False) if len(features) > 1 else np.zeros_like(cov)
    difference = mean - test_mean
    return float(math.sqrt(max(0.0, difference @ np.linalg.pinv((cov + test_cov) / 2) @ difference)))


def niqe_score(image: torch.Tensor) -> float:
    """NIQE of an image tensor (C, H, W) in [0, 1] (RGB is reduced to BT.601 luma): the default quality
    measure of DDCM's perception-distortion restoration."""
    x = image.detach().to(torch.float64).cpu()
    if x.shape[0] == 3:
        x = Colorization().apply(x[None])[0]
    return niqe((x[0] * 255.0).numpy())


def main(argv: list[str] | None = None) -> None:
    """Fit the pristine model on a folder of photos and write it as JSON."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=PRIOR_PATH)
    args = parser.parse_args(argv)
    paths = sorted(p for folder in args.folders for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    images = []
    for path in paths:
        with Image.open(path) as image:
            image.thumbnail((768, 768))  # the photos' own sharpness at a size like the images coded here
            images.append(image.convert("RGB"))
    prior = fit_prior(images)
    args.output.write_text(json.dumps(prior), encoding="utf-8")
    print(f"{args.output}: {prior['patches']} sharp patches of {len(images)} photos")


if __name__ == "__main__":
    main()
