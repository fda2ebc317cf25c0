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
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .. import entropy
from ..codebook import codebook_scores, codewords
from ..errors import CorruptFileError, InvalidParameterError
from ..models import DiffusionModel

CODEC_ID = 1
FORMAT_NAME = "DDCM"
SELECTIONS = {"mp": 0, "topm": 1}
MAX_STEPS = 4096
MAX_CODEBOOK_SIZE = 1 << 20
MAX_ATOMS = 1024
MAX_COEF_LEVELS = 256
MP_CANDIDATES_PER_ATOM = 4
PARAM_FLAG_WINDOW = 0x01


def _check_range(name: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidParameterError(f"Expected {name} in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class DDCMParams:
    """DDCM configuration: ``steps`` T, ``codebook_size`` K, ``atoms`` M, ``coef_levels`` C, ``selection``, ``window``.

    ``window`` is ``(high, low)`` in the model's training timesteps (inclusive): steps at other
    timesteps use K = 1 and cost nothing. None means every step is coded.
    """

    steps: int = 50
    codebook_size: int = 256
    atoms: int = 1
    coef_levels: int = 1
    selection: str = "mp"
    window: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        _check_range("steps", self.steps, 1, MAX_STEPS)
        _check_range("codebook_size", self.codebook_size, 1, MAX_CODEBOOK_SIZE)
        _check_range("atoms", self.atoms, 1, min(MAX_ATOMS, self.codebook_size))
        _check_range("coef_levels", self.coef_levels, 1, MAX_COEF_LEVELS)
        if self.selection not in SELECTIONS:
            raise InvalidParameterError(f"Expected selection in {sorted(SELECTIONS)}, got {self.selection!r}")
        if self.window is not None:
            if not isinstance(self.window, (tuple, list)) or len(self.window) != 2:
                raise InvalidParameterError(f"Expected window as (high, low) timesteps, got {self.window!r}")
            high, low = self.window
            _check_range("window high", high, 0, MAX_STEPS * 16)
            _check_range("window low", low, 0, high)
            object.__setattr__(self, "window", (int(high), int(low)))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["window"] = list(self.window) if self.window is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DDCMParams:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidParameterError(
                f"Unknown DDCM option(s) {sorted(unknown)}; expected {sorted(cls.__dataclass_fields__)}"
            )
        data = dict(data)
        if data.get("window") is not None:
            data["window"] = tuple(data["window"])
        return cls(**data)

    def to_bytes(self) -> bytes:
        """Header encoding: varints steps, K, M, C; u8 selection; u8 flags; [varint high, low]."""
        from ..container import _varint

        flags = PARAM_FLAG_WINDOW if self.window is not None else 0
        out = _varint(self.steps) + _varint(self.codebook_size) + _varint(self.atoms) + _varint(self.coef_levels)
        out += bytes([SELECTIONS[self.selection], flags])
        if self.window is not None:
            out += _varint(self.window[0]) + _varint(self.window[1])
        return out

    @classmethod
    def from_bytes(cls, data: bytes) -> DDCMParams:
        from ..container import _Reader

        reader = _Reader(data, len(data))
        try:
            steps = reader.varint("steps", MAX_STEPS)
            size = reader.varint("codebook_size", MAX_CODEBOOK_SIZE)
            atoms = reader.varint("atoms", MAX_ATOMS)
            levels = reader.varint("coef_levels", MAX_COEF_LEVELS)
            selection_code = reader.u8("selection")
            flags = reader.u8("parameter flags")
            window = None
            if flags & PARAM_FLAG_WINDOW:
                window = (reader.varint("window high", MAX_STEPS * 16), reader.varint("window low", MAX_STEPS * 16))
            if flags & ~PARAM_FLAG_WINDOW or reader.pos != len(data):
                raise CorruptFileError("DDCM parameters have unknown flags or trailing bytes")
            selections = {code: name for name, code in SELECTIONS.items()}
            if selection_code not in selections:
                raise CorruptFileError(f"Unknown DDCM selection code {selection_code}")
            return cls(steps, size, atoms, levels, selections[selection_code], window)
        except InvalidParameterError as exc:
            raise CorruptFileError(f"Invalid DDCM parameters in file: {exc}") from None

    def step_sizes(self, timesteps: Sequence[int]) -> list[int]:
        """Codebook size used after each of the first T-1 model calls (K, or 1 outside the window)."""
        sizes = []
        for t in timesteps[:-1]:
            inside = self.window is None or self.window[1] <= t <= self.window[0]
            sizes.append(self.codebook_size if inside else 1)
        return sizes

    def symbol_sizes(self, step_size: int) -> list[int]:
        """Alphabet sizes of the symbols one step writes (empty for K = 1)."""
        if step_size == 1:
            return []
        if self.selection == "topm":
            return [math.comb(step_size, self.atoms)] + [2] * self.atoms
        return [step_size - m for m in range(self.atoms)] + [self.coef_levels] * (self.atoms - 1)

    def bits_per_step(self) -> float:
        """Information per coded step in bits (before the payload's rounding to words)."""
        return sum(math.log2(s) for s in self.symbol_sizes(self.codebook_size))


@dataclass(frozen=True)
class StepChoice:
    """What one step selected for one image: atom indices plus their coefficient levels or signs."""

    indices: tuple[int, ...]
    levels: tuple[int, ...] = ()  # mp: level of atoms 2..M (coefficient (l + 1) / C)
    signs: tuple[int, ...] = ()  # topm: 0 for +1, 1 for -1, aligned with the sorted indices


TRIVIAL_CHOICE = StepChoice(indices=(0,))


def choice_to_symbols(params: DDCMParams, choice: StepChoice, step_size: int) -> list[int]:
    """Symbols of one step: ordered-distinct ranks + levels (mp) or combinatorial subset rank + signs (topm)."""
    if step_size == 1:
        return []
    if params.selection == "topm":
        rank = sum(math.comb(c, i + 1) for i, c in enumerate(choice.indices))  # combinatorial number system
        return [rank, *choice.signs]
    ranks, used = [], []
    for k in choice.indices:
        ranks.append(k - sum(1 for u in used if u < k))  # position of k among the unused indices
        used.append(k)
    return ranks + list(choice.levels)


def symbols_to_choice(params: DDCMParams, symbols: Sequence[int], step_size: int) -> StepChoice:
    """Inverse of :func:`choice_to_symbols`."""
    if step_size == 1:
        return TRIVIAL_CHOICE
    m = params.atoms
    if params.selection == "topm":
        rank, indices = symbols[0], []
        upper = step_size
        for i in range(m, 0, -1):  # largest c with comb(c, i) <= rank, by bisection below the previous one
            low, high = i - 1, upper - 1
            while low < high:
                mid = (low + high + 1) // 2
                if math.comb(mid, i) <= rank:
                    low = mid
                else:
                    high = mid - 1
            indices.append(low)
            rank -= math.comb(low, i)
            upper = low
        return StepChoice(indices=tuple(reversed(indices)), signs=tuple(symbols[1:]))
    indices: list[int] = []
    for rank in symbols[:m]:
        k = rank
        for used in sorted(indices):  # the rank-th index not yet used
            if used <= k:
                k += 1
        indices.append(k)
    return StepChoice(indices=tuple(indices), levels=tuple(symbols[m:]))


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


def payload_symbols(params: DDCMParams, step_sizes: Sequence[int], history: Sequence[StepChoice]) -> tuple[list[int], list[int]]:
    """(values, alphabet sizes) of a whole file's payload from one image's choices."""
    values: list[int] = []
    sizes: list[int] = []
    for size, choice in zip(step_sizes, history):
        values += choice_to_symbols(params, choice, size)
        sizes += params.symbol_sizes(size)
    return values, sizes


def all_symbol_sizes(params: DDCMParams, step_sizes: Sequence[int]) -> list[int]:
    """Alphabet sizes of every symbol in the payload, known from the parameters alone."""
    return [s for size in step_sizes for s in params.symbol_sizes(size)]


def history_from_symbols(params: DDCMParams, step_sizes: Sequence[int], values: Sequence[int]) -> list[list[StepChoice]]:
    """Rebuild one image's choices from its decoded payload symbols (validating them)."""
    history, position = [], 0
    for size in step_sizes:
        count = len(params.symbol_sizes(size))
        try:
            choice = symbols_to_choice(params, values[position : position + count], size)
        except (ValueError, IndexError) as exc:
            raise CorruptFileError(f"Invalid DDCM symbols at step {len(history) + 1}: {exc}") from None
        position += count
        history.append([choice])
    return history


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
