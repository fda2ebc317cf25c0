"""Restoration tasks for compressed conditional generation (DDCM Sec. 6.1): a linear degradation ``y = A x0``.

A task knows the restored image's size and mode for a degraded input, its operator ``A`` (linear,
differentiable, on images scaled to [-1, 1]) and a simple estimate ``r(y)`` of the clean image (the
bicubic upscale, the grey image in colour), which is where the perception-distortion selection of
Sec. 6.2 pulls towards. Built in: 4x bicubic super-resolution (``"sr4"``) and colourisation
(``"colorize"``); users pass their own :class:`Degradation`.

The codec only uses ``A`` through autograd (the gradient of ``1/2 ||y - A(x)||^2``), so an operator needs
no hand-written adjoint or pseudo-inverse.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import InvalidParameterError, UnsupportedImageError
from .settings import TASK_NAMES

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, the weights of Pillow's convert("L")


class Degradation(ABC):
    """A linear degradation ``y = A x`` of an image: subclass it for a restoration task of your own.

    Images are float tensors (N, C, H, W) scaled to [-1, 1]; ``A`` must be linear (affine maps of a
    constant image aside, DDCM eq. 10 assumes it) and differentiable by autograd.
    """

    name: str = "custom"

    @abstractmethod
    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) of the restored image for a degraded input of ``size``."""

    def output_channels(self, input_channels: int) -> int:
        """Channels of the restored image (3 for RGB, 1 for L) for an input with ``input_channels``."""
        return input_channels

    @abstractmethod
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for images (N, C, H, W) of the output size; the result has the input's shape."""

    @abstractmethod
    def estimate(self, y: torch.Tensor) -> torch.Tensor:
        """A simple estimate of the clean images (N, C, H, W) from measurements ``y`` (the MMSE stand-in
        ``r(y)`` of DDCM eq. 11-12)."""


@dataclass(frozen=True)
class SuperResolution(Degradation):
    """``A``: bicubic down-sampling by ``factor`` with antialiasing (the 4x bicubic task of DDCM Sec. 6.1)."""

    factor: int = 4
    name: str = "sr4"

    def __post_init__(self) -> None:
        if isinstance(self.factor, bool) or not isinstance(self.factor, int) or not 2 <= self.factor <= 16:
            raise InvalidParameterError(f"Expected a super-resolution factor in [2, 16], got {self.factor!r}")

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return size[0] * self.factor, size[1] * self.factor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2] // self.factor, x.shape[3] // self.factor
        return F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)

    def estimate(self, y: torch.Tensor) -> torch.Tensor:
        size = (y.shape[2] * self.factor, y.shape[3] * self.factor)
        return F.interpolate(y, size=size, mode="bicubic", align_corners=False).clamp(-1.0, 1.0)


@dataclass(frozen=True)
class Colorization(Degradation):
    """``A``: the BT.601 luma of an RGB image (what Pillow's ``convert("L")`` computes); restores RGB from L."""

    name: str = "colorize"

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return size

    def output_channels(self, input_channels: int) -> int:
        return 3

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.tensor(LUMA, dtype=x.dtype, device=x.device)
        return (x * weights[None, :, None, None]).sum(dim=1, keepdim=True)

    def estimate(self, y: torch.Tensor) -> torch.Tensor:
        return y.expand(-1, 3, -1, -1)


def task_for(restore: str | Degradation) -> Degradation:
    """The degradation ``restore=`` names (``"sr4"``, ``"colorize"``) or is."""
    if isinstance(restore, Degradation):
        return restore
    if restore == "sr4":
        return SuperResolution(4)
    if restore == "colorize":
        return Colorization()
    raise InvalidParameterError(f"Unknown restoration task {restore!r}; expected one of {list(TASK_NAMES)} "
                                "or a pillow_diffcodec.restoration.Degradation")


def measurements(image: Image.Image, task: Degradation, channels: int) -> torch.Tensor:
    """The degraded input as the task's measurements ``y`` (1, C, h, w) in [-1, 1]: L for colourisation
    (an RGB input is reduced to its luma first), else the image in the model's ``channels`` (3: RGB, 1: L)."""
    if image.mode not in ("RGB", "L"):
        raise UnsupportedImageError(f"Restoration reads RGB or L images, got mode {image.mode!r}")
    image = image.convert("L" if isinstance(task, Colorization) or channels == 1 else "RGB")
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None] / 127.5 - 1.0
