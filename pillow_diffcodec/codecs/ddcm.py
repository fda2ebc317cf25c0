"""DDCM: Denoising Diffusion Codebook Models (Ohayon, Manor, Michaeli, Elad, ICML 2025).

A pretrained DDPM samples with ``x_{i-1} = mu_i(x_i) + sigma_i z_i`` (eq. 2-3). DDCM draws ``z_i``
from a fixed codebook ``C_i`` of K Gaussian vectors (eq. 5-6) and, to compress ``x0``, picks
``k_i = argmax_k <C_i(k), x0 - x0hat_i>`` (eq. 7); the indices are the bitstream and decoding
replays the sampler with them. Two multi-atom selections give higher rates:

* ``"mp"``: the paper's matching pursuit (App. B.5, eq. 13-15): M distinct atoms, the first with
  coefficient 1, the others with one of C levels ``l / C`` (l = 1..C), renormalised by the
  empirical RMS. Costs ``log2(K (K-1) ... (K-M+1)) + (M-1) log2 C`` bits per step (the paper's
  ``M log2 K + (M-1) log2 C`` minus what distinctness saves). The greedy search runs over the
  ``4M`` best-scoring codewords of one codebook scan, so memory does not grow with K.
* ``"topm"``: Turbo-DDCM (Vaisman et al. 2025): the M codewords with the largest
  ``|<C_i(k), x0 - x0hat_i>|``, each with its sign, coded as a subset rank:
  ``log2 binom(K, M) + M`` bits per step.

Codebook step ids: 0 is the initial noise ``x_T = C_0(0)`` (a size-1 codebook), and the noise added
after the n-th model call (n = 1..T-1) uses codebook step n. Steps whose timestep lies outside
``window`` use K = 1 (no bits, App. B.4).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .. import entropy
from ..codebook import codebook_scores, codewords
from ..errors import CorruptFileError, InvalidParameterError
from ..models import DiffusionModel
from .ddcm_format import (
    CODEC_ID,
    FORMAT_NAME,
    TRIVIAL_CHOICE,
    DDCMParams,
    StepChoice,
    all_symbol_sizes,
    history_from_symbols,
    payload_symbols,
    symbols_to_choice,
)

__all__ = ["CODEC_ID", "FORMAT_NAME", "DDCMParams", "decode_payload", "encode_batch", "generate", "payload_bytes"]
MP_CANDIDATES_PER_ATOM = 4


def step_noise(params: DDCMParams, seed: int, step: int, choice: StepChoice, numel: int, device: torch.device) -> torch.Tensor:
    """The noise ``z`` of one step (float32, numel) built from its choice; shared by encoder and decoder."""
    atoms = codewords(seed, step, choice.indices, numel, device)
    if choice.signs:
        weights = [1.0 - 2.0 * s for s in choice.signs]
    else:
        weights = [1.0] + [(level + 1) / params.coef_levels for level in choice.levels]
    if len(weights) == 1:
        return atoms[0] * weights[0]
    z = (torch.tensor(weights, dtype=torch.float32, device=device)[:, None] * atoms).sum(dim=0)
    return z * torch.rsqrt(z.square().mean())  # renormalise by the empirical RMS (App. B.5)


def _select_topm(scores: torch.Tensor, atoms: int) -> StepChoice:
    top = torch.topk(scores.abs(), atoms).indices.tolist()
    chosen = sorted(top)
    signs = tuple(int(scores[k] < 0) for k in chosen)
    return StepChoice(indices=tuple(chosen), signs=signs)


def _select_mp(
    params: DDCMParams, scores: torch.Tensor, residual: torch.Tensor, seed: int, step: int
) -> StepChoice:
    """Greedy matching pursuit maximising cos(z, r) with quantised coefficients (DDCM App. B.5)."""
    if params.atoms == 1:
        return StepChoice(indices=(int(torch.argmax(scores)),))
    count = min(scores.shape[0], MP_CANDIDATES_PER_ATOM * params.atoms)
    candidates = torch.topk(scores, count).indices.tolist()
    atoms = codewords(seed, step, candidates, residual.shape[0], residual.device).to(torch.float64)
    r = residual.to(torch.float64)
    cand_r = atoms @ r
    cand_norm2 = atoms.square().sum(dim=1)
    levels = torch.arange(1, params.coef_levels + 1, dtype=torch.float64, device=r.device) / params.coef_levels
    first = int(torch.argmax(cand_r))
    z = atoms[first].clone()
    used = [first]
    chosen_levels: list[int] = []
    for _ in range(params.atoms - 1):
        z_r, z_norm2, cand_z = float(z @ r), float(z @ z), atoms @ z
        gain = (z_r + levels[None, :] * cand_r[:, None]) / torch.sqrt(
            z_norm2 + 2 * levels[None, :] * cand_z[:, None] + levels[None, :] ** 2 * cand_norm2[:, None]
        )
        gain[used] = -math.inf
        best = int(torch.argmax(gain))
        c, level = divmod(best, params.coef_levels)
        used.append(c)
        chosen_levels.append(level)
        z += levels[level] * atoms[c]
    return StepChoice(indices=tuple(candidates[c] for c in used), levels=tuple(chosen_levels))


Selector = Callable[[int, int, torch.Tensor, torch.Tensor], list[StepChoice]]


def run_sampler(
    model: DiffusionModel,
    params: DDCMParams,
    seed: int,
    batch: int,
    sample_shape: tuple[int, ...],
    select: Selector,
) -> tuple[torch.Tensor, list[list[StepChoice]]]:
    """Run the respaced DDPM chain with codebook noise for ``batch`` samples.

    ``select(step, size, x0hat, x_t)`` returns the StepChoice of every sample for codebook step
    ``step`` of size ``size``. The model is called one sample at a time so that a decoder working
    on one file reproduces the encoder's numbers bit for bit. Returns the final samples
    (batch, *sample_shape) and the choices per step.
    """
    schedule = model.schedule
    timesteps = schedule.timesteps(params.steps)
    step_sizes = params.step_sizes(timesteps)
    numel = int(np.prod(sample_shape))
    device = model.device
    x = codewords(seed, 0, [0], numel, device)[0].view(sample_shape).repeat(batch, *([1] * len(sample_shape)))
    history: list[list[StepChoice]] = []
    for n, t in enumerate(timesteps):
        x0hat = torch.stack([model.predict_x0(x[b], t) for b in range(batch)])
        if n == len(timesteps) - 1:
            return x0hat, history
        c0, ct, sigma = schedule.posterior(t, timesteps[n + 1])
        choices = select(n + 1, step_sizes[n], x0hat, x)
        history.append(choices)
        for b, choice in enumerate(choices):
            z = step_noise(params, seed, n + 1, choice, numel, device).view(sample_shape)
            x[b] = c0 * x0hat[b] + ct * x[b] + sigma * z
    raise AssertionError("unreachable: timesteps is never empty")


def search_selector(params: DDCMParams, targets: torch.Tensor, seed: int) -> Selector:
    """The encoder's selector: choose codewords that point from ``x0hat`` towards the targets (eq. 7)."""

    def select(step: int, size: int, x0hat: torch.Tensor, x_t: torch.Tensor) -> list[StepChoice]:
        if size == 1:
            return [TRIVIAL_CHOICE] * targets.shape[0]
        residuals = (targets - x0hat).flatten(start_dim=1)
        scores = codebook_scores(seed, step, size, residuals)
        if params.selection == "topm":
            return [_select_topm(scores[b], params.atoms) for b in range(targets.shape[0])]
        return [_select_mp(params, scores[b], residuals[b], seed, step) for b in range(targets.shape[0])]

    return select


def random_selector(params: DDCMParams, batch: int, rng: np.random.Generator) -> Selector:
    """Compressed generation (Sec. 4): uniformly random choices, so a sample comes with its bitstream."""

    def select(step: int, size: int, x0hat: torch.Tensor, x_t: torch.Tensor) -> list[StepChoice]:
        if size == 1:
            return [TRIVIAL_CHOICE] * batch
        choices = []
        for _ in range(batch):
            symbols = [int(rng.integers(0, s)) if s < 2**63 else _random_bigint(rng, s) for s in params.symbol_sizes(size)]
            choices.append(symbols_to_choice(params, symbols, size))
        return choices

    return select


def _random_bigint(rng: np.random.Generator, below: int) -> int:
    """Uniform integer in [0, below) for alphabets beyond 64 bits (rejection sampling)."""
    nbytes = (below.bit_length() + 7) // 8
    while True:
        value = int.from_bytes(rng.bytes(nbytes), "little") >> (8 * nbytes - below.bit_length())
        if value < below:
            return value


def replay_selector(history: list[list[StepChoice]]) -> Selector:
    """The decoder's selector: return the stored choices step by step."""

    def select(step: int, size: int, x0hat: torch.Tensor, x_t: torch.Tensor) -> list[StepChoice]:
        return history[step - 1]

    return select


def _check_against_model(params: DDCMParams, model: DiffusionModel) -> list[int]:
    """Validate the parameters against the model's schedule; returns the per-step codebook sizes."""
    n = model.schedule.num_train_timesteps
    if params.window is not None and params.window[0] >= n:
        raise InvalidParameterError(f"Expected window high in [0, {n - 1}] for this model, got {params.window[0]}")
    return params.step_sizes(model.schedule.timesteps(params.steps))


def payload_bytes(params: DDCMParams, model: DiffusionModel) -> int:
    """Exact payload length for these parameters on this model (independent of the image).

    Computed per distinct codebook size, so a hostile header cannot make it build long lists.
    """
    counts = Counter(_check_against_model(params, model))
    return entropy.payload_size_grouped((params.symbol_sizes(size), n) for size, n in counts.items())


def encode_batch(
    model: DiffusionModel, params: DDCMParams, seed: int, pixels: Sequence[torch.Tensor]
) -> list[tuple[bytes, torch.Tensor]]:
    """Encode same-size uint8 images (C, H, W); returns (payload, reconstruction) per image.

    The codebook of every step is scanned once for the whole batch. The reconstruction is the
    uint8 image the decoder will produce from the payload.
    """
    step_sizes = _check_against_model(params, model)
    height, width = pixels[0].shape[1:]
    if any(p.shape != pixels[0].shape for p in pixels):
        raise InvalidParameterError("encode_batch needs images of one size and mode; encode others separately")
    targets = torch.stack([model.to_model_space(p) for p in pixels])
    final, history = run_sampler(
        model, params, seed, len(pixels), tuple(targets.shape[1:]), search_selector(params, targets, seed)
    )
    results = []
    for b in range(len(pixels)):
        values, sizes = payload_symbols(params, step_sizes, [step[b] for step in history])
        results.append((entropy.encode_uniform(values, sizes), model.to_pixels(final[b], width, height)))
    return results


def decode_payload(
    model: DiffusionModel, params: DDCMParams, seed: int, width: int, height: int, payload: bytes
) -> torch.Tensor:
    """Replay the sampler with the stored choices; returns uint8 pixels (C, height, width)."""
    try:
        step_sizes = _check_against_model(params, model)
    except InvalidParameterError as exc:
        raise CorruptFileError(f"DDCM parameters do not fit model {model.name!r}: {exc}") from None
    expected = payload_bytes(params, model)
    if len(payload) != expected:
        raise CorruptFileError(f"Payload has {len(payload)} bytes; the file's DDCM parameters require {expected}")
    sizes = all_symbol_sizes(params, step_sizes)
    history = history_from_symbols(params, step_sizes, entropy.decode_uniform(payload, sizes))
    shape = model.sample_shape(width, height)
    final, _ = run_sampler(model, params, seed, 1, shape, replay_selector(history))
    return model.to_pixels(final[0], width, height)


def generate(
    model: DiffusionModel, params: DDCMParams, seed: int, width: int, height: int, rng: np.random.Generator
) -> tuple[bytes, torch.Tensor]:
    """Compressed generation: a random sample and the payload that reproduces it."""
    step_sizes = _check_against_model(params, model)
    shape = model.sample_shape(width, height)
    final, history = run_sampler(model, params, seed, 1, shape, random_selector(params, 1, rng))
    values, sizes = payload_symbols(params, step_sizes, [step[0] for step in history])
    return entropy.encode_uniform(values, sizes), model.to_pixels(final[0], width, height)
