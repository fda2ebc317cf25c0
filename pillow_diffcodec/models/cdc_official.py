"""Loading the official CDC checkpoints' denoiser (github.com/buggyyang/CDC_compression).

The official checkpoints are ``torch.save`` dicts; for the x-parameterisation they hold ``"model"`` and
``"ema"`` (an ``ema_pytorch.EMA`` state whose ``ema_model.`` entries are the averaged weights), for the
epsilon-parameterisation the model only (README of the repository). The wrapped model is their
``GaussianDiffusion`` with two children: ``denoise_fn`` (a U-Net) and ``context_fn`` (a ResNet
compressor with a hyperprior).

:class:`OfficialUnet` re-expresses the U-Net of ``epsilonparam/modules/unet.py`` with the same
parameter names, configurable widths (``dim``, ``dim_mults``, ``context_dim_mults``), so its weights
load without renaming: per resolution two ResNet blocks (conv + channel LayerNorm + ReLU, a time
projection between), linear attention with a pre-norm, and a strided conv; the context of level i is
concatenated before the first block. Time enters as a scalar in [0, 1] through ``Linear(1, 4 dim)``.

Not mapped: ``context_fn``. Its source (``modules/compress_modules.py``) is not in the public
repository, so its parameter layout cannot be checked; :func:`split_checkpoint` returns those entries
untouched, and our own transform (:mod:`pillow_diffcodec.learned_transform`) is a different
architecture. Running a complete official model therefore still needs their compressor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError

EMA_PREFIX = "ema_model."
PARAMETERISATIONS = ("x", "eps")


class ChannelNorm(nn.Module):
    """LayerNorm over channels with gain ``g`` and bias ``b`` of shape (1, C, 1, 1) (their ``LayerNorm``)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.b = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) / (var + self.eps).sqrt() * self.g + self.b


class ConvNormReLU(nn.Module):
    """``block``: conv (7x7 in the first level's first block, else 3x3), channel norm, ReLU."""

    def __init__(self, dim: int, dim_out: int, large: bool = False) -> None:
        super().__init__()
        k = 7 if large else 3
        self.block = nn.Sequential(nn.Conv2d(dim, dim_out, k, padding=k // 2), ChannelNorm(dim_out), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class OfficialResBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_dim: int, large: bool = False) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(time_dim, dim_out))
        self.block1 = ConvNormReLU(dim, dim_out, large)
        self.block2 = ConvNormReLU(dim_out, dim_out)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x) + self.mlp(temb)[:, :, None, None]
        return self.block2(h) + self.res_conv(x)


class LinearAttention(nn.Module):
    """Single-head linear attention (softmax over positions of k), ``to_qkv`` (no bias) and ``to_out``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.to_qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.to_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, c, h * w) for t in self.to_qkv(x).chunk(3, dim=1))
        context = torch.einsum("bdn,ben->bde", k.softmax(dim=-1), v)
        out = torch.einsum("bde,bdn->ben", context, q * self.scale)
        return self.to_out(out.reshape(b, c, h, w))


class PreNormAttention(nn.Module):
    """``Residual(PreNorm(dim, LinearAttention(dim)))``: parameters ``fn.norm.*`` and ``fn.fn.*``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fn = nn.Module()
        self.fn.norm = ChannelNorm(dim)
        self.fn.fn = LinearAttention(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn.fn(self.fn.norm(x)) + x


class Resample(nn.Module):
    """Their ``Downsample`` (3x3 stride-2 conv) or ``Upsample`` (4x4 stride-2 transposed conv), as ``conv``."""

    def __init__(self, dim: int, up: bool) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(dim, dim, 4, 2, 1) if up else nn.Conv2d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class OfficialUnet(nn.Module):
    """The official CDC denoiser with their parameter names (``time_mlp``, ``downs``, ``mid_*``, ``ups``, ``final_conv``)."""

    def __init__(self, dim: int = 64, dim_mults: Sequence[int] = (1, 2, 3, 4, 5, 6),
                 context_dim_mults: Sequence[int] = (1, 2, 3, 4), channels: int = 3, context_channels: int = 64) -> None:
        super().__init__()
        dims = [channels, *(dim * m for m in dim_mults)]
        context_dims = [context_channels, *(dim * m for m in context_dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        self.time_mlp = nn.Sequential(nn.Linear(1, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.downs = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(in_out):
            last = i == len(in_out) - 1
            with_context = not last and i < len(context_dims) - 1
            self.downs.append(nn.ModuleList([
                OfficialResBlock(d_in + context_dims[i] if with_context else d_in, d_out, dim, large=i == 0),
                OfficialResBlock(d_out, d_out, dim),
                PreNormAttention(d_out),
                Resample(d_out, up=False) if not last else nn.Identity(),
            ]))
        mid = dims[-1]
        self.mid_block1 = OfficialResBlock(mid, mid, dim)
        self.mid_attn = PreNormAttention(mid)
        self.mid_block2 = OfficialResBlock(mid, mid, dim)
        self.ups = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(reversed(in_out[1:])):
            last = i >= len(in_out) - 1
            self.ups.append(nn.ModuleList([
                OfficialResBlock(2 * d_out, d_in, dim),
                OfficialResBlock(d_in, d_in, dim),
                PreNormAttention(d_in),
                Resample(d_in, up=True) if not last else nn.Identity(),
            ]))
        self.final_conv = nn.Sequential(ChannelNorm(dim), nn.Conv2d(dim, channels, 7, padding=3))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: Sequence[torch.Tensor]) -> torch.Tensor:
        """Output (x0 or epsilon, by the checkpoint's parameterisation) for x (B, C, H, W), t (B,) in [0, 1]
        and the compressor's context features, finest first (level i concatenated before level i's blocks)."""
        temb = self.time_mlp(t.float().view(-1, 1))
        skips = []
        for i, (block1, block2, attn, down) in enumerate(self.downs):
            if i < len(context):
                x = torch.cat([x, context[i]], dim=1)
            x = attn(block2(block1(x, temb), temb))
            skips.append(x)
            x = down(x)
        x = self.mid_block2(self.mid_attn(self.mid_block1(x, temb)), temb)
        for block1, block2, attn, up in self.ups:
            x = up(attn(block2(block1(torch.cat([x, skips.pop()], dim=1), temb), temb)))
        return self.final_conv(x)


def split_checkpoint(checkpoint: Mapping[str, Any], use_ema: bool = True) -> tuple[dict[str, torch.Tensor],
                                                                                    dict[str, torch.Tensor]]:
    """(``denoise_fn`` state, ``context_fn`` state) of an official checkpoint, from its EMA weights when
    present and ``use_ema`` (the x-param files), else from ``"model"`` (or a bare state dict)."""
    if use_ema and "ema" in checkpoint:
        state = {k.removeprefix(EMA_PREFIX): v for k, v in checkpoint["ema"].items() if k.startswith(EMA_PREFIX)}
    elif "model" in checkpoint:
        state = dict(checkpoint["model"])
    else:
        state = dict(checkpoint)
    denoise = {k.removeprefix("denoise_fn."): v for k, v in state.items() if k.startswith("denoise_fn.")}
    context = {k.removeprefix("context_fn."): v for k, v in state.items() if k.startswith("context_fn.")}
    if not denoise:
        raise InvalidParameterError(
            "Not an official CDC checkpoint: no 'denoise_fn.' weights (expected keys 'ema' with 'ema_model.denoise_fn.*' "
            f"or 'model' with 'denoise_fn.*'); top-level keys: {sorted(checkpoint)[:8]}")
    return denoise, context


def load_official_denoiser(checkpoint: Mapping[str, Any] | str, *, use_ema: bool = True, **config: Any) -> OfficialUnet:
    """An :class:`OfficialUnet` (widths from ``config``, defaults: the released image models) holding a
    checkpoint's denoiser weights; a path is read with ``torch.load`` on the CPU."""
    if isinstance(checkpoint, str):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=False)
    denoise, _ = split_checkpoint(checkpoint, use_ema)
    unet = OfficialUnet(**config)
    try:
        unet.load_state_dict(denoise)
    except RuntimeError as exc:
        raise InvalidParameterError(f"Checkpoint does not fit OfficialUnet({config}): {str(exc).splitlines()[0]} "
                                    "(give the widths it was trained with)") from None
    return unet.eval()


def predict_x0(output: torch.Tensor, x_t: torch.Tensor, abar_t: torch.Tensor, parameterisation: str) -> torch.Tensor:
    """Clean estimate from the denoiser's output: x-param returns it, eps-param gives
    ``(x_t - sqrt(1 - abar) eps) / sqrt(abar)``."""
    if parameterisation not in PARAMETERISATIONS:
        raise InvalidParameterError(f"Expected parameterisation in {PARAMETERISATIONS}, got {parameterisation!r}")
    if parameterisation == "x":
        return output
    abar = abar_t.view(-1, 1, 1, 1)
    return (x_t - (1 - abar).sqrt() * output) / abar.sqrt().clamp_min(1e-8)


__all__ = ["OfficialUnet", "load_official_denoiser", "predict_x0", "split_checkpoint"]
