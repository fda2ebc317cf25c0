"""Distortion metrics of a decoded image against its original (RGB, 8 bit).

- PSNR: ``10 log10(255^2 / MSE)`` over all RGB samples (inf for identical images).
- MS-SSIM: Wang, Simoncelli and Bovik, "Multi-scale structural similarity for image quality
  assessment" (Asilomar 2003), computed by the maintained ``pytorch-msssim`` package: 5 scales with the
  paper's weights, 11x11 Gaussian window with sigma 1.5, data range 255, mean over RGB. That package needs
  the smaller image side above ``(win - 1) * 16``; smaller images use the largest odd window that fits
  (at least 3, so images need more than 32 px a side), which ``ms_ssim_window`` reports.
- Stripe ratios: the energy of the one-pixel alternating pattern of the luminance along each axis,
  decoded over original (:func:`stripe_ratios`). A pixel-unshuffled model (the built-in one works on 2x2
  blocks) can paint a column or row stripe that PSNR barely sees and the eye sees at once; 1 means the
  decode carries as much of that pattern as the original, and above 3 it is visible.
- VIF-p, GMSD and HaarPSI (:mod:`.iqa`, from their papers): weight-free, on the images in their own
  mode (L stays one channel); the papers and parameters are listed there.
- LPIPS (Zhang et al., CVPR 2018) only when the ``lpips`` package and its AlexNet weights
  (``<torch hub dir>/checkpoints/alexnet-owt-7be5be79.pth``; the hub dir is ``$TORCH_HOME/hub``, by default
  ``~/.cache/torch/hub``) are already on the machine; DISTS (Ding et al., TPAMI 2022) only when ``piq``
  imports and both ``vgg16-397923af.pth`` and ``dists_weights.pt`` are in that folder. FID/KID of
  patches (as in the DDCM and PSC papers) need Inception weights, which this module never fetches:
  :func:`perceptual_note` says what was skipped and why. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

MS_SSIM_WINDOW = 11
MS_SSIM_MIN_WINDOW = 3
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"  # the torchvision file LPIPS(net="alex") loads from the hub cache
DISTS_WEIGHTS = ("vgg16-397923af.pth", "dists_weights.pt")  # what piq.DISTS loads from the hub cache


def _rgb_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def _check_sizes(a: Image.Image, b: Image.Image) -> None:
    if a.size != b.size:
        raise ValueError(f"Images differ in size: {a.size} vs {b.size}")


def _tensor(image: Image.Image, mode: str) -> Any:
    """``image`` in ``mode`` (L or RGB) as a float64 tensor ``(1, C, H, W)`` of 0-255 values."""
    import torch

    array = np.asarray(image.convert(mode), dtype=np.float64)
    return torch.from_numpy(array[..., None] if mode == "L" else array).permute(2, 0, 1)[None]


def _pair(original: Image.Image, decoded: Image.Image) -> tuple[Any, Any]:
    """Both images as tensors in the original's mode: one channel for a grey original, else RGB."""
    _check_sizes(original, decoded)
    mode = "L" if original.mode in ("L", "LA", "1", "I", "I;16", "F") else "RGB"
    return _tensor(decoded, mode), _tensor(original, mode)


def vif(original: Image.Image, decoded: Image.Image) -> float:
    """VIF-p of ``decoded`` against ``original`` (:func:`.iqa.vif_p`): 1 when identical, lower is worse."""
    from .iqa import vif_p

    return vif_p(*_pair(original, decoded))


def gmsd(original: Image.Image, decoded: Image.Image) -> float:
    """GMSD of the pair (:func:`.iqa.gmsd`): 0 when identical, higher is worse."""
    from .iqa import gmsd as _gmsd

    return _gmsd(*_pair(original, decoded))


def haarpsi(original: Image.Image, decoded: Image.Image) -> float:
    """HaarPSI of the pair (:func:`.iqa.haarpsi`): 1 when identical, lower is worse."""
    from .iqa import haarpsi as _haarpsi

    return _haarpsi(*_pair(original, decoded))


def psnr(a: Image.Image, b: Image.Image) -> float:
    """PSNR in dB of two same-size images, over all RGB samples (``inf`` when identical)."""
    _check_sizes(a, b)
    mse = float(np.mean((_rgb_array(a) - _rgb_array(b)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def ms_ssim_window(width: int, height: int) -> int:
    """The Gaussian window MS-SSIM uses at this size: 11, or the largest odd size that 5 scales allow."""
    side = min(width, height)
    window = MS_SSIM_WINDOW
    while window > MS_SSIM_MIN_WINDOW and side <= (window - 1) * 16:
        window -= 2
    if side <= (window - 1) * 16:
        raise ValueError(
            f"MS-SSIM needs images larger than {(MS_SSIM_MIN_WINDOW - 1) * 16} px a side, got {width}x{height}"
        )
    return window


def ms_ssim(a: Image.Image, b: Image.Image) -> float:
    """MS-SSIM (pytorch-msssim, RGB, data range 255) of two same-size images; 1.0 when identical."""
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    _check_sizes(a, b)
    window = ms_ssim_window(*a.size)
    x = torch.from_numpy(_rgb_array(a)).permute(2, 0, 1)[None]
    y = torch.from_numpy(_rgb_array(b)).permute(2, 0, 1)[None]
    return float(_ms_ssim(x, y, data_range=255, size_average=True, win_size=window))


def alternation_energy(image: Image.Image, axis: str) -> float:
    """Energy of the one-pixel alternating pattern of the luminance Y (ITU-R BT.601) along ``axis``.

    ``"columns"``: per row, ``(sum_x Y[x] (-1)^x)^2 / width``, averaged over rows: the Nyquist
    coefficient of each row, so a stripe that flips every column. ``"rows"``: the same down each column.
    Without such a pattern it is about the variance of the image's finest detail (a few units for photos).
    """
    rgb = _rgb_array(image)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    if axis == "rows":
        luma = luma.T
    elif axis != "columns":
        raise ValueError(f"Expected axis 'columns' or 'rows', got {axis!r}")
    signs = np.where(np.arange(luma.shape[1]) % 2 == 0, 1.0, -1.0)
    return float(np.mean((luma @ signs) ** 2) / luma.shape[1])


def stripe_ratios(original: Image.Image, decoded: Image.Image) -> dict[str, float]:
    """Alternating-pattern energy of ``decoded`` over ``original`` per axis: ``{"columns": ..., "rows": ...}``
    (floored at an energy of 1, so a flat original does not turn rounding into a large ratio)."""
    _check_sizes(original, decoded)
    return {
        axis: alternation_energy(decoded, axis) / max(alternation_energy(original, axis), 1.0)
        for axis in ("columns", "rows")
    }


@lru_cache(maxsize=1)
def _lpips_model() -> Any | None:
    """An LPIPS(alex) network when the package and its weights are already here, else None (never downloads)."""
    if importlib.util.find_spec("lpips") is None or not _hub_has(ALEXNET_WEIGHTS):
        return None
    import lpips

    return lpips.LPIPS(net="alex", verbose=False).eval()


def lpips_available() -> bool:
    """True when LPIPS can be computed without downloading anything."""
    return _lpips_model() is not None


def lpips_distance(a: Image.Image, b: Image.Image) -> float:
    """LPIPS (AlexNet) of two same-size images; requires :func:`lpips_available`."""
    import torch

    _check_sizes(a, b)
    model = _lpips_model()
    if model is None:
        raise RuntimeError("LPIPS is not available on this machine")

    def tensor(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(_rgb_array(image) / 127.5 - 1).permute(2, 0, 1)[None].float()

    with torch.no_grad():
        return float(model(tensor(a), tensor(b)))


def _hub_has(*names: str) -> bool:
    import torch

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return all((folder / name).is_file() for name in names)


@lru_cache(maxsize=1)
def _dists_model() -> Any | None:
    """piq's DISTS network when piq imports and its weights are in the hub cache, else None (never downloads)."""
    if importlib.util.find_spec("piq") is None or not _hub_has(*DISTS_WEIGHTS):
        return None
    try:
        import piq
    except (ImportError, RuntimeError):  # piq needs a torchvision that works with the installed torch
        return None
    return piq.DISTS(reduction="none").eval()


def dists_available() -> bool:
    """True when DISTS can be computed without downloading anything."""
    return _dists_model() is not None


def dists_distance(a: Image.Image, b: Image.Image) -> float:
    """DISTS (piq, VGG16) of two same-size images, 0 when identical; requires :func:`dists_available`."""
    import torch

    model = _dists_model()
    if model is None:
        raise RuntimeError("DISTS is not available on this machine")
    x, y = (tensor.float() / 255 for tensor in _pair(a, b))
    if x.shape[1] == 1:
        x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
    with torch.no_grad():
        return float(model(x, y))


def perceptual_note() -> str:
    """One line saying which perceptual metrics are skipped and why (empty when none is)."""
    skipped = ["patch FID/KID (Inception weights are never downloaded)"]
    if not dists_available():
        skipped.insert(0, f"DISTS (needs an importable 'piq' and {' + '.join(DISTS_WEIGHTS)} in the torch hub cache)")
    if not lpips_available():
        skipped.insert(0, f"LPIPS (needs the 'lpips' package and {ALEXNET_WEIGHTS} in the torch hub cache)")
    return "skipped: " + "; ".join(skipped) + " - nothing is downloaded"
