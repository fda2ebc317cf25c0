"""DDRM posterior sampling for noiseless linear measurements with orthonormal rows.

Kawar, Elad, Ermon, Song, "Denoising Diffusion Restoration Models" (NeurIPS 2022). DDRM works in the
spectral space of H = U S V^T; with orthonormal rows (U = I, S = 1, V = [H^T, null basis]) a sample
splits into its measured coordinates ``H x`` and its null-space part ``x - H^T H x``, and the DDRM
update (Sec. 3, in the variance-exploding form ``xbar_t = x_t / sqrt(abar_t)``, ``sigma_t^2 = (1 - abar_t) / abar_t``,
measurement noise ``sigma_y = 0``, eta_b = 1) reads:

* null space: ``xbar_next = x0 + sqrt(1 - eta^2) sigma_next eps_t + eta sigma_next z``
  (``eps_t = (xbar_t - x0) / sigma_t``, the model's noise estimate);
* measured coordinates: ``H xbar_next = y + sigma_next H z``;

with one Gaussian ``z`` per step, whose null-space and measured projections are independent. The
chain starts from ``xbar_T = H^T y + sigma_T z`` (the paper's initialisation) and the last estimate
is made measurement-consistent, ``x0 + H^T (y - H x0)``. Noise comes from the portable codebook
generator (:func:`~pillow_diffcodec.codebook.codewords`), so encoder and decoder draw the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ...codebook import codewords
from ...models import DiffusionModel

ETA = 0.85  # the eta of the official DDRM code and its experiments
Noise = Callable[[int], torch.Tensor]  # sampler step k -> (count, D) float32 Gaussians


def noise_stream(seed: int, stream: int, count: int, numel: int, device: torch.device) -> Noise:
    """Gaussians for ``count`` chains: chain j at sampler step k is codeword ``C_{stream << 16 | k, tile j}(0)``."""

    def draw(k: int) -> torch.Tensor:
        return codewords(seed, (stream << 16) | k, list(range(count)), [0] * count, numel, device)

    return draw


def project(x: torch.Tensor, rows: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + H^T (y - H x)`` for a batch x (B, D), rows H (M, D) and measurements y (M,)."""
    return x + (y[None, :] - x @ rows.T) @ rows


def sample(
    model: DiffusionModel,
    rows: torch.Tensor,
    y: torch.Tensor,
    shape: tuple[int, int, int],
    steps: int,
    noise: Noise,
    count: int,
    on_call: Callable[[], None] | None = None,
    *,
    batched: bool = True,
) -> torch.Tensor:
    """``count`` DDRM samples of ``p(x | H x = y)`` (count, D), with ``steps`` model calls each.

    ``batched``: the ``count`` chains share one model call per step (``predict_x0_batch``); otherwise
    one call per chain (how PSC files were made before it batched them: their compute signature says
    which). The linear algebra runs on the whole batch. ``on_call`` is called once
    per sample and step, so progress counts the same either way.
    """
    schedule = model.schedule
    timesteps = schedule.timesteps(steps)
    abar = [float(schedule.alphas_cumprod[t]) for t in timesteps] + [1.0]
    sigma_first = math.sqrt((1 - abar[0]) / abar[0])
    z = noise(0)
    xbar = project(sigma_first * z, rows, y) + sigma_first * (z @ rows.T) @ rows  # H xbar = y + sigma_T H z
    x = math.sqrt(abar[0]) * xbar
    for k, t in enumerate(timesteps):
        if batched:
            x0 = model.predict_x0_batch(x.view(count, *shape), t).reshape(count, -1)
        else:
            x0 = torch.stack([model.predict_x0(x[j].view(shape), t).reshape(-1) for j in range(count)])
        if on_call is not None:
            for _ in range(count):
                on_call()
        if k == len(timesteps) - 1:
            return project(x0, rows, y)
        sigma_t = math.sqrt((1 - abar[k]) / abar[k])
        sigma_next = math.sqrt((1 - abar[k + 1]) / abar[k + 1])
        eps = (x / math.sqrt(abar[k]) - x0) / sigma_t
        z = noise(k + 1)
        free = x0 + math.sqrt(1 - ETA**2) * sigma_next * eps + ETA * sigma_next * z
        xbar = project(free, rows, y) + sigma_next * (z @ rows.T) @ rows
        x = math.sqrt(abar[k + 1]) * xbar
    raise AssertionError("unreachable: timesteps is never empty")
