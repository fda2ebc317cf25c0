"""PSC: zero-shot image compression by diffusion posterior sampling (Elata, Michaeli, Elad 2024).

PSC needs no training: a pretrained diffusion model is the prior. Both sides build an image-adaptive
measurement matrix H row by row (AdaSense, Algorithm 1): at round n, with the rows ``H`` and quantised
measurements ``y`` known to both, draw s posterior samples of ``p(x | H x = y)`` with DDRM
(:mod:`.ddrm`), centre them and append their top r principal directions (right singular vectors) as the
next rows. The encoder measures the real image on the new rows, quantises and codes the values
(Algorithm 2); the decoder reads them and replays the same computation, so H is never transmitted.
After the rounds a reconstruction sampler makes the image (DDRM; or the mean of s DDRM samples for
lower distortion). Any prefix of the measurements decodes (``max_measurements``).

Beyond the paper: the measurements are range-coded with a posterior-predictive Laplace model
(:mod:`.coding`); the new rows are made orthonormal to the old ones (the centred samples are
projected onto H's null space before the SVD and re-orthonormalised after), which DDRM's spectral
form needs; and the file carries what keeps encoder and decoder in step: the compute signature
(device type, dtype, torch version, CPU vector ISA or GPU model), the thread count both sides pin,
running CRCs of H and a CRC of the reconstruction. A decoder under another signature refuses unless
forced; a divergence raises :class:`~pillow_diffcodec.errors.DivergenceError`, never a wrong image.

Rate control: PSC is progressive, so ``max_bytes`` stops the encoder at the last measurement whose
coded size still fits; :func:`payload_bound` is therefore an upper bound (``max_bytes``, or the
worst case of every measurement when unlimited), and a file is never larger than the target.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ...compute import pinned_compute
from ...errors import (
    ComputeMismatchError,
    CorruptFileError,
    DivergenceError,
    EncodingError,
    InvalidParameterError,
    RateFallbackWarning,
)
from ...models import DiffusionModel
from ...options import rate_target
from ..base import Progress
from . import ddrm
from .coding import MeasurementCoder, new_decoder, new_encoder
from .format import (
    FINAL_SAMPLERS,
    MAX_BYTES,
    PayloadHead,
    PSCParams,
    checkpoints,
    head_size,
    read_head,
    rounds_for,
    signature_hash,
    worst_case_payload,
)

__all__ = ["PSCParams", "choose_params", "decode", "encode_batch", "payload_bound"]
STEP_AT_ONE_BPP = 0.05  # uniform quantiser step for a 1 bpp target; it grows as 1 / sqrt(bpp) below
STEP_RANGE = (0.005, 0.4)
CHECK_MASK = 0xFFFF
FINAL_STREAM = 0  # noise stream of the final reconstruction; round n (0-based) uses stream n + 1

# Source of one round's measurements: (round, new rows (r, D), predictive mean, scale) -> dequantised values
# for the first k <= r rows (k < r ends the stream).
Source = Callable[[int, torch.Tensor, np.ndarray, np.ndarray], np.ndarray]


def compute_signature(model: DiffusionModel, batched: bool = True) -> str:
    """What the numbers depend on besides the file: torch version, device type, dtype, the CPU's vector
    ISA (oneDNN/MKL kernels differ) or the GPU model, compute capability and CUDA version, and whether
    the s posterior samples share each model call (``batched``; files made before batching say not)."""
    device = model.device
    parts = [f"torch {torch.__version__}", device.type, str(model.dtype).removeprefix("torch.")]
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        parts += [torch.cuda.get_device_name(device), f"sm{major}{minor}", f"cuda {torch.version.cuda}"]
    elif device.type == "cpu":
        parts.append(torch.backends.cpu.get_cpu_capability())
    if batched:
        parts.append("batched samples")
    return "; ".join(parts)


def next_rows(samples: torch.Tensor, rows: torch.Tensor, r: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """AdaSense (PSC Algorithm 1): the top ``r`` right singular vectors of the centred posterior
    samples (s, D), taken in the null space of the current rows (M, D) and orthonormalised against them.

    Returns the new rows (r, D) and, per row, the samples' mean and standard deviation along it: the
    predictive model of the measurement (:mod:`.coding`).
    """
    centred = samples - samples.mean(dim=0, keepdim=True)
    centred = centred - (centred @ rows.T) @ rows
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    new = vh[:r]
    new = new - (new @ rows.T) @ rows
    q, upper = torch.linalg.qr(new.T)
    signs = torch.where(torch.diagonal(upper) < 0, -1.0, 1.0)  # keep the singular vectors' orientation
    new = (q * signs[None, :]).T.contiguous()
    along = samples @ new.T
    mean = along.mean(dim=0).double().cpu().numpy()
    scale = along.std(dim=0).double().cpu().numpy()
    return new, mean, scale


@dataclass
class Trace:
    """Rows, measurements and per-round running CRCs of H after a run of rounds."""

    rows: torch.Tensor
    y: torch.Tensor
    crcs: list[int] = field(default_factory=list)


def run_rounds(
    model: DiffusionModel, params: PSCParams, seed: int, shape: tuple[int, int, int], rounds: int,
    source: Source, expected: dict[int, int] | None = None, on_call: Callable[[], None] | None = None,
    batched: bool = True,
) -> Trace:
    """PSC Algorithm 2's loop, shared by encoder and decoder: up to ``rounds`` rounds of DDRM sampling,
    AdaSense rows and ``source``'s measurements; stops early when the source gives fewer than r values.

    ``expected`` maps rounds (1-based) to the stored H checksums; a mismatch raises DivergenceError.
    """
    numel = math.prod(shape)
    device = model.device
    trace = Trace(torch.zeros(0, numel, device=device), torch.zeros(0, device=device))
    crc = 0
    for n in range(rounds):
        noise = ddrm.noise_stream(seed, n + 1, params.samples, numel, device)
        samples = ddrm.sample(model, trace.rows, trace.y, shape, params.ddrm_steps, noise, params.samples, on_call,
                              batched=batched)
        new, mean, scale = next_rows(samples, trace.rows, params.rows)
        crc = zlib.crc32(new.cpu().numpy().tobytes(), crc)
        trace.crcs.append(crc & CHECK_MASK)
        if expected is not None and n + 1 in expected and expected[n + 1] != trace.crcs[-1]:
            raise DivergenceError(
                f"PSC decoder diverged from the encoder at round {n + 1}: H checksum {trace.crcs[-1]:04x}, file has "
                f"{expected[n + 1]:04x} (different numerics, model or a damaged file); no image is returned"
            )
        values = source(n, new, mean, scale)
        k = len(values)
        trace.rows = torch.cat([trace.rows, new[:k]])
        trace.y = torch.cat([trace.y, torch.as_tensor(values, dtype=torch.float32, device=device)])
        if k < params.rows:
            break
    return trace


def reconstruct(
    model: DiffusionModel, params: PSCParams, seed: int, shape: tuple[int, int, int], trace: Trace, sampler: str,
    on_call: Callable[[], None] | None = None, batched: bool = True,
) -> torch.Tensor:
    """The final reconstruction: one DDRM sample, or the mean of s (an estimate of the posterior mean)."""
    count = 1 if sampler == "ddrm" else params.samples
    noise = ddrm.noise_stream(seed, FINAL_STREAM, count, math.prod(shape), model.device)
    samples = ddrm.sample(model, trace.rows, trace.y, shape, params.final_steps, noise, count, on_call, batched=batched)
    return samples.mean(dim=0).view(shape)


def _counter(progress: Progress | None, total: int) -> Callable[[], None] | None:
    if progress is None:
        return None
    done = [0]

    def tick() -> None:
        done[0] += 1
        progress(done[0], total)

    return tick


def _model_calls(params: PSCParams, rounds: int, sampler: str) -> int:
    return rounds * params.samples * params.ddrm_steps + (1 if sampler == "ddrm" else params.samples) * params.final_steps


def _pixel_check(pixels: torch.Tensor) -> int:
    return zlib.crc32(pixels.cpu().numpy().tobytes()) & CHECK_MASK


class BudgetedEncoder:
    """The encoder's measurement source (PSC Algorithm 2): quantise, code, stop at the budget."""

    def __init__(self, params: PSCParams, target: torch.Tensor) -> None:
        self.params, self.target = params, target
        self.coder = MeasurementCoder(params)
        self.encoder = new_encoder()
        self.count = 0

    def payload_size(self, count: int) -> int:
        rounds = rounds_for(count, self.params.rows)
        head = head_size(count, rounds, self.params.check_every)
        return head + 4 * len(self.encoder.get_compressed())

    def __call__(self, n: int, rows: torch.Tensor, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
        symbols = self.coder.quantise((rows @ self.target).double().cpu().numpy())
        for j in range(len(symbols)):
            saved = self.encoder.clone()
            self.coder.encode(self.encoder, int(symbols[j]), float(mean[j]), float(scale[j]))
            if self.params.max_bytes and self.payload_size(self.count + 1) > self.params.max_bytes:
                self.encoder = saved
                return self.coder.values(symbols[:j])
            self.count += 1
        return self.coder.values(symbols)


def payload_bound(params: PSCParams, model: DiffusionModel, width: int, height: int) -> int:
    """Upper bound of the payload: ``max_bytes``, or every measurement at the range coder's worst cost."""
    return params.max_bytes or worst_case_payload(params)


def step_for_bpp(bpp: float) -> float:
    """Uniform quantiser step for a rate target: coarser at low rates, where fewer, larger measurements are coded."""
    return float(np.clip(STEP_AT_ONE_BPP / math.sqrt(bpp), *STEP_RANGE))


def choose_params(
    model: DiffusionModel, given: dict[str, Any], bpp: float | None, quality: float | None,
    header_size: Callable[[PSCParams], int], width: int, height: int, images: Sequence[torch.Tensor] = (),
) -> PSCParams:
    """Rate control: the payload budget ``max_bytes`` that makes the whole file at most ``bpp`` (or the
    quality preset's rate), and the uniform quantiser's step for that rate unless ``step`` is given.
    Explicit parameters without a rate are used as given. A quality preset below the smallest file falls
    back to it with a warning; an explicit ``bpp=`` never exceeds its target."""
    rate = rate_target(bpp, quality, bool(given))
    if rate is None:
        return PSCParams.from_dict(given)
    target = rate.bpp
    base = PSCParams.from_dict(given)
    if base.quantizer == "uniform" and "step" not in given:
        base = replace(base, step=step_for_bpp(target))
    pixels = width * height
    budget = min(math.floor(target * pixels / 8), MAX_BYTES)
    header = header_size(replace(base, max_bytes=max(budget, 1)))
    max_bytes = budget - header
    if base.max_bytes:
        max_bytes = min(max_bytes, base.max_bytes)
    smallest = head_size(0, 0, base.check_every)
    if max_bytes < smallest:
        minimum = 8 * (header + smallest) / pixels
        message = (f"bpp={target:.5g} is below the minimum {minimum:.5f} for this image "
                   "(header, alpha and metadata included)")
        if not rate.preset:
            raise InvalidParameterError(message)
        warnings.warn(f"{message}; writing the smallest file instead", RateFallbackWarning, stacklevel=2)
        max_bytes = smallest
    return replace(base, max_bytes=max_bytes)


def encode_one(
    model: DiffusionModel, params: PSCParams, seed: int, image: torch.Tensor, signature: str, threads: int,
    on_call: Callable[[], None] | None = None, batched: bool = True,
) -> tuple[bytes, torch.Tensor, Trace]:
    """Encode one uint8 image (C, H, W): (payload, the decoder's reconstruction, the rounds' trace);
    ``batched=False`` (with its signature) makes the files PSC made before it batched its samples."""
    height, width = image.shape[1:]
    target = model.to_model_space(image)
    shape = tuple(target.shape)
    source = BudgetedEncoder(params, target.reshape(-1))
    with pinned_compute(threads):
        trace = run_rounds(model, params, seed, shape, params.iterations, source, on_call=on_call, batched=batched)
        final = reconstruct(model, params, seed, shape, trace, params.final_sampler, on_call, batched)
    recon = model.to_pixels(final, width, height)
    rounds = rounds_for(source.count, params.rows)
    checks = tuple(trace.crcs[i - 1] for i in checkpoints(rounds, params.check_every))
    head = PayloadHead(threads, signature_hash(signature), source.count, _pixel_check(recon), checks)
    payload = head.to_bytes() + source.encoder.get_compressed().astype("<u4").tobytes()
    if len(payload) > payload_bound(params, model, width, height):
        raise EncodingError(f"PSC payload of {len(payload)} bytes exceeds its bound")
    return payload, recon, trace


def encode_batch(
    model: DiffusionModel, params: PSCParams, seed: int, pixels: Sequence[torch.Tensor],
    progress: Progress | None = None,
) -> list[tuple[bytes, torch.Tensor]]:
    """Encode uint8 images (C, H, W) one after another; returns (payload, the decoder's reconstruction) each.

    Every image runs exactly the computation its decoder will run (same shapes, threads and noise), so
    the returned reconstruction is the decoded image bit for bit under the same compute signature.
    """
    signature = compute_signature(model)
    smallest = head_size(0, 0, params.check_every)
    if params.max_bytes and params.max_bytes < smallest:
        raise InvalidParameterError(f"max_bytes={params.max_bytes} cannot hold even the PSC payload head ({smallest} bytes)")
    threads = min(torch.get_num_threads(), 255)
    tick = _counter(progress, _model_calls(params, params.iterations, params.final_sampler) * len(pixels))
    return [encode_one(model, params, seed, image, signature, threads, tick)[:2] for image in pixels]


def replay(
    model: DiffusionModel, params: PSCParams, seed: int, width: int, height: int, payload: bytes,
    progress: Progress | None = None, *, max_measurements: int | None = None, sampler: str | None = None,
    force: bool = False,
) -> tuple[torch.Tensor, Trace]:
    """:func:`decode` that also returns the rounds' trace (the rows H and measurements y it replayed)."""
    if max_measurements is not None and (
        isinstance(max_measurements, bool) or not isinstance(max_measurements, int) or max_measurements < 0
    ):
        raise InvalidParameterError(f"Expected max_measurements >= 0, got {max_measurements!r}")
    sampler = params.final_sampler if sampler is None else sampler
    if sampler not in FINAL_SAMPLERS:
        raise InvalidParameterError(f"Expected sampler in {sorted(FINAL_SAMPLERS)}, got {sampler!r}")
    try:
        model.schedule.timesteps(max(params.ddrm_steps, params.final_steps))
    except InvalidParameterError as exc:
        raise CorruptFileError(f"PSC parameters do not fit model {model.name!r}: {exc}") from None
    head, coded = read_head(params, payload)
    signature = compute_signature(model)
    batched = head.signature != signature_hash(compute_signature(model, batched=False))
    if batched and head.signature != signature_hash(signature) and not force:
        raise ComputeMismatchError(
            f"File was encoded under another compute signature (hash {head.signature:08x}) than this decoder's "
            f"{signature!r} (hash {signature_hash(signature):08x}); "
            "PSC decodes bit-exactly only under the encoder's signature (pass force=True to try anyway: a divergence "
            "is detected and reported)"
        )
    count = head.measurements if max_measurements is None else min(head.measurements, max_measurements)
    rounds = rounds_for(count, params.rows)
    expected = dict(zip(checkpoints(rounds_for(head.measurements, params.rows), params.check_every), head.checks))
    coder, decoder = MeasurementCoder(params), new_decoder(coded)
    remaining = [count]

    def source(n: int, rows: torch.Tensor, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
        k = min(len(mean), remaining[0])
        remaining[0] -= k
        return coder.values(coder.decode(decoder, mean[:k], scale[:k]))

    shape = model.sample_shape(width, height)
    tick = _counter(progress, _model_calls(params, rounds, sampler))
    with pinned_compute(head.threads):
        trace = run_rounds(model, params, seed, shape, rounds, source, expected, tick, batched)
        final = reconstruct(model, params, seed, shape, trace, sampler, tick, batched)
    pixels = model.to_pixels(final, width, height)
    if count == head.measurements and sampler == params.final_sampler and _pixel_check(pixels) != head.pixel_check:
        raise DivergenceError(
            f"PSC reconstruction checksum {_pixel_check(pixels):04x} differs from the encoder's {head.pixel_check:04x} "
            "(different numerics or a damaged file); no image is returned"
        )
    return pixels, trace


def decode(
    model: DiffusionModel, params: PSCParams, seed: int, width: int, height: int, payload: bytes,
    progress: Progress | None = None, *, max_measurements: int | None = None, sampler: str | None = None,
    force: bool = False,
) -> torch.Tensor:
    """Replay the encoder's rounds with the stored measurements; returns uint8 pixels (C, height, width).

    ``max_measurements`` decodes only that prefix of the measurements (progressive decoding);
    ``sampler`` chooses the final reconstruction instead of the file's; ``force`` decodes under a
    compute signature other than the encoder's (divergence is still detected). Raises
    :class:`ComputeMismatchError` for another signature, :class:`DivergenceError` when the replay
    departs from the encoder's, :class:`CorruptFileError` for a damaged payload.
    """
    return replay(model, params, seed, width, height, payload, progress, max_measurements=max_measurements,
                  sampler=sampler, force=force)[0]

