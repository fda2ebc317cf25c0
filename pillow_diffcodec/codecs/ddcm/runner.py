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

With ``tile`` > 0 the sample is cut into tiles that each choose from their own codebooks, so the
noise of a step is the concatenation of one choice per tile. Because the inner product with the
residual splits over tiles, choosing per tile is the same search over a product codebook of size
``K ** tiles``; a step then costs one scan of K codewords over the whole image but carries
``tiles`` times as many bits, which is what makes large images practical on a CPU.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ...codebook import codebook_scores, codewords
from ...errors import CorruptFileError, InvalidParameterError, RateFallbackWarning
from ...models import DiffusionModel, pixels_per_position
from ...options import rate_target
from ..base import Progress
from .format import (
    MAX_ATOMS,
    TRIVIAL_CHOICE,
    Choices,
    DDCMParams,
    StepChoice,
    payload_size,
    read_payload,
    symbols_to_choice,
    write_payload,
)

__all__ = ["DDCMParams", "choose_params", "decode", "encode_batch", "generate", "params_for_bpp", "payload_bound"]
MP_CANDIDATES_PER_ATOM = 4
MAX_LADDER_TILE = 256  # rate control tries tiles up to this before it leaves steps uncoded
MIN_LADDER_TILE = 8  # the smallest tile rate control tries (see ladder_start)
PIXEL_LADDER_CODEBOOK = 16  # rate control's first K on pixel models when codebook_size is not given
MAX_LADDER_CODEBOOK = 1 << 16  # the largest K rate control grows to
LADDER_FILL = 0.9  # the smallest tile whose file reaches this share of the budget wins ...
TOP_UP_FILL = 0.98  # ... unless one reaches this share; a tile's leftover budget is spent the cheapest way to it


@dataclass(frozen=True)
class TileGrid:
    """How a sample (C, H, W) is cut into ``rows x cols`` tiles of ``height x width`` (zero-padded at the edges)."""

    channels: int
    height: int
    width: int
    tile_height: int
    tile_width: int

    @classmethod
    def for_sample(cls, shape: Sequence[int], tile: int) -> TileGrid:
        channels, height, width = shape
        return cls(channels, height, width, tile or height, tile or width)

    @property
    def rows(self) -> int:
        return -(-self.height // self.tile_height)

    @property
    def cols(self) -> int:
        return -(-self.width // self.tile_width)

    @property
    def count(self) -> int:
        return self.rows * self.cols

    @property
    def numel(self) -> int:
        """Elements of one codeword: a whole tile in (C, tile_height, tile_width) order."""
        return self.channels * self.tile_height * self.tile_width

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, tiles, numel), zero-padding partial tiles."""
        pad_h, pad_w = self.rows * self.tile_height - self.height, self.cols * self.tile_width - self.width
        x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h))
        x = x.view(x.shape[0], self.channels, self.rows, self.tile_height, self.cols, self.tile_width)
        return x.permute(0, 2, 4, 1, 3, 5).reshape(x.shape[0], self.count, self.numel)

    def join(self, tiles: torch.Tensor) -> torch.Tensor:
        """(tiles, numel) -> (C, H, W), dropping what lies outside the sample."""
        x = tiles.view(self.rows, self.cols, self.channels, self.tile_height, self.tile_width)
        x = x.permute(2, 0, 3, 1, 4).reshape(self.channels, self.rows * self.tile_height, self.cols * self.tile_width)
        return x[:, : self.height, : self.width]


def step_noise(params: DDCMParams, seed: int, step: int, choices: Choices, grid: TileGrid, device: torch.device) -> torch.Tensor:
    """The noise ``z`` (C, H, W) of one step built from its per-tile choices; shared by encoder and decoder.

    One atom: ``z = w C(k)``. Several: ``y = sum_m w_m C(k_m)`` renormalised to unit RMS per tile
    (App. B.5), with ``w = 1, (l + 1) / C, ...`` for mp and ``w = +-1`` for topm.
    """
    atoms = len(choices[0].indices)
    tiles = [t for t in range(len(choices)) for _ in range(atoms)]
    indices = [k for choice in choices for k in choice.indices]
    vectors = codewords(seed, step, tiles, indices, grid.numel, device).view(len(choices), atoms, grid.numel)
    if choices[0].signs:
        weights = [[1.0 - 2.0 * s for s in choice.signs] for choice in choices]
    else:
        weights = [[1.0] + [(level + 1) / params.coef_levels for level in choice.levels] for choice in choices]
    z = (torch.tensor(weights, dtype=torch.float32, device=device)[:, :, None] * vectors).sum(dim=1)
    if atoms > 1:
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True))
    return grid.join(z)


def _select_topm(scores: torch.Tensor, atoms: int) -> StepChoice:
    top = torch.topk(scores.abs(), atoms).indices.tolist()
    chosen = sorted(top)
    signs = tuple(int(scores[k] < 0) for k in chosen)
    return StepChoice(indices=tuple(chosen), signs=signs)


def _select_mp(
    params: DDCMParams, scores: torch.Tensor, residual: torch.Tensor, seed: int, step: int, tile: int
) -> StepChoice:
    """Greedy matching pursuit maximising cos(z, r) with quantised coefficients (DDCM App. B.5)."""
    if params.atoms == 1:
        return StepChoice(indices=(int(torch.argmax(scores)),))
    count = min(scores.shape[0], MP_CANDIDATES_PER_ATOM * params.atoms)
    candidates = torch.topk(scores, count).indices.tolist()
    atoms = codewords(seed, step, [tile] * count, candidates, residual.shape[0], residual.device).to(torch.float64)
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


@dataclass(frozen=True)
class StepState:
    """What a selector sees at one step of the chain (DDPM eq. 6-7 of Ho et al. 2020, respaced): the batch
    ``x`` at timestep ``t``, its clean estimates ``x0hat``, and the posterior coefficients that make the next
    sample ``c0 x0hat + ct x + sigma z`` at timestep ``t_next``; ``step`` is the codebook step id of ``z``
    and ``size`` its codebook size K."""

    step: int
    size: int
    t: int
    t_next: int
    x: torch.Tensor
    x0hat: torch.Tensor
    c0: float
    ct: float
    sigma: float

    def next_sample(self, b: int, noise: torch.Tensor) -> torch.Tensor:
        """Sample ``b``'s next ``x`` with the step noise ``noise`` (the same arithmetic as the sampler)."""
        return self.c0 * self.x0hat[b] + self.ct * self.x[b] + self.sigma * noise


Selector = Callable[[StepState], list[Choices]]


def run_sampler(
    model: DiffusionModel,
    params: DDCMParams,
    seed: int,
    batch: int,
    sample_shape: tuple[int, int, int],
    select: Selector,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, list[list[Choices]]]:
    """Run the respaced DDPM chain with codebook noise for ``batch`` samples.

    ``select(state)`` returns every sample's per-tile choices for the codebook step ``state.step`` of size
    ``state.size`` (:class:`StepState`). The model is called one sample at a time so that a decoder working
    on one file reproduces the encoder's numbers bit for bit. Returns the final samples
    (batch, C, H, W) and the choices per step and sample; ``progress(n, T)`` follows the model calls.
    """
    schedule = model.schedule
    timesteps = schedule.timesteps(params.steps)
    step_sizes = params.step_sizes(timesteps)
    device = model.device
    whole = TileGrid.for_sample(sample_shape, 0)
    x = step_noise(params, seed, 0, [TRIVIAL_CHOICE], whole, device).repeat(batch, 1, 1, 1)
    grid = TileGrid.for_sample(sample_shape, params.tile)
    history: list[list[Choices]] = []
    for n, t in enumerate(timesteps):
        x0hat = torch.stack([model.predict_x0(x[b], t) for b in range(batch)])
        if progress is not None:
            progress(n + 1, len(timesteps))
        if n == len(timesteps) - 1:
            return x0hat, history
        c0, ct, sigma = schedule.posterior(t, timesteps[n + 1])
        state = StepState(n + 1, step_sizes[n], t, timesteps[n + 1], x, x0hat, c0, ct, sigma)
        choices = select(state)
        history.append(choices)
        x = torch.stack([state.next_sample(b, step_noise(params, seed, n + 1, tile_choices, grid, device))
                         for b, tile_choices in enumerate(choices)])
    raise AssertionError("unreachable: timesteps is never empty")


Direction = Callable[[StepState], torch.Tensor]


def directed_selector(params: DDCMParams, seed: int, batch: int, shape: Sequence[int], direction: Direction) -> Selector:
    """Per tile, the codewords that best point along ``direction(state)`` (batch, C, H, W): the largest inner
    products (eq. 7 when the direction is ``x0 - x0hat``; DDCM eq. 8 with a loss linearised in the codeword)."""
    grid = TileGrid.for_sample(shape, params.tile)

    def select(state: StepState) -> list[Choices]:
        if state.size == 1:
            return [[TRIVIAL_CHOICE] * grid.count for _ in range(batch)]
        residuals = grid.split(direction(state))
        scores = codebook_scores(seed, state.step, state.size, residuals)
        if params.selection == "topm":
            return [[_select_topm(scores[b, t], params.atoms) for t in range(grid.count)] for b in range(batch)]
        return [
            [_select_mp(params, scores[b, t], residuals[b, t], seed, state.step, t) for t in range(grid.count)]
            for b in range(batch)
        ]

    return select


def search_selector(params: DDCMParams, targets: torch.Tensor, seed: int) -> Selector:
    """The encoder's selector: per tile, the codewords that point from ``x0hat`` towards the target (eq. 7)."""
    return directed_selector(params, seed, len(targets), targets.shape[1:], lambda state: targets - state.x0hat)


def random_selector(params: DDCMParams, tiles: int, rng: np.random.Generator) -> Selector:
    """Compressed generation (Sec. 4): uniformly random choices, so a sample comes with its bitstream."""

    def select(state: StepState) -> list[Choices]:
        return [random_choices(params, tiles, state.size, rng)]

    return select


def random_choices(params: DDCMParams, tiles: int, size: int, rng: np.random.Generator) -> Choices:
    """Uniformly random choices of every tile for one step with codebook size ``size``."""
    if size == 1:
        return [TRIVIAL_CHOICE] * tiles
    symbols = [[_random_below(rng, s) for s in params.symbol_sizes(size)] for _ in range(tiles)]
    return [symbols_to_choice(params, tile_symbols, size) for tile_symbols in symbols]


def _random_below(rng: np.random.Generator, below: int) -> int:
    """Uniform integer in [0, below), also for alphabets beyond 64 bits (rejection sampling)."""
    if below < 2**62:
        return int(rng.integers(0, below))
    nbytes = (below.bit_length() + 7) // 8
    while True:
        value = int.from_bytes(rng.bytes(nbytes), "little") >> (8 * nbytes - below.bit_length())
        if value < below:
            return value


def replay_selector(history: list[Choices]) -> Selector:
    """The decoder's selector: return the stored choices step by step."""

    def select(state: StepState) -> list[Choices]:
        return [history[state.step - 1]]

    return select


def _step_sizes(params: DDCMParams, model: DiffusionModel) -> list[int]:
    """Validate the parameters against the model's schedule; returns the per-step codebook sizes."""
    n = model.schedule.num_train_timesteps
    if params.window is not None and params.window[0] >= n:
        raise InvalidParameterError(f"Expected window high in [0, {n - 1}] for this model, got {params.window[0]}")
    return params.step_sizes(model.schedule.timesteps(params.steps))


def payload_bound(params: DDCMParams, model: DiffusionModel, width: int, height: int) -> int:
    """The exact payload length for these parameters, model and image size (independent of the pixels)."""
    tiles = TileGrid.for_sample(model.sample_shape(width, height), params.tile).count
    return payload_size(params, _step_sizes(params, model), tiles)


def params_for_bpp(
    bpp: float, model: DiffusionModel, base: DDCMParams, file_size: Callable[[DDCMParams], int], pixels: int,
    *, fallback: bool = False, grow_tile: bool = False, smallest_tile: int | None = None,
) -> DDCMParams:
    """The largest configuration of the family around ``base`` whose whole file is at most ``bpp``.

    Atoms M grow first (binary search; topm only while bits still grow with M, up to 2K/3), then K grows
    4x at a time; each tile's leftover budget then goes to a larger K or one more atom (``topped_up``),
    which brings the file within a few percent under the target. With ``grow_tile`` the tiles 2x, 4x, ...
    the base tile (up to MAX_LADDER_TILE) and down to ``smallest_tile`` (default: the base tile) are filled
    the same way, and the smallest tile whose file reaches TOP_UP_FILL of the budget wins, else the
    smallest that reaches LADDER_FILL, else the fullest: fewer, larger tiles keep every step coded at low
    rates, which measured 1-2 dB better at 0.05-0.1 bpp than coding only the first steps, while small
    tiles win at higher rates (benchmarks/ladder_study.py). When not even one atom per step fits, only the
    first steps are coded (a window, K = 1 afterwards) while the sampler keeps all its steps. When even a
    file without payload exceeds the target this raises, or with ``fallback`` returns that smallest file
    with a :class:`RateFallbackWarning`.
    """
    if isinstance(bpp, bool) or not isinstance(bpp, (int, float)) or not 0 < bpp <= 64:
        raise InvalidParameterError(f"Expected bpp in (0, 64], got {bpp!r}")
    smallest_tile = base.tile if smallest_tile is None else smallest_tile
    budget = math.floor(bpp * pixels / 8)

    def fits(params: DDCMParams) -> bool:
        return file_size(params) <= budget

    def largest(low: int, high: int, make: Callable[[int], DDCMParams]) -> int:
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(make(mid)) else (low, mid - 1)
        return low

    def atom_cap(params: DDCMParams, size: int) -> int:
        return min(MAX_ATOMS, size if params.selection == "mp" else max(1, (2 * size - 1) // 3))

    def filled(start: DDCMParams) -> DDCMParams:
        size = start.codebook_size
        while True:
            cap = atom_cap(start, size)
            params = replace(start, codebook_size=size)
            atoms = largest(1, cap, lambda m: replace(params, atoms=m))
            if atoms < cap or size * 4 > MAX_LADDER_CODEBOOK:
                return replace(params, atoms=atoms)
            size *= 4

    base = replace(base, atoms=1)
    tiles = [base.tile]
    while grow_tile and 0 < tiles[-1] < MAX_LADDER_TILE:
        tiles.append(2 * tiles[-1])
    while grow_tile and tiles[0] > 0 and tiles[0] // 2 >= smallest_tile:
        tiles.insert(0, tiles[0] // 2)

    def topped_up(params: DDCMParams) -> DDCMParams:
        """The rest of the budget, the first way that brings the file to TOP_UP_FILL of it (else the fullest):
        the same atoms from a larger codebook below the ladder's next 4x step; one atom more from the largest
        codebook up to K that fits; the same atoms from any larger codebook. A larger K buys more PSNR per
        bit than more atoms (builtin, kodim05 crop at 0.2 bpp: K 27 with 2 atoms 17.80 dB, K 11 with 3
        atoms 17.16 dB), but on small images its steps can stop short (one bit a tile and step is a large
        share of the file); one more atom fills closely at a small K."""
        def wider(high: int) -> DDCMParams:
            return replace(params, codebook_size=largest(params.codebook_size, high,
                                                         lambda k: replace(params, codebook_size=k)))

        options = [wider(4 * params.codebook_size - 1)]
        more = params.atoms + 1
        if more <= MAX_ATOMS:
            smallest_size = next(k for k in range(more, 3 * more + 2) if atom_cap(params, k) >= more)
            richer = replace(params, atoms=more, codebook_size=smallest_size)
            if smallest_size <= params.codebook_size and fits(richer):
                size = largest(smallest_size, params.codebook_size, lambda k: replace(richer, codebook_size=k))
                options.append(replace(richer, codebook_size=size))
        options.append(wider(MAX_LADDER_CODEBOOK))
        close = [option for option in options if file_size(option) >= TOP_UP_FILL * budget]
        return close[0] if close else max(options, key=file_size)

    choices = [topped_up(filled(replace(base, tile=tile))) for tile in tiles if fits(replace(base, tile=tile))]
    if choices:
        close = [params for params in choices if file_size(params) >= TOP_UP_FILL * budget]
        full = close or [params for params in choices if file_size(params) >= LADDER_FILL * budget]
        return full[0] if full else max(choices, key=file_size)
    base = replace(base, tile=tiles[-1])
    timesteps = model.schedule.timesteps(base.steps)

    def first_steps_coded(count: int) -> DDCMParams:
        """Code only the first ``count`` steps (DDCM App. B.4's window; K = 1 afterwards)."""
        high = model.schedule.num_train_timesteps - 1
        return replace(base, window=(high, timesteps[count - 1]) if count else (0, 0))

    if not fits(first_steps_coded(0)):
        smallest = first_steps_coded(0)
        minimum = 8 * file_size(smallest) / pixels
        message = (f"bpp={bpp:.5g} is below the minimum {minimum:.5f} for this image "
                   "(header, alpha and metadata included)")
        if not fallback:
            raise InvalidParameterError(message)
        warnings.warn(f"{message}; writing the smallest file instead", RateFallbackWarning, stacklevel=2)
        return smallest
    return first_steps_coded(largest(0, len(timesteps) - 1, first_steps_coded))


def choose_params(
    model: DiffusionModel, given: dict[str, Any], bpp: float | None, quality: float | None,
    header_size: Callable[[DDCMParams], int], width: int, height: int, images: Sequence[torch.Tensor] = (),
) -> DDCMParams:
    """Rate control. Explicit parameters without a rate are used as given (the rest from the defaults);
    ``bpp=`` or ``quality=`` (default quality when nothing is given) searches atoms, then codebook size
    (and, unless ``tile`` is given, the tile), starting from the defaults updated with the given
    parameters, except that K starts at :func:`ladder_codebook` unless ``codebook_size`` is given. A
    quality preset below the smallest possible file falls back to that file (with a warning); an explicit
    ``bpp=`` never exceeds its target."""
    target = rate_target(bpp, quality, bool(given))
    if target is None:
        return DDCMParams.from_dict(given)

    def file_size(params: DDCMParams) -> int:
        return header_size(params) + payload_bound(params, model, width, height)

    start = given if "codebook_size" in given else {**given, "codebook_size": ladder_codebook(model)}
    base = DDCMParams.from_dict(start)
    return params_for_bpp(target.bpp, model, base, file_size, width * height, fallback=target.preset,
                          grow_tile="tile" not in given, smallest_tile=ladder_start(model, base.tile))


def ladder_codebook(model: DiffusionModel) -> int:
    """The first K rate control tries when ``codebook_size`` is not given. On pixel models PIXEL_LADDER_CODEBOOK:
    the encoder scans K codewords of all 3 x H x W values a step, as costly as the model call, so a step's
    bits are cheapest from more tiles with a small K (builtin, training-photo crops at 0.1 / 0.4 / 0.8 bpp:
    20.28 / 23.82 / 26.34 dB from K = 16 against 20.34 / 23.81 / 26.34 dB from K = 64, for 26 s instead of
    34-36 s an encode; benchmarks/ladder_study.py ``--sizes 16 64``). On latent models the default K: their
    scan covers 48x fewer values, and K = 16 lost 0.4 dB at 0.1 bpp (builtin-latent, kodim05 crop: K 18
    with 6 atoms 17.43 dB, K 97 with 3 atoms 17.84 dB; benchmarks/encode_decode_ratio.py)."""
    return PIXEL_LADDER_CODEBOOK if pixels_per_position(model) == 1 else DDCMParams().codebook_size


def ladder_start(model: DiffusionModel, tile: int) -> int:
    """The smallest tile rate control tries (at least MIN_LADDER_TILE): half the base tile on pixel models; on
    a latent model, whose positions each stand for f x f pixels, the base tile / f. Smaller tiles carry a
    step's bits with a smaller K, which costs less encode time (benchmarks/ladder_study.py on the training
    photos): on builtin-latent, tiles of 8 gave the same PSNR as 32 at 0.4 and 0.8 bpp (22.60 / 22.74 dB
    against 22.49 / 22.73) for 2-3x less encode time; on builtin at 0.4 bpp, tile 16 with K 19 gave 24.68 dB
    against 23.82 dB for tile 32 with K 17 and 7 atoms, in the same time."""
    factor = math.isqrt(pixels_per_position(model))
    return max(MIN_LADDER_TILE, tile // 2 if factor == 1 else min(tile, tile // factor))


def encode_batch(
    model: DiffusionModel, params: DDCMParams, seed: int, pixels: Sequence[torch.Tensor],
    progress: Progress | None = None,
) -> list[tuple[bytes, torch.Tensor]]:
    """Encode same-size uint8 images (C, H, W); returns (payload, reconstruction) per image.

    The codebooks of every step are scanned once for the whole batch. The reconstruction is the
    uint8 image the decoder will produce from the payload.
    """
    step_sizes = _step_sizes(params, model)
    height, width = pixels[0].shape[1:]
    if any(p.shape != pixels[0].shape for p in pixels):
        raise InvalidParameterError("encode_batch needs images of one size and mode; encode others separately")
    targets = torch.stack([model.to_model_space(p) for p in pixels])
    final, history = run_sampler(
        model, params, seed, len(pixels), tuple(targets.shape[1:]), search_selector(params, targets, seed), progress
    )
    return [
        (write_payload(params, step_sizes, [step[b] for step in history]), model.to_pixels(final[b], width, height))
        for b in range(len(pixels))
    ]


def decode(
    model: DiffusionModel, params: DDCMParams, seed: int, width: int, height: int, payload: bytes,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Replay the sampler with the stored choices; returns uint8 pixels (C, height, width)."""
    try:
        step_sizes = _step_sizes(params, model)
    except InvalidParameterError as exc:
        raise CorruptFileError(f"DDCM parameters do not fit model {model.name!r}: {exc}") from None
    shape = model.sample_shape(width, height)
    history = read_payload(params, step_sizes, TileGrid.for_sample(shape, params.tile).count, payload)
    final, _ = run_sampler(model, params, seed, 1, shape, replay_selector(history), progress)
    return model.to_pixels(final[0], width, height)


def generate(
    model: DiffusionModel, params: DDCMParams, seed: int, width: int, height: int, rng: np.random.Generator
) -> tuple[bytes, torch.Tensor]:
    """Compressed generation (Sec. 4): a random sample and the payload that reproduces it."""
    step_sizes = _step_sizes(params, model)
    shape = model.sample_shape(width, height)
    tiles = TileGrid.for_sample(shape, params.tile).count
    final, history = run_sampler(model, params, seed, 1, shape, random_selector(params, tiles, rng))
    return write_payload(params, step_sizes, [step[0] for step in history]), model.to_pixels(final[0], width, height)
