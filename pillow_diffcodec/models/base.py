"""The interface a diffusion model offers the codecs, and the one place device and dtype defaults live.

A model works in a *sample space* (pixels scaled to [-1, 1] for pixel models; VAE latents for latent
models): ``to_model_space`` takes uint8 image pixels there, ``to_pixels`` brings a sample back, and
``predict_x0`` is the denoiser's clean estimate at a training timestep. ``image_channels`` is what the
codec codes (3 for RGB, 1 for L); ``sample_channels`` is what the sampler and codebooks work on.
"""

from __future__ import annotations

from typing import Protocol

import torch

from ..errors import InvalidParameterError
from ..options import DTYPE_NAMES
from ..schedule import NoiseSchedule

DEFAULT_DEVICE = "cpu"
DEFAULT_DTYPE = torch.float32


class DiffusionModel(Protocol):
    """A denoiser plus its trained noise schedule, as the codecs use it."""

    name: str  # the reference written into files
    device: torch.device
    dtype: torch.dtype
    schedule: NoiseSchedule

    @property
    def fingerprint(self) -> bytes:
        """4 bytes pinning the weights and schedule, so a file is never decoded with another model."""
        ...

    @property
    def image_channels(self) -> int: ...

    @property
    def sample_channels(self) -> int: ...

    def sample_shape(self, width: int, height: int) -> tuple[int, int, int]:
        """Shape (C, H, W) the sampler works in for an image of this size."""
        ...

    def to_model_space(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (image_channels, H, W) -> float32 sample of :meth:`sample_shape`."""
        ...

    def to_pixels(self, sample: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """float32 sample -> uint8 pixels (image_channels, height, width)."""
        ...

    def to_image_space(self, samples: torch.Tensor) -> torch.Tensor:
        """Samples (N, C, H', W') -> images (N, image_channels, H'', W'') scaled to [-1, 1], not rounded and
        differentiable (for losses measured on the image, DDCM Sec. 6), padded as :meth:`sample_shape`."""
        ...

    def predict_x0(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """Clean estimate (float32) for one noisy sample at training timestep ``t``."""
        ...

    def predict_x0_batch(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """Clean estimates (float32) for a batch (B, C, H, W) of noisy samples at timestep ``t``, in one call."""
        ...


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``device`` (None: the default) as a torch device that exists here, or InvalidParameterError saying why not."""
    if isinstance(device, torch.device):
        resolved = device
    else:
        try:
            resolved = torch.device(device or DEFAULT_DEVICE)
        except (RuntimeError, TypeError, ValueError):
            raise InvalidParameterError(
                f"Expected a torch device such as 'cpu', 'cuda' or 'cuda:1', got {device!r}"
            ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidParameterError(
                f"Device {str(resolved)!r} was asked for, but this torch build ({torch.__version__}) has no usable "
                "CUDA device; use device='cpu' or install a CUDA build of torch"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InvalidParameterError(
                f"Device {str(resolved)!r} does not exist: {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidParameterError("Device 'mps' was asked for, but MPS is not available here; use device='cpu'")
    return resolved


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``dtype`` (None: float32) as a torch dtype the models support."""
    if dtype is None:
        return DEFAULT_DTYPE
    if isinstance(dtype, torch.dtype) and str(dtype).removeprefix("torch.") in DTYPE_NAMES:
        return dtype
    if isinstance(dtype, str) and dtype in DTYPE_NAMES:
        return getattr(torch, dtype)
    raise InvalidParameterError(f"Expected dtype in {list(DTYPE_NAMES)}, got {dtype!r}")


def place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """``module`` moved to ``device`` and ``dtype`` by :meth:`torch.nn.Module.to` itself: diffusers' override
    logs a warning about modules "to keep in float32" on every dtype cast, even when there are none."""
    return torch.nn.Module.to(module, device=device, dtype=dtype)
