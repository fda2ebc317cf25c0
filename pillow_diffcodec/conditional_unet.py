"""The conditional diffusion decoder of the trained codecs (CDC, CorrDiff): a U-Net conditioned on the
latent, and its DDIM sampler (moved here from ``codecs/cdc/decoder.py`` when CorrDiff came to share it).

Yang & Mandt, "Lossy image compression with conditional diffusion models" (NeurIPS 2023), Sec. 3 and
App. B: the decoder is a denoising U-Net whose first units receive the upsampled latent ``y_hat``. Here a
context network turns ``y_hat`` (1/16 resolution) into embeddings at 1/8, 1/4 and 1/2 resolution that
are added to the U-Net's down path; the noisy image enters 2x2 pixel-unshuffled (12 channels at 1/2
resolution) together with the 1/2-resolution embedding. The network predicts the clean image
(x0-parameterisation, the paper's "X-param"), with continuous time t in [0, 1] and the cosine schedule
of Nichol & Dhariwal 2021: ``abar(t) = cos^2(pi/2 (t + s) / (1 + s))``, s = 0.008.

Decoding is DDIM (Song et al. 2021, eq. 12 with eta = 0) from ``x_1 ~ N(0, gamma^2 I)``: gamma = 0 is
the deterministic decoder of the paper's distortion results, gamma > 0 a stochastic one (the paper uses
0.8 for perceptual quality). Its noise is passed in by the caller (portable, from the file's seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .schedule import ddim_step

COSINE_OFFSET = 0.008
TIME_FEATURES = 64


def alpha_bar(t: torch.Tensor) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17) at continuous time t in [0, 1], normalised to abar(0) = 1."""
    f = torch.cos((t + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
    f0 = math.cos(COSINE_OFFSET / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
    return (f / f0).clamp(0.0, 1.0)


def time_embedding(t: torch.Tensor, features: int = TIME_FEATURES) -> torch.Tensor:
    """Sinusoidal features of 1000 t (Vaswani et al. 2017 / Ho et al. 2020), shape (B, features)."""
    half = features // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class TimeResBlock(nn.Module):
    """A residual block whose first activation is shifted by a projection of the time embedding."""

    def __init__(self, channels: int, temb: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.time = nn.Linear(temb, channels)
        self.norm2 = nn.GroupNorm(8, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.time(temb)[:, :, None, None]
        return x + self.conv2(F.silu(self.norm2(h)))


class ContextNet(nn.Module):
    """Latent ``y_hat`` (1/16) -> embeddings at 1/8, 1/4, 1/2 resolution (the U-Net's widths, deepest first)."""

    def __init__(self, latent: int, widths: tuple[int, int, int]) -> None:
        super().__init__()
        ins = (latent, widths[2], widths[1])
        outs = (widths[2], widths[1], widths[0])
        self.ups = nn.ModuleList(nn.Conv2d(i, 4 * o, 3, padding=1) for i, o in zip(ins, outs))
        self.mix = nn.ModuleList(nn.Conv2d(o, o, 3, padding=1) for o in outs)

    def forward(self, y_hat: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], y_hat
        for up, mix in zip(self.ups, self.mix):
            h = F.pixel_shuffle(up(h), 2)
            h = h + mix(F.gelu(h))
            out.append(h)
        return out  # [1/8, 1/4, 1/2]


class ConditionalUNet(nn.Module):
    """x0-predicting U-Net over 2x2-unshuffled images, conditioned on the latent (CDC App. B)."""

    def __init__(self, latent: int, widths: tuple[int, int, int]) -> None:
        super().__init__()
        c1, c2, c3 = widths
        temb = 4 * TIME_FEATURES
        self.temb = nn.Sequential(nn.Linear(TIME_FEATURES, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.context = ContextNet(latent, widths)
        self.stem = nn.Conv2d(12 + c1, c1, 3, padding=1)
        self.down1 = TimeResBlock(c1, temb)
        self.pool1 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.down2 = TimeResBlock(c2, temb)
        self.pool2 = nn.Conv2d(c2, c3, 3, stride=2, padding=1)
        self.mid1 = TimeResBlock(c3, temb)
        self.mid2 = TimeResBlock(c3, temb)
        self.up2 = nn.Conv2d(c3, c2, 3, padding=1)
        self.dec2 = TimeResBlock(c2, temb)
        self.up1 = nn.Conv2d(c2, c1, 3, padding=1)
        self.dec1 = TimeResBlock(c1, temb)
        self.out = nn.Conv2d(c1, 12, 3, padding=1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        """Clean-image estimate (B, 3, H, W) from the noisy image, time (B,) and latent (B, latent, H/16, W/16)."""
        temb = self.temb(time_embedding(t))
        ctx8, ctx4, ctx2 = self.context(y_hat)
        h1 = self.down1(self.stem(torch.cat([F.pixel_unshuffle(x_t, 2), ctx2], dim=1)), temb)
        h2 = self.down2(self.pool1(h1) + ctx4, temb)
        h3 = self.mid2(self.mid1(self.pool2(h2) + ctx8, temb), temb)
        u2 = self.dec2(self.up2(F.interpolate(h3, scale_factor=2.0, mode="nearest")) + h2, temb)
        u1 = self.dec1(self.up1(F.interpolate(u2, scale_factor=2.0, mode="nearest")) + h1, temb)
        return F.pixel_shuffle(self.out(F.silu(u1)), 2)


def ddim_times(steps: int) -> list[float]:
    """The sampler's time grid: ``steps`` model calls at t = 1, (steps-1)/steps, ..., 1/steps, ending at t = 0."""
    return [1.0 - k / steps for k in range(steps + 1)]


def ddim_decode(
    unet: ConditionalUNet, y_hat: torch.Tensor, x_start: torch.Tensor, steps: int,
    on_call: Callable[[], None] | None = None,
) -> torch.Tensor:
    """DDIM with eta = 0 (Song et al. 2021, eq. 12; :func:`pillow_diffcodec.schedule.ddim_step`) in the
    x0-parameterisation, from ``x_start`` at t = 1; the last step returns ``x0_hat``, in [-1, 1].
    """
    times = ddim_times(steps)
    x = x_start
    batch = x.shape[0]
    x0 = x
    for t, s in zip(times[:-1], times[1:]):
        t_vec = torch.full((batch,), t, dtype=torch.float32, device=x.device)
        x0 = unet(x, t_vec, y_hat).clamp(-1.0, 1.0)
        if on_call is not None:
            on_call()
        if s <= 0.0:
            break
        x = ddim_step(x, x0, alpha_bar(torch.tensor(t)).item(), alpha_bar(torch.tensor(s)).item())
    return x0
