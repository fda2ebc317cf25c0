"""Schedules and the respaced posterior step, checked against diffusers and against the math."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from pillow_diffcodec.errors import InvalidParameterError
from pillow_diffcodec.schedule import NoiseSchedule


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_alphas_cumprod_match_diffusers(kind: str) -> None:
    config = {"num_train_timesteps": 1000, "beta_schedule": kind}
    ours = NoiseSchedule.from_config(config).alphas_cumprod
    theirs = DDPMScheduler(**config).alphas_cumprod.to(torch.float64)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-7)


def test_respaced_timesteps() -> None:
    schedule = NoiseSchedule.from_config({"num_train_timesteps": 1000})
    assert schedule.timesteps(1) == [999]
    assert schedule.timesteps(2) == [999, 0]
    assert schedule.timesteps(4) == [999, 666, 333, 0]
    assert schedule.timesteps(1000) == list(range(999, -1, -1))
    with pytest.raises(InvalidParameterError, match=r"Expected steps in \[1, 1000\] for this model, got 1001"):
        schedule.timesteps(1001)


def test_posterior_matches_diffusers_single_step() -> None:
    scheduler = DDPMScheduler(num_train_timesteps=1000, variance_type="fixed_small")
    schedule = NoiseSchedule.from_config(scheduler.config)
    x_t, eps = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = 500
    x0 = schedule.predict_x0(eps, x_t, t)
    c0, ct, sigma = schedule.posterior(t, t - 1)
    out = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(out.pred_original_sample, x0, atol=1e-5)
    noise = (out.prev_sample - (c0 * x0 + ct * x_t)) / sigma
    assert abs(noise.std().item() - 1.0) < 0.2  # the remainder is diffusers' unit Gaussian noise
    assert math.isclose(sigma**2, float(scheduler._get_variance(t)), rel_tol=1e-4)


def test_respaced_posterior_preserves_the_forward_marginals() -> None:
    """With a perfect x0 estimate, x_s from the posterior step has q(x_s | x0)'s mean and variance."""
    schedule = NoiseSchedule.from_config({"num_train_timesteps": 1000})
    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000,), 0.5, dtype=torch.float64)
    for t, s in [(999, 666), (500, 100), (40, 0)]:
        abar_t, abar_s = (float(schedule.alphas_cumprod[i]) for i in (t, s))
        x_t = math.sqrt(abar_t) * x0 + math.sqrt(1 - abar_t) * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        c0, ct, sigma = schedule.posterior(t, s)
        x_s = c0 * x0 + ct * x_t + sigma * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        assert abs(x_s.mean().item() - 0.5 * math.sqrt(abar_s)) < 0.01
        assert abs(x_s.var().item() - (1 - abar_s)) < 0.01


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_predict_x0_inverts_the_forward_process(prediction: str) -> None:
    schedule = NoiseSchedule.from_config({"prediction_type": prediction, "clip_sample": False})
    x0, eps = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(2)) * 2 - 1
    t = 300
    a, b = math.sqrt(float(schedule.alphas_cumprod[t])), math.sqrt(1 - float(schedule.alphas_cumprod[t]))
    x_t = a * x0 + b * eps
    output = {"epsilon": eps, "v_prediction": a * eps - b * x0, "sample": x0}[prediction]
    assert torch.allclose(schedule.predict_x0(output, x_t, t), x0, atol=1e-5)


def test_unknown_schedule_options_are_rejected() -> None:
    with pytest.raises(InvalidParameterError, match="beta_schedule"):
        NoiseSchedule.from_config({"beta_schedule": "sigmoid"})
    with pytest.raises(InvalidParameterError, match="prediction_type"):
        NoiseSchedule.from_config({"prediction_type": "flow"})
