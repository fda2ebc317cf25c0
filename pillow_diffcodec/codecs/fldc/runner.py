"""FLDC: lossy image compression with foundation (latent) diffusion models (Relic et al., ECCV 2024).

Algorithm 1. Encoding: ``y = E_vae(x)`` (the frozen base model's latent), ``gamma, t = P_phi(y, lambda)``,
``z = T(y, gamma)`` quantised on the hyperprior's mean-shifted grid and range-coded with constriction
from the model's integer tables (CDC's machinery, :mod:`pillow_diffcodec.learned_transform`), with
``gamma``, ``t`` and lambda as float32 side information. Decoding: ``y_hat = T^-1(z_hat, gamma)``, then
DDIM (eta = 0, :func:`pillow_diffcodec.schedule.ddim_step`) on the frozen UNet from the continuous
timestep ``tau = t (N - 1)`` down to 0 in ``ceil(100 t)`` steps, starting from ``sqrt(abar(tau)) y_hat``
(the quantised latent scaled as the forward process scales a clean one; the paper starts from ``y_hat``),
then ``D_vae``. Everything is deterministic: the encoder's reconstruction is the decoder's output, made
by the same function from the payload bytes.

Rate control: ``bpp=``/``quality=`` give a payload budget (whole file at most ``bpp``, header included);
the encoder tries lambda = ``lam`` (default: the model's largest) and, when that payload is too large,
searches lambda downwards (bisection in log lambda, every candidate coded for real) and keeps the
largest that fits: ``bpp=`` is an upper bound of the file size, unless even the model's smallest lambda
does not fit (then a :class:`~pillow_diffcodec.errors.RateFallbackWarning` says so).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ...errors import InvalidParameterError, RateFallbackWarning
from ...models import check_kind
from ...options import rate_target
from ...schedule import ddim_step
from ..base import Progress
from ..cdc.runner import code_with_hyperprior, decode_with_hyperprior
from .format import FLDCParams, Gamma, Payload, decode_steps, float32
from .format import payload_bound as _payload_bound
from .model import FLDCModel
from .network import FLDCNetwork, alpha_bar_exact, inverse_transform, pad_latent, predict_x0, transform

__all__ = ["FLDCParams", "choose_params", "decode", "encode_batch", "payload_bound"]
HYPER_MULTIPLE = 4  # the hyperprior halves the latent twice
SEARCH_STEPS = 7  # bisection steps of the lambda search


def _model(model: Any) -> FLDCModel:
    check_kind(model, "fldc", "FLDC")
    return model


def latent_multiple(base: Any) -> int:
    """Latents are padded to multiples of this (the hyperprior's 4 and the UNet's down-sampling)."""
    unet = int(getattr(base, "unet_factor", 1))
    return HYPER_MULTIPLE * unet // math.gcd(HYPER_MULTIPLE, unet)


def latent_size(model: FLDCModel, width: int, height: int) -> tuple[int, int]:
    """(width, height) of the padded latent of an image of this size."""
    _, h, w = model.base.sample_shape(width, height)
    m = latent_multiple(model.base)
    return -(-w // m) * m, -(-h // m) * m


def choose_params(
    model: Any, given: dict[str, Any], bpp: float | None, quality: float | None,
    header_size: Callable[[FLDCParams], int], width: int, height: int, images: Sequence[torch.Tensor] = (),
) -> FLDCParams:
    """``lam`` and ``max_bytes`` as given, or for ``bpp=``/``quality=``: the model's largest lambda (or ``lam``
    when given) with the payload budget that keeps the whole file within the rate."""
    fldc = _model(model)
    wanted = rate_target(bpp, quality, bool(given))
    if wanted is None:
        return FLDCParams.from_dict(given)
    if "max_bytes" in given:
        raise InvalidParameterError("Give max_bytes or a rate (bpp=/quality=), not both")
    lam = given.get("lam", fldc.lambda_range[1])
    total = int(math.floor(wanted.bpp * width * height / 8))
    budget = max(1, total - header_size(FLDCParams(lam, max(1, total))))
    return FLDCParams(lam, budget)


def payload_bound(params: FLDCParams, model: Any, width: int, height: int) -> int:
    """The largest payload any image of this size can give (every symbol at the range coder's worst cost)."""
    fldc = _model(model)
    arch = fldc.network.arch
    return _payload_bound(arch.latent, arch.hyper, *latent_size(fldc, width, height))


def image_latent(fldc: FLDCModel, image: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) -> the base model's latent (1, C, H', W'), padded to :func:`latent_multiple`."""
    return pad_latent(fldc.base.to_model_space(image)[None], latent_multiple(fldc.base))


@torch.no_grad()
def predict_gamma(network: FLDCNetwork, y: torch.Tensor, lam: float) -> Gamma:
    """P_phi's output for one latent, rounded to the float32 values the file stores."""
    lam = float32(lam)
    log_scale, shift, t = network.estimator(y, torch.tensor([lam], device=y.device))
    return Gamma(lam, tuple(float32(v) for v in log_scale[0].tolist()), tuple(float32(v) for v in shift[0].tolist()),
                 float32(t[0].item()))


def _gamma_tensors(gamma: Gamma, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor([gamma.log_scale], dtype=torch.float32, device=device),
            torch.tensor([gamma.shift], dtype=torch.float32, device=device))


@torch.no_grad()
def code_latent(network: FLDCNetwork, y: torch.Tensor, gamma: Gamma) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Quantise ``T(y, gamma)`` and range-code it: (payload, hyper-latent symbols, latent symbols)."""
    z = transform(y, *_gamma_tensors(gamma, y.device))
    streams, _, h_np, z_np = code_with_hyperprior(network.entropy_tables(), network.hyperprior, z)
    return Payload(gamma, streams).to_bytes(), h_np, z_np


@torch.no_grad()
def decode_latent(fldc: FLDCModel, payload: bytes, width: int, height: int) -> tuple[torch.Tensor, Gamma, np.ndarray]:
    """A payload -> (y_hat = T^-1(z_hat, gamma) (1, C, H', W'), gamma, latent symbols); checks both CRCs."""
    network = fldc.network
    arch = network.arch
    lw, lh = latent_size(fldc, width, height)
    parsed = Payload.from_bytes(payload, arch.latent, _payload_bound(arch.latent, arch.hyper, lw, lh) // 4)
    h_shape = (arch.hyper, lh // HYPER_MULTIPLE, lw // HYPER_MULTIPLE)
    z_hat, _, z_np = decode_with_hyperprior(
        network.entropy_tables(), network.hyperprior, parsed.streams, h_shape, fldc.device, "FLDC")
    return inverse_transform(z_hat, *_gamma_tensors(parsed.gamma, fldc.device)), parsed.gamma, z_np


@torch.inference_mode()
def denoise(fldc: FLDCModel, y_hat: torch.Tensor, t: float, progress: Progress | None = None) -> torch.Tensor:
    """Algorithm 1's loop: DDIM from tau = t (N - 1) to 0 in ``ceil(100 t)`` frozen-UNet calls, from
    ``sqrt(abar(tau)) y_hat``; returns the clean latent (``y_hat`` itself when t = 0)."""
    base = fldc.base
    steps = decode_steps(t)
    if steps == 0:
        return y_hat
    alphas = base.schedule.alphas_cumprod
    tau0 = float(t) * (alphas.shape[0] - 1)
    taus = [tau0 * (1.0 - k / steps) for k in range(steps)]
    x = math.sqrt(alpha_bar_exact(alphas, tau0)) * y_hat
    x0 = y_hat
    for k, tau in enumerate(taus):
        abar = alpha_bar_exact(alphas, tau)
        x0 = predict_x0(base, x, torch.tensor([tau], dtype=torch.float32, device=x.device),
                        torch.tensor([abar], dtype=torch.float32, device=x.device))
        if progress is not None:
            progress(k + 1, steps)
        if k + 1 < steps:
            x = ddim_step(x, x0, abar, alpha_bar_exact(alphas, taus[k + 1]))
    return x0


def synthesise(fldc: FLDCModel, y_hat: torch.Tensor, t: float, width: int, height: int,
               progress: Progress | None = None) -> torch.Tensor:
    """Denoise and decode with the VAE: uint8 pixels (3, height, width)."""
    y0 = denoise(fldc, y_hat, t, progress)
    _, lh, lw = fldc.base.sample_shape(width, height)
    return fldc.base.to_pixels(y0[0, :, :lh, :lw], width, height).cpu()


def _fit_lambda(fldc: FLDCModel, y: torch.Tensor, params: FLDCParams) -> bytes:
    """The payload at ``params.lam``, or with a budget at the largest lambda <= it whose payload fits."""
    network = fldc.network

    def coded(lam: float) -> bytes:
        return code_latent(network, y, predict_gamma(network, y, lam))[0]

    payload = coded(params.lam)
    if not params.max_bytes or len(payload) <= params.max_bytes:
        return payload
    low = min(fldc.lambda_range[0], params.lam)
    best = coded(low)
    if len(best) > params.max_bytes:
        warnings.warn(
            f"The payload budget of {params.max_bytes} bytes is below what model {fldc.name!r} gives at its smallest "
            f"lambda {low:g} ({len(best)} bytes); using it", RateFallbackWarning, stacklevel=3)
        return best
    lo, hi = math.log(low), math.log(params.lam)
    for _ in range(SEARCH_STEPS):
        mid = (lo + hi) / 2
        candidate = coded(math.exp(mid))
        if len(candidate) <= params.max_bytes:
            lo, best = mid, candidate
        else:
            hi = mid
    return best


def encode_batch(
    model: Any, params: FLDCParams, seed: int, pixels: Sequence[torch.Tensor], progress: Progress | None = None,
) -> list[tuple[bytes, torch.Tensor]]:
    """Encode uint8 images (3, H, W) one by one; returns (payload, the decoder's output) each, the
    reconstruction made by :func:`decode`'s own path from the payload."""
    fldc = _model(model)
    out = []
    for image in pixels:
        height, width = image.shape[1:]
        payload = _fit_lambda(fldc, image_latent(fldc, image), params)
        out.append((payload, decode(fldc, params, seed, width, height, payload, progress)))
    return out


def decode(
    model: Any, params: FLDCParams, seed: int, width: int, height: int, payload: bytes,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Payload -> uint8 pixels (3, height, width): dequantise, DDIM from the stored t, VAE-decode."""
    fldc = _model(model)
    y_hat, gamma, _ = decode_latent(fldc, payload, width, height)
    return synthesise(fldc, y_hat, gamma.t, width, height, progress)


@torch.no_grad()
def estimate_bits(network: FLDCNetwork, base: Any, x: torch.Tensor, lam: float) -> float:
    """Estimated bits (rounded latents, likelihoods of the tables' continuous model) of one image in [-1, 1]
    (1, 3, H, W), for training reports; no side information."""
    from ...learned_transform import gaussian_likelihood

    y = pad_latent(base.vae.encode(x).latent_dist.mean * float(base.vae.config.scaling_factor), HYPER_MULTIPLE)
    gamma = predict_gamma(network, y, lam)
    z = transform(y, *_gamma_tensors(gamma, y.device))
    h = torch.round(network.hyperprior.h_a(z))
    mean, scale = network.hyperprior.params(h)
    z_hat = mean + torch.round(z - mean)
    bits = -torch.log2(gaussian_likelihood(z_hat, mean, scale)).sum()
    bits = bits - torch.log2(network.hyperprior.prior.likelihood(h)).sum()
    return float(bits)
