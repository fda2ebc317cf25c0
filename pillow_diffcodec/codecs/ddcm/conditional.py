"""Compressed conditional generation with DDCM (Ohayon et al., ICML 2025, Sec. 6 and App. C).

The compression encoder picks each step's codewords by their inner product with ``x0 - x0hat`` (eq. 7).
Any other rule ``k_i = argmin_k L(y, x_i, C_i, k)`` (eq. 8) makes the sampler produce a sample
conditioned on ``y`` *and* the bitstream that replays it: the file decodes with the ordinary DDCM
decoder, without ``y``. Implemented rules:

* **Posterior sampling for a linear degradation** ``y = A x0`` (Sec. 6.1, eq. 10): the loss
  ``||y - A(x + sigma C(k))||^2`` is linearised in the codeword, so the codewords are those with the largest
  inner product with ``-grad 1/2 ||y - A D(x0hat)||^2`` (the gradient taken by autograd through the
  model's image decoder ``D``, identity for pixel models). With ``A = I`` this is eq. 7, as App. C.2 shows;
  like eq. 7 it uses the clean estimate ``x0hat`` where eq. 10 writes ``mu_i``, and drops the quadratic term
  ``sigma^2 ||A C(k)||^2``, which concentrates around a constant for Gaussian codewords (App. C.2).
* **Perception-distortion selection** (Sec. 6.2, eq. 11-12): per tile, ``k_D`` codes towards an estimate
  ``r(y)`` of the clean image, ``k_P`` is random (from the file's seed); both are looked ahead with the
  model and the one minimising ``MSE(r(y), x0hat) + lambda Q(x0hat)`` wins, ``Q`` any no-reference
  quality measure where lower is better (NIQE by default). Costs two extra model calls per step.
* **Compressed classifier-free guidance** (App. C.6, eq. 51) and **compressed classifier guidance**
  (App. C.5, eq. 48-49) for generation: among ``candidates`` random codewords per tile (eq. 49's K~), the
  one along the conditional minus unconditional prediction, or the one whose next sample a user classifier
  finds most likely. The chain runs the unconditional model, so the decoder needs neither prompt nor class.

Multi-atom steps (``atoms`` > 1) work for the first two rules (the top-M search along the direction, or M
random atoms); guided generation uses one atom (with a sign for ``topm``) per tile and step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ...conditioning import TextConditioning
from ...errors import InvalidParameterError
from ...models import DiffusionModel
from ...restoration import Degradation
from ..base import Progress
from .format import Choices, DDCMParams, StepChoice, write_payload
from .runner import (
    Selector,
    StepState,
    TileGrid,
    _step_sizes,
    directed_selector,
    random_choices,
    run_sampler,
    step_noise,
)

QualityMeasure = Callable[[torch.Tensor], float]  # image (C, H, W) in [0, 1] -> score, lower is better
MAX_CANDIDATES = 256


@dataclass(frozen=True)
class TextGuidance:
    """Compressed classifier-free guidance (DDCM App. C.6) towards ``prompt`` on a text-conditioned latent
    model: each step keeps, of ``candidates`` random codewords per tile, the one with the largest inner
    product with ``x0hat(prompt) - x0hat(empty prompt)`` (eq. 51). Two UNet calls per step when encoding."""

    prompt: str
    candidates: int = 4


@dataclass(frozen=True)
class ClassifierGuidance:
    """Compressed classifier guidance (DDCM App. C.5): ``log_prob(x, t)`` scores a batch of candidate next
    samples (N, C, H, W) in the model's sample space at timestep ``t`` with the log-probability of the wanted
    class (shape (N,)); of ``candidates`` random codewords per step the most likely one is kept (eq. 48-49)."""

    log_prob: Callable[[torch.Tensor, int], torch.Tensor]
    candidates: int = 2


Guide = TextGuidance | ClassifierGuidance


def _image(model: DiffusionModel, samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Samples -> images (N, C, height, width) in [-1, 1] through the model's decoder, differentiable."""
    return model.to_image_space(samples)[:, :, :height, :width]


def measurement_direction(
    model: DiffusionModel, task: Degradation, y: torch.Tensor, width: int, height: int
) -> Callable[[StepState], torch.Tensor]:
    """``-grad_{x0hat} 1/2 ||y - A D(x0hat)||^2`` (eq. 10 linearised in the codeword, see the module text)."""

    def direction(state: StepState) -> torch.Tensor:
        with torch.enable_grad():
            x0 = state.x0hat.clone().requires_grad_(True)  # a normal tensor: the model returns inference tensors
            loss = 0.5 * (y - task.apply(_image(model, x0, width, height))).square().sum()
            (gradient,) = torch.autograd.grad(loss, x0)
        return -gradient

    return direction


def perception_selector(
    model: DiffusionModel, params: DDCMParams, seed: int, estimate: torch.Tensor, target: torch.Tensor,
    weight: float, measure: QualityMeasure, width: int, height: int, rng: np.random.Generator,
) -> Selector:
    """Eq. 11-12 per tile: ``k_D`` towards ``target`` (``r(y)`` in sample space), ``k_P`` random; each is looked
    ahead with the model and scored by ``MSE(r(y), x0hat) + weight Q(x0hat)`` on the tile's part of the image
    (``estimate``: ``r(y)`` as images (N, C, height, width) in [-1, 1])."""
    grid = TileGrid.for_sample(target.shape[1:], params.tile)
    toward = directed_selector(params, seed, len(target), target.shape[1:], lambda state: target - state.x0hat)

    def tile_costs(state: StepState, choices: list[Choices]) -> torch.Tensor:
        """(N, tiles) cost of each sample's choices, looked ahead one model call."""
        ahead = torch.stack([
            model.predict_x0(state.next_sample(b, step_noise(params, seed, state.step, tiles, grid, model.device)),
                             state.t_next)
            for b, tiles in enumerate(choices)
        ])
        decoded = model.to_image_space(ahead).detach()
        factor = decoded.shape[-1] // ahead.shape[-1]  # image pixels per sample position (the VAE's factor)
        images = decoded[:, :, :height, :width]
        costs = torch.zeros(len(choices), grid.count)
        for b in range(len(choices)):
            for tile in range(grid.count):
                row, col = divmod(tile, grid.cols)
                top, left = row * grid.tile_height * factor, col * grid.tile_width * factor
                box = (slice(None), slice(top, top + grid.tile_height * factor),
                       slice(left, left + grid.tile_width * factor))
                part, reference = images[b][box], estimate[b][box]
                if part.numel() == 0:
                    continue
                mse = float(((part - reference) / 2).square().mean())
                costs[b, tile] = mse + weight * measure(((part + 1) / 2).clamp(0, 1))
        return costs

    def select(state: StepState) -> list[Choices]:
        distortion = toward(state)
        if state.size == 1:  # nothing to choose: no look-ahead
            return distortion
        perception = [random_choices(params, grid.count, state.size, rng) for _ in range(len(target))]
        use_d = tile_costs(state, distortion) <= tile_costs(state, perception)
        return [[d if use_d[b, t] else p for t, (d, p) in enumerate(zip(distortion[b], perception[b]))]
                for b in range(len(target))]

    return select


def _uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def restore_batch(
    model: DiffusionModel, params: DDCMParams, seed: int, task: Degradation, measurements: Sequence[torch.Tensor],
    width: int, height: int, *, perception: float | None = None, measure: QualityMeasure | None = None,
    progress: Progress | None = None,
) -> list[tuple[bytes, torch.Tensor]]:
    """Restore each degraded input (1, C, h, w) in [-1, 1] to a ``width`` x ``height`` image, born compressed:
    returns (payload, the uint8 pixels the decoder will produce) per input.

    ``perception=None`` samples the posterior (eq. 10); a weight selects by eq. 11-12 with ``measure``
    (default: NIQE, :mod:`pillow_diffcodec.evaluation.niqe`).
    """
    step_sizes = _step_sizes(params, model)
    shape = model.sample_shape(width, height)
    y = torch.cat(list(measurements)).to(model.device)
    if perception is None:
        select = directed_selector(params, seed, len(y), shape, measurement_direction(model, task, y, width, height))
    else:
        if measure is None:
            from ...evaluation.niqe import niqe_score as measure
        estimate = task.estimate(y)
        target = torch.stack([model.to_model_space(pixels) for pixels in _uint8(estimate)])
        select = perception_selector(model, params, seed, estimate, target, float(perception), measure, width,
                                     height, np.random.default_rng(seed))
    final, history = run_sampler(model, params, seed, len(y), shape, select, progress)
    return [
        (write_payload(params, step_sizes, [step[b] for step in history]), model.to_pixels(final[b], width, height))
        for b in range(len(y))
    ]


def _candidates(params: DDCMParams, size: int, count: int, tiles: int, rng: np.random.Generator) -> list[Choices]:
    """``count`` random one-atom choices per tile, as a list over candidates of the choices of every tile."""
    picks = [rng.choice(size, size=min(count, size), replace=False) for _ in range(tiles)]
    signs = rng.integers(0, 2, size=(tiles, count)) if params.selection == "topm" else None
    return [
        [StepChoice(indices=(int(picks[t][j % len(picks[t])]),), signs=(int(signs[t, j]),) if signs is not None else ())
         for t in range(tiles)]
        for j in range(count)
    ]


def guided_selector(
    model: DiffusionModel, params: DDCMParams, seed: int, shape: Sequence[int], guide: Guide, rng: np.random.Generator,
) -> Selector:
    """Eq. 49's search over random candidates, scored by eq. 51 (text) per tile or eq. 48 (classifier) jointly."""
    grid = TileGrid.for_sample(shape, params.tile)
    conditional = None
    if isinstance(guide, TextGuidance):
        with_conditioning = getattr(model, "with_conditioning", None)
        if with_conditioning is None or getattr(model, "text_encoder", None) is None:
            raise InvalidParameterError(f"Text guidance needs a text-conditioned latent model; {model.name!r} is not")
        conditional = with_conditioning(TextConditioning(guide.prompt))

    def noise(candidate: Choices, step: int) -> torch.Tensor:
        return step_noise(params, seed, step, candidate, grid, model.device)

    def select(state: StepState) -> list[Choices]:
        if state.size == 1:
            return [[StepChoice(indices=(0,))] * grid.count]
        candidates = _candidates(params, state.size, guide.candidates, grid.count, rng)
        if conditional is not None:
            residual = grid.split(conditional.predict_x0_batch(state.x, state.t) - state.x0hat)[0]
            scores = torch.stack([grid.split(noise(c, state.step)[None])[0].mul(residual).sum(dim=1)
                                  for c in candidates])  # (candidates, tiles): eq. 51 separates over tiles
            best = scores.argmax(dim=0).tolist()
            return [[candidates[best[t]][t] for t in range(grid.count)]]
        ahead = torch.stack([state.next_sample(0, noise(c, state.step)) for c in candidates])
        scores = guide.log_prob(ahead, state.t_next).reshape(-1)
        if scores.shape[0] != len(candidates):
            raise InvalidParameterError(f"The classifier returned {scores.shape[0]} scores for {len(candidates)} samples")
        return [candidates[int(torch.argmax(scores))]]

    return select


def generate_guided(
    model: DiffusionModel, params: DDCMParams, seed: int, width: int, height: int, rng: np.random.Generator,
    guide: Guide,
) -> tuple[bytes, torch.Tensor]:
    """Compressed guided generation (App. C.5-C.6): a conditioned sample and the payload that replays it."""
    if params.atoms != 1:
        raise InvalidParameterError(f"Guided generation picks one codeword per step and tile; got atoms={params.atoms}")
    count = guide.candidates
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_CANDIDATES:
        raise InvalidParameterError(f"Expected candidates in [1, {MAX_CANDIDATES}], got {count!r}")
    step_sizes = _step_sizes(params, model)
    shape = model.sample_shape(width, height)
    final, history = run_sampler(model, params, seed, 1, shape, guided_selector(model, params, seed, shape, guide, rng))
    return write_payload(params, step_sizes, [step[0] for step in history]), model.to_pixels(final[0], width, height)
