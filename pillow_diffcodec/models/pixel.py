"""Pixel-space diffusion models: a diffusers ``UNet2DModel`` plus its DDPM schedule.

Loads the two local layouts a pixel DDPM comes in:

* a pipeline folder written by ``DDPMPipeline.save_pretrained``: ``model_index.json``,
  ``unet/`` (config + weights) and ``scheduler/scheduler_config.json``;
* the flat layout of the published google/ddpm-* checkpoints: ``config.json``,
  ``diffusion_pytorch_model.{safetensors,bin}`` and ``scheduler_config.json`` side by side.

An optional ``diffcodec.json`` beside them may set ``pixel_unshuffle`` (f): the UNet then sees
``pixel_unshuffle(x, f)`` (f*f*C channels at 1/f resolution) and its output is shuffled back, which
is how the built-in model stays fast on CPU while the diffusion runs in pixel space; and
``equalize_subpixel_means`` (see :func:`equalize_subpixel_means`).
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelNotFoundError, UnsupportedImageError
from ..schedule import NoiseSchedule
from .base import DEFAULT_DTYPE, place, resolve_device

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _read_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def find_pixel_layout(directory: Path) -> tuple[Path, Path] | None:
    """(unet folder, scheduler config file) of a pixel DDPM in ``directory``, or None if it is not one."""
    for unet_dir, scheduler_file in (
        (directory / "unet", directory / "scheduler" / "scheduler_config.json"),
        (directory, directory / "scheduler_config.json"),
    ):
        has_weights = any((unet_dir / name).is_file() for name in WEIGHT_FILES)
        if (unet_dir / "config.json").is_file() and has_weights and scheduler_file.is_file():
            return unet_dir, scheduler_file
    return None


def equalize_subpixel_means(x0: torch.Tensor, factor: int) -> torch.Tensor:
    """Give the f x f sub-pixel positions of ``x0`` (C, H, W) one mean per channel.

    Why (issue 27): an epsilon-predicting UNet on ``pixel_unshuffle``-d images outputs each sub-pixel
    position as its own channel, and a small bias between those channels (about 0.01 in epsilon, within
    the training loss's noise) becomes ``sqrt(1 - abar_t) / sqrt(abar_t)`` times larger in the clean
    estimate ``x0hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` (DDPM eq. 15): 50-130 grey levels at
    t > 750. DDCM's chain adds ``c0 x0hat`` to every step, so decodes carried an image-wide offset between
    even and odd columns and rows (5 levels on a Kodak crop at 0.1 bpp, a visible one-pixel stripe).
    Natural images have the same mean at every sub-pixel position (Kodak crops: within 0.2 levels), so
    the estimate is projected onto that: each position's spatial mean is replaced by the mean over positions.
    """
    channels, height, width = x0.shape
    cells = torch.nn.functional.pixel_unshuffle(x0[None], factor)[0].view(channels, factor * factor, -1)
    means = cells.mean(dim=2, keepdim=True)
    cells = cells - means + means.mean(dim=1, keepdim=True)
    return torch.nn.functional.pixel_shuffle(cells.reshape(1, -1, height // factor, width // factor), factor)[0]


class PixelDiffusionModel:
    """A DDPM denoiser in pixel space with images scaled to [-1, 1] (a :class:`~.base.DiffusionModel`).

    ``name`` is the reference written into files: a registry name, or the directory it was loaded
    from. ``fingerprint`` pins the weights and the schedule, so a file is never decoded with a
    different model by accident.
    """

    def __init__(
        self,
        unet: Any,
        schedule: NoiseSchedule,
        name: str,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = DEFAULT_DTYPE,
        pixel_unshuffle: int = 1,
        equalize_subpixel_means: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        self.pixel_unshuffle = pixel_unshuffle
        self.equalize_subpixel_means = equalize_subpixel_means and pixel_unshuffle > 1
        self.dtype = dtype
        self.unet = place(unet, self.device, dtype).eval().requires_grad_(False)
        self.schedule = schedule
        self.name = name

    @classmethod
    def from_directory(
        cls,
        directory: str | Path,
        *,
        name: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = DEFAULT_DTYPE,
    ) -> PixelDiffusionModel:
        """Load a local pipeline folder or google/ddpm-* style folder (no network access)."""
        from diffusers import UNet2DModel

        directory = Path(directory).expanduser().resolve()
        layout = find_pixel_layout(directory)
        if layout is None:
            raise ModelNotFoundError(
                f"No pixel diffusion model in {str(directory)!r}: expected unet/ + scheduler/scheduler_config.json "
                "(DDPMPipeline.save_pretrained) or config.json + diffusion_pytorch_model.* + scheduler_config.json"
            )
        unet_dir, scheduler_file = layout
        # low_cpu_mem_usage=False: the small models load fast without `accelerate` (and without its warning)
        unet = UNet2DModel.from_pretrained(str(unet_dir), local_files_only=True, low_cpu_mem_usage=False)
        schedule = NoiseSchedule.from_config(_read_json(scheduler_file))
        extra = _read_json(directory / "diffcodec.json") if (directory / "diffcodec.json").is_file() else {}
        return cls(
            unet, schedule, name or str(directory), device=device, dtype=dtype,
            pixel_unshuffle=int(extra.get("pixel_unshuffle", 1)),
            equalize_subpixel_means=bool(extra.get("equalize_subpixel_means", False)),
        )

    @property
    def image_channels(self) -> int:
        return int(self.unet.config.in_channels) // self.pixel_unshuffle**2

    @property
    def sample_channels(self) -> int:
        """Pixel space: the sampler works on the image channels themselves."""
        return self.image_channels

    @property
    def size_multiple(self) -> int:
        """Image sides are padded to a multiple of this (the unshuffle factor times 2 per down-sampling block)."""
        return self.pixel_unshuffle * 2 ** (len(self.unet.config.block_out_channels) - 1)

    @cached_property
    def fingerprint(self) -> bytes:
        """4-byte BLAKE2b digest of the schedule and the float32 weights in sorted-name order."""
        digest = hashlib.blake2b(digest_size=4)
        digest.update(self.schedule.canonical_bytes())
        if self.pixel_unshuffle != 1:
            digest.update(f"pixel_unshuffle={self.pixel_unshuffle}".encode())
        if self.equalize_subpixel_means:
            digest.update(b"|equalize_subpixel_means")
        for key, tensor in sorted(self.unet.state_dict().items()):
            values = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous()
            digest.update(f"{key}:{tuple(values.shape)}".encode())
            digest.update(values.numpy().tobytes())
        return digest.digest()

    def sample_shape(self, width: int, height: int) -> tuple[int, int, int]:
        """Shape (C, H, W) the sampler works in for an image of this size (padded to ``size_multiple``)."""
        m = self.size_multiple
        return self.sample_channels, math.ceil(height / m) * m, math.ceil(width / m) * m

    def to_model_space(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (C, H, W) -> float32 sample (C, H', W') in [-1, 1], reflect-padded to the model's multiple."""
        if pixels.shape[0] != self.image_channels:
            raise UnsupportedImageError(
                f"Model {self.name!r} codes {self.image_channels}-channel images, got {pixels.shape[0]}"
            )
        x = pixels.to(device=self.device, dtype=torch.float32) / 127.5 - 1.0
        _, height, width = self.sample_shape(pixels.shape[2], pixels.shape[1])
        pad_h, pad_w = height - pixels.shape[1], width - pixels.shape[2]
        if pad_h or pad_w:
            mode = "reflect" if pad_h < x.shape[1] and pad_w < x.shape[2] else "replicate"
            x = torch.nn.functional.pad(x[None], (0, pad_w, 0, pad_h), mode=mode)[0]
        return x

    def to_pixels(self, sample: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """float32 sample (C, H', W') in [-1, 1] -> uint8 pixels (C, height, width), cropped."""
        x = sample[:, :height, :width]
        return ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)

    def to_image_space(self, samples: torch.Tensor) -> torch.Tensor:
        """Pixel samples are images already: (N, C, H', W') in [-1, 1], returned as they are."""
        return samples

    def predict_x0(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """Clean estimate ``x0hat`` (float32) for one noisy sample (C, H, W) at training timestep t."""
        return self.predict_x0_batch(x_t[None], t)[0]

    @torch.inference_mode()
    def predict_x0_batch(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """Clean estimates (float32) for a batch of noisy samples (B, C, H, W) in one UNet call; sample by
        sample the same arithmetic as B calls of one, though the kernels may sum in another order."""
        x = x_t.to(self.dtype)
        if self.pixel_unshuffle != 1:
            x = torch.nn.functional.pixel_unshuffle(x, self.pixel_unshuffle)
        output = self.unet(x, torch.full((x.shape[0],), t, device=self.device)).sample
        if self.pixel_unshuffle != 1:
            output = torch.nn.functional.pixel_shuffle(output, self.pixel_unshuffle)
        x0 = self.schedule.predict_x0(output.to(torch.float32), x_t, t, clip=False)
        if self.equalize_subpixel_means:
            x0 = torch.stack([equalize_subpixel_means(one, self.pixel_unshuffle) for one in x0])
        return self.schedule.clip(x0)
