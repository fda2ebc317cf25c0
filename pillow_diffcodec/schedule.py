"""DDPM noise schedules and the respaced reverse (posterior) step, written against ``alphas_cumprod``.

Ho, Jain, Abbeel, "Denoising Diffusion Probabilistic Models" (NeurIPS 2020): the forward process has
``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)`` (eq. 4) and the reverse step uses the posterior
``q(x_s | x_t, x_0)`` with mean ``c0 x_0 + ct x_t`` and variance ``beta~`` (eq. 6-7). Respacing to a
subset of timesteps (Nichol & Dhariwal 2021, Sec. 4) uses the same formulas with
``alpha_{t|s} = abar_t / abar_s``. Results therefore depend only on ``alphas_cumprod`` and the
prediction type, never on which diffusers scheduler class a checkpoint ships with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InvalidParameterError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _betas(config: Mapping[str, Any]) -> torch.Tensor:
    """Betas of a diffusers scheduler config (float64), for the schedules DDPM checkpoints use."""
    n = int(config.get("num_train_timesteps", 1000))
    if config.get("trained_betas") is not None:
        return torch.tensor(config["trained_betas"], dtype=torch.float64)
    start = float(config.get("beta_start", 0.0001))
    end = float(config.get("beta_end", 0.02))
    kind = config.get("beta_schedule", "linear")
    if kind == "linear":
        return torch.linspace(start, end, n, dtype=torch.float64)
    if kind == "scaled_linear":
        return torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
    if kind == "squaredcos_cap_v2":  # Nichol & Dhariwal 2021, eq. 17
        def abar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return torch.tensor([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)], dtype=torch.float64)
    raise InvalidParameterError(
        f"Unsupported beta_schedule {kind!r}; expected one of 'linear', 'scaled_linear', 'squaredcos_cap_v2'"
    )


@dataclass(frozen=True)
class NoiseSchedule:
    """A trained DDPM schedule: ``alphas_cumprod`` over the training timesteps and how x0 is predicted."""

    alphas_cumprod: torch.Tensor  # float64, shape (num_train_timesteps,)
    prediction_type: str = "epsilon"
    clip_sample: bool = True
    clip_sample_range: float = 1.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> NoiseSchedule:
        """Build from a diffusers scheduler config (``scheduler_config.json``)."""
        prediction = config.get("prediction_type", "epsilon")
        if prediction not in PREDICTION_TYPES:
            raise InvalidParameterError(f"Unsupported prediction_type {prediction!r}; expected one of {PREDICTION_TYPES}")
        return cls(
            alphas_cumprod=torch.cumprod(1.0 - _betas(config), dim=0),
            prediction_type=prediction,
            clip_sample=bool(config.get("clip_sample", True)),
            clip_sample_range=float(config.get("clip_sample_range", 1.0)),
        )

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def canonical_bytes(self) -> bytes:
        """Bytes that pin this schedule, hashed into the model fingerprint."""
        head = f"{self.prediction_type}|{int(self.clip_sample)}|{self.clip_sample_range!r}|".encode()
        return head + self.alphas_cumprod.numpy().tobytes()

    def timesteps(self, steps: int) -> list[int]:
        """The ``steps`` respaced timesteps in sampling (descending) order.

        ``t_i = floor(i (N - 1) / (steps - 1))`` for i = 0..steps-1 (docs/FORMAT.md), so the first
        step always starts from pure noise at t = N - 1 and the last one lands on t = 0.
        """
        n = self.num_train_timesteps
        if not 1 <= steps <= n:
            raise InvalidParameterError(f"Expected steps in [1, {n}] for this model, got {steps}")
        if steps == 1:
            return [n - 1]
        return [i * (n - 1) // (steps - 1) for i in range(steps)][::-1]

    def predict_x0(self, model_output: torch.Tensor, x_t: torch.Tensor, t: int, *, clip: bool = True) -> torch.Tensor:
        """Clean-image estimate ``x0hat`` from the model output (DDPM eq. 15; v-prediction per Salimans & Ho 2022),
        clipped to the schedule's range when it asks for that, unless ``clip=False`` (see :meth:`clip`)."""
        abar = float(self.alphas_cumprod[t])
        a, b = math.sqrt(abar), math.sqrt(1.0 - abar)
        if self.prediction_type == "epsilon":
            x0 = (x_t - b * model_output) / a
        elif self.prediction_type == "v_prediction":
            x0 = a * x_t - b * model_output
        else:
            x0 = model_output
        return self.clip(x0) if clip else x0

    def clip(self, x0: torch.Tensor) -> torch.Tensor:
        """``x0`` clamped to [-clip_sample_range, clip_sample_range] when the schedule clips its samples."""
        if self.clip_sample:
            x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        return x0

    def posterior(self, t: int, s: int) -> tuple[float, float, float]:
        """Coefficients ``(c0, ct, sigma)`` of ``x_s = c0 x0hat + ct x_t + sigma z`` for s < t (s = -1: final).

        DDPM eq. 7 on the respaced chain: ``beta = 1 - abar_t / abar_s``,
        ``c0 = sqrt(abar_s) beta / (1 - abar_t)``, ``ct = sqrt(1 - beta) (1 - abar_s) / (1 - abar_t)``,
        ``sigma^2 = beta (1 - abar_s) / (1 - abar_t)``.
        """
        abar_t = float(self.alphas_cumprod[t])
        abar_s = float(self.alphas_cumprod[s]) if s >= 0 else 1.0
        beta = 1.0 - abar_t / abar_s
        c0 = math.sqrt(abar_s) * beta / (1.0 - abar_t)
        ct = math.sqrt(1.0 - beta) * (1.0 - abar_s) / (1.0 - abar_t)
        sigma = math.sqrt(max(beta * (1.0 - abar_s) / (1.0 - abar_t), 0.0))
        return c0, ct, sigma


def ddim_step(x_t: torch.Tensor, x0: torch.Tensor, abar_t: float, abar_s: float) -> torch.Tensor:
    """One deterministic DDIM step (Song et al. 2021, eq. 12 with eta = 0) from t to s < t, given the clean
    estimate: ``x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) eps`` with ``eps = (x_t - sqrt(abar_t) x0) /
    sqrt(1 - abar_t)``. The one DDIM step of the codecs that sample with it (CDC, and those that follow)."""
    eps = (x_t - math.sqrt(abar_t) * x0) / math.sqrt(max(1.0 - abar_t, 1e-12))
    return math.sqrt(abar_s) * x0 + math.sqrt(1.0 - abar_s) * eps
