"""CorrDiff: diffusion-based compression corrected by a privileged end-to-end decoder (Ma, Yang & Liu, ICML 2024).

The latent ``y_hat`` is CDC's (learned transform + mean-scale hyperprior, range-coded with the integer
tables of the model; :mod:`pillow_diffcodec.codecs.cdc.runner`). Next to the conditional score network
``mu_theta`` (x0-prediction, :mod:`pillow_diffcodec.conditional_unet`) the model has an ordinary
end-to-end decoder D on the same latent, and ``x0_e = D(y_hat)`` is computed once.

Encoder (Algorithm 1, DDIM): from ``x_T = n`` (portable unit Gaussian noise drawn from the file's seed,
codebook stream :data:`NOISE_STEP`), at each of the ``steps`` DDIM steps the encoder, which sees the
original ``x0*``, takes ``x0_hat_t = mu_theta(x_t, y_hat, t)`` and

    gamma_t* = argmin_gamma M(x0*, gamma x0_hat_t + (1 - gamma) x0_e)              (Eq. 20)

then continues the step with the corrected estimate ``x0_c = gamma_t* x0_hat_t + (1 - gamma_t*) x0_e``
(the corrected score of Eq. 21-22 is the DDIM step from x0_c). gamma_t* is rounded to float16 first
(16 bits each, as the paper sends them) and the encoder continues with the rounded value, so the
decoder (Algorithm 2), replaying the steps with the stored gammas, gives the encoder's reconstruction
bit for bit. M is the mean squared error over the image (not its padding): its minimiser is the
projection ``<x0* - x0_e, x0_hat - x0_e> / ||x0_hat - x0_e||^2``, exact, clipped to [0, 1] (the
convex combinations; the paper's unconstrained LPIPS-VGG search needs weights this library does not ship).

Decode options (not stored): ``correction=False`` runs plain conditional DDIM from the same x_T (the
paper's ablation), ``e2e=True`` returns D(y_hat) alone. Rate control picks a rate point as CDC's does
(each point's latent coded for real, plus the gammas' 2 x steps bytes: ``bpp=`` is an upper bound
unless no point fits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ...codebook import codewords
from ...conditional_unet import alpha_bar, ddim_decode, ddim_times
from ...errors import CorruptFileError, InvalidParameterError
from ...models import check_kind
from ...options import rate_target
from ...schedule import ddim_step
from ..base import Progress
from ..cdc.format import LATENT_STRIDE, symbol_counts
from ..cdc.runner import _to_input, _to_pixels, candidate_rates, decode_latent, encode_latent, pick_rate_point
from .format import GAMMA_BYTES, CorrDiffParams, check_flag, gamma_bytes, split_payload, worst_case
from .model import CorrDiffModel, CorrDiffNetwork

__all__ = ["CorrDiffParams", "best_gamma", "choose_params", "decode", "encode_batch", "payload_bound", "sample",
           "start_noise", "typical_payload"]
NOISE_STEP = 0x0C0D  # codebook step whose tile-0 codeword 0 is x_T


def _model(model: Any) -> CorrDiffModel:
    check_kind(model, "corrdiff", "CORRDIFF")
    return model


def _file_network(model: Any, params: CorrDiffParams) -> CorrDiffNetwork:
    cd = _model(model)
    if params.rate_point >= len(cd.networks):
        raise CorruptFileError(
            f"File names rate point {params.rate_point}, but CorrDiff model {cd.name!r} has {len(cd.networks)}")
    return cd.networks[params.rate_point]  # type: ignore[return-value]


def choose_params(
    model: Any, given: dict[str, Any], bpp: float | None, quality: float | None,
    header_size: Callable[[CorrDiffParams], int], width: int, height: int, images: Sequence[torch.Tensor] = (),
) -> CorrDiffParams:
    """The rate point for ``bpp=``/``quality=`` (``steps``/``metric`` may be given with a rate; an explicit
    ``rate_point`` without a rate is used as given); with ``images``, chosen on their measured latents as
    CDC's (:func:`pillow_diffcodec.codecs.cdc.runner.pick_rate_point`) plus the gammas' bytes."""
    cd = _model(model)
    wanted = rate_target(bpp, quality, "rate_point" in given)
    if wanted is None:
        params = CorrDiffParams.from_dict(given)
        cd.network(params.rate_point)
        return params
    if "rate_point" in given:
        raise InvalidParameterError(f"Give rate_point or a rate (bpp=/quality=), not both; got {sorted(given)}")
    candidates = [CorrDiffParams.from_dict({**given, "rate_point": i}) for i in range(len(cd.rate_points))]
    rates = candidate_rates(candidates, cd, images, header_size, width, height,
                            side_bytes=lambda p: GAMMA_BYTES * p.steps,
                            typical=lambda p: typical_payload(p, cd, width, height))
    return candidates[pick_rate_point(rates, wanted.bpp, cd.name, measured=bool(images))]


def payload_bound(params: CorrDiffParams, model: Any, width: int, height: int) -> int:
    """The largest payload any image of this size can give: the gammas + the range coder's worst case."""
    cd = _model(model)
    return worst_case(params.steps, *symbol_counts(cd.arch.latent, cd.arch.hyper, width, height))


def typical_payload(params: CorrDiffParams, model: Any, width: int, height: int) -> int:
    """The gammas + the latent at the rate point's typical bpp (what rate control compares with the target)."""
    cd = _model(model)
    point = cd.rate_points[min(params.rate_point, len(cd.rate_points) - 1)]
    latent = int(np.ceil(point.typical_bpp * width * height / 8))
    return min(payload_bound(params, cd, width, height), 2 * params.steps + latent)


def start_noise(seed: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``x_T``: the portable unit Gaussian codeword C_{NOISE_STEP, 0}(0) of the file's seed, reshaped."""
    return codewords(seed, NOISE_STEP, [0], [0], int(np.prod(shape)), device).view(shape)


def best_gamma(target: torch.Tensor, x0_hat: torch.Tensor, x0_e: torch.Tensor) -> float:
    """Eq. 20 with M = MSE: the exact minimiser over gamma, clipped to [0, 1] (1 when the two estimates agree)."""
    d = (x0_hat - x0_e).double()
    den = float((d * d).sum())
    if den <= 0.0:
        return 1.0
    return float(np.clip(float(((target - x0_e).double() * d).sum()) / den, 0.0, 1.0))


def sample(
    network: CorrDiffNetwork, y_hat: torch.Tensor, x_start: torch.Tensor, x0_e: torch.Tensor, steps: int,
    gamma_at: Callable[[int, torch.Tensor], float], on_call: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Corrected DDIM (Algorithms 1 and 2): step i uses ``gamma_at(i, x0_hat_i)`` (a float16 value) to form
    ``x0_c = gamma x0_hat + (1 - gamma) x0_e`` and steps on from it (eta = 0); returns the last x0_c."""
    x, x0_c = x_start, x_start
    batch = x.shape[0]
    times = ddim_times(steps)
    for i, (t, s) in enumerate(zip(times[:-1], times[1:])):
        t_vec = torch.full((batch,), t, dtype=torch.float32, device=x.device)
        x0_hat = network.unet(x, t_vec, y_hat).clamp(-1.0, 1.0)
        if on_call is not None:
            on_call()
        gamma = gamma_at(i, x0_hat)
        x0_c = gamma * x0_hat + (1.0 - gamma) * x0_e
        if s <= 0.0:
            break
        x = ddim_step(x, x0_c, alpha_bar(torch.tensor(t)).item(), alpha_bar(torch.tensor(s)).item())
    return x0_c


def _ticker(progress: Progress | None, total: int) -> Callable[[], None]:
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    return tick


def _shape(y_hat: torch.Tensor) -> tuple[int, int, int, int]:
    return (1, 3, y_hat.shape[2] * LATENT_STRIDE, y_hat.shape[3] * LATENT_STRIDE)


def encode_batch(
    model: Any, params: CorrDiffParams, seed: int, pixels: Sequence[torch.Tensor], progress: Progress | None = None,
) -> list[tuple[bytes, torch.Tensor]]:
    """Algorithm 1 for each uint8 image (3, H, W): (payload, the corrected reconstruction the decoder gives)."""
    cd = _model(model)
    network = cd.network(params.rate_point)
    out = []
    for image in pixels:
        height, width = image.shape[1:]
        x = _to_input(image, cd.device)
        latent, y_hat, _, _ = encode_latent(network, x)
        target = x[..., :height, :width]
        gammas: list[float] = []

        def gamma_at(i: int, x0_hat: torch.Tensor) -> float:
            value = best_gamma(target, x0_hat[..., :height, :width], x0_e[..., :height, :width])
            gammas.append(float(np.float16(value)))  # continue with what the decoder will read
            return gammas[-1]

        tick = _ticker(progress, params.steps + 1)
        with torch.no_grad():
            x0_e = network.e2e(y_hat).clamp(-1.0, 1.0)
            tick()
            x0 = sample(network, y_hat, start_noise(seed, _shape(y_hat), y_hat.device), x0_e, params.steps, gamma_at,
                        tick)
        out.append((gamma_bytes(np.array(gammas)) + latent, _to_pixels(x0, width, height)))
    return out


def decode(
    model: Any, params: CorrDiffParams, seed: int, width: int, height: int, payload: bytes,
    progress: Progress | None = None, *, correction: bool = True, e2e: bool = False,
) -> torch.Tensor:
    """Algorithm 2: payload -> uint8 pixels (3, height, width); ``correction=False``: plain conditional DDIM from
    the same x_T; ``e2e=True``: D(y_hat) alone."""
    correction, e2e = check_flag("correction", correction), check_flag("e2e", e2e)
    network = _file_network(model, params)
    gammas, latent = split_payload(payload, params.steps)
    y_hat, _, _ = decode_latent(network, latent, width, height)
    tick = _ticker(progress, 1 if e2e else params.steps + (1 if correction else 0))
    with torch.no_grad():
        if e2e:
            x0 = network.e2e(y_hat).clamp(-1.0, 1.0)
            tick()
            return _to_pixels(x0, width, height)
        x_start = start_noise(seed, _shape(y_hat), y_hat.device)
        if not correction:
            return _to_pixels(ddim_decode(network.unet, y_hat, x_start, params.steps, tick), width, height)
        x0_e = network.e2e(y_hat).clamp(-1.0, 1.0)
        tick()
        x0 = sample(network, y_hat, x_start, x0_e, params.steps, lambda i, _: float(gammas[i]), tick)
    return _to_pixels(x0, width, height)
