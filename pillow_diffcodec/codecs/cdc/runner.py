"""CDC: lossy image compression with a conditional diffusion decoder (Yang & Mandt, NeurIPS 2023).

The encoder maps the image to a latent ``y`` with a learned analysis transform and codes it with a
mean-scale hyperprior (:mod:`pillow_diffcodec.learned_transform`); the decoder runs a diffusion model
conditioned on the decoded latent (:mod:`pillow_diffcodec.codecs.cdc.decoder`). Decoding is DDIM from
``x_1 = gamma * n`` with ``n`` portable Gaussian noise drawn from the file's seed (the codebook
generator of :mod:`pillow_diffcodec.codebook`, stream :data:`NOISE_STEP`): gamma = 0 (the default) is
deterministic, gamma > 0 gives a realistic sample that is the same on every machine.

The official code reports bpp from likelihoods; here the latent is range-coded with constriction from
the integer tables stored with the model, and the file carries a CRC-32 of the z and y symbols so a
decoder that derives other probability tables (numerics of another machine) or reads a damaged stream
raises :class:`~pillow_diffcodec.errors.DivergenceError`/:class:`~pillow_diffcodec.errors.CorruptFileError`
instead of returning a wrong image.

Rate control: a CDC model has a few *rate points* (networks trained with different lambdas, each
with its typical bpp). The actual rate varies with the image, so ``bpp=``/``quality=`` code the images'
latents at every rate point (analysis transform and range coder: a few percent of an encode) and pick
the highest point whose whole file is at or under the target: ``bpp=`` is an upper bound of the file
size, unless no point fits (then the smallest file, with a warning). Without the images (a caller that
has none) the points' *typical* sizes (:func:`typical_payload`) stand in. :func:`payload_bound` is the
worst case of the range coder (far above any real payload).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import constriction
import numpy as np
import torch
import torch.nn.functional as F

from ...codebook import codewords
from ...errors import CorruptFileError, DivergenceError, InvalidParameterError, RateFallbackWarning
from ...learned_transform import EntropyTables, MeanScaleHyperprior
from ...models import check_kind
from ...options import rate_target
from ..base import Progress
from .decoder import ddim_decode
from .format import (
    DEFAULT_GAMMA,
    DEFAULT_STEPS,
    HYPER_STRIDE,
    LATENT_STRIDE,
    CDCParams,
    Payload,
    check_gamma,
    check_steps,
    crc,
    padded,
    symbol_counts,
    worst_case_payload,
)
from .model import CDCModel, CDCNetwork

P = TypeVar("P")  # a codec's parameters (CDCParams, CorrDiffParams)

__all__ = ["CDCParams", "candidate_rates", "choose_params", "decode", "encode_batch", "latent_sizes", "payload_bound",
           "pick_rate_point", "typical_payload"]
NOISE_STEP = 0x0CDC  # codebook step whose tile-0 codeword 0 is the decoder's starting noise


def _model(model: Any) -> CDCModel:
    check_kind(model, "cdc", "CDC")
    return model


def _network(model: Any, params: CDCParams) -> CDCNetwork:
    return _model(model).network(params.rate_point)


def _file_network(model: Any, params: CDCParams) -> CDCNetwork:
    """The rate point a file names (CorruptFileError when the model has no such rate point)."""
    cdc = _model(model)
    if params.rate_point >= len(cdc.networks):
        raise CorruptFileError(
            f"File names rate point {params.rate_point}, but CDC model {cdc.name!r} has {len(cdc.networks)}")
    return cdc.networks[params.rate_point]


def choose_params(
    model: Any, given: dict[str, Any], bpp: float | None, quality: float | None,
    header_size: Callable[[CDCParams], int], width: int, height: int, images: Sequence[torch.Tensor] = (),
) -> CDCParams:
    """The rate point for ``bpp=``/``quality=`` (explicit ``rate_point`` without a rate is used as given);
    with ``images``, chosen on their measured latents (:func:`pick_rate_point`)."""
    cdc = _model(model)
    wanted = rate_target(bpp, quality, bool(given))
    if wanted is None:
        params = CDCParams.from_dict(given)
        cdc.network(params.rate_point)
        return params
    if given:
        raise InvalidParameterError(f"Give rate_point or a rate (bpp=/quality=), not both; got {sorted(given)}")
    candidates = [CDCParams(i) for i in range(len(cdc.rate_points))]
    rates = candidate_rates(candidates, cdc, images, header_size, width, height, side_bytes=lambda p: 0,
                            typical=lambda p: typical_payload(p, cdc, width, height))
    return candidates[pick_rate_point(rates, wanted.bpp, cdc.name, measured=bool(images))]


def candidate_rates(
    candidates: Sequence[P], model: Any, images: Sequence[torch.Tensor], header_size: Callable[[P], int],
    width: int, height: int, *, side_bytes: Callable[[P], int], typical: Callable[[P], int],
) -> list[float]:
    """Each candidate rate point's whole-file bpp: its latent coded for real on ``images`` (the largest over
    them) plus ``side_bytes``, or without images its ``typical`` payload; the header is included."""
    if images:
        latents = latent_sizes(model.networks, images, model.device)
        payloads = [side_bytes(p) + latent for p, latent in zip(candidates, latents)]
    else:
        payloads = [typical(p) for p in candidates]
    return [8 * (header_size(p) + payload) / (width * height) for p, payload in zip(candidates, payloads)]


def latent_sizes(networks: Sequence[CDCNetwork], images: Sequence[torch.Tensor], device: torch.device) -> list[int]:
    """Per network (rate point), the largest latent payload over ``images`` (uint8 (3, H, W)), coded for real:
    the analysis transform and the range coder only, no diffusion."""
    inputs = [_to_input(image, device) for image in images]
    return [max(len(encode_latent(network, x)[0]) for x in inputs) for network in networks]


def pick_rate_point(rates: Sequence[float], target: float, name: str, *, measured: bool) -> int:
    """The rate point for a target bpp, given each point's whole-file bpp (``measured`` on the images to be
    coded, else typical): the highest point (the model's order, lowest rate first) at or under the target,
    so a measured ``bpp=`` is an upper bound of the file size. When none fits, the point with the smallest
    file, with a :class:`RateFallbackWarning` (a lower point can code an image at more bits than a higher
    one: builtin-cdc's lowest point gives Kodak 0.44 bpp, its highest 0.40)."""
    fitting = [i for i, rate in enumerate(rates) if rate <= target]
    if fitting:
        return fitting[-1]
    smallest = min(range(len(rates)), key=rates.__getitem__)
    kind = "measures" if measured else "typically gives"
    warnings.warn(
        f"bpp={target:.5g} is below every rate point of {name!r}; its smallest file {kind} {rates[smallest]:.4f} bpp "
        "(header included); using it", RateFallbackWarning, stacklevel=3)
    return smallest


def payload_bound(params: CDCParams, model: Any, width: int, height: int) -> int:
    """The largest payload any image of this size can give (every symbol at the range coder's worst cost)."""
    cdc = _model(model)
    return worst_case_payload(*symbol_counts(cdc.arch.latent, cdc.arch.hyper, width, height))


def typical_payload(params: CDCParams, model: Any, width: int, height: int) -> int:
    """The payload of the rate point at its typical bpp (measured on training photos) for this image size:
    what rate control compares with the target, since CDC's rate depends on the image."""
    cdc = _model(model)
    point = cdc.rate_points[min(params.rate_point, len(cdc.rate_points) - 1)]
    return min(payload_bound(params, cdc, width, height), int(np.ceil(point.typical_bpp * width * height / 8)))


def _to_input(image: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (3, H, W) -> float (1, 3, H', W') in [-1, 1], padded to multiples of 64 by edge replication."""
    height, width = image.shape[1:]
    pw, ph = padded(width, height)
    x = image.to(device=device, dtype=torch.float32)[None] / 127.5 - 1.0
    return F.pad(x, (0, pw - width, 0, ph - height), mode="replicate") if (pw, ph) != (width, height) else x


def _to_pixels(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    return ((x[0, :, :height, :width].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def start_noise(seed: int, gamma: float, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``x_1 = gamma * n``, n the portable Gaussian codeword C_{NOISE_STEP, 0}(0) of the file's seed."""
    if gamma == 0.0:
        return torch.zeros(shape, device=device)
    numel = int(np.prod(shape))
    return gamma * codewords(seed, NOISE_STEP, [0], [0], numel, device).view(shape)


def _synthesise(network: CDCNetwork, y_hat: torch.Tensor, seed: int, gamma: float, steps: int, width: int,
                height: int, progress: Progress | None) -> torch.Tensor:
    shape = (1, 3, y_hat.shape[2] * LATENT_STRIDE, y_hat.shape[3] * LATENT_STRIDE)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], steps)

    x0 = ddim_decode(network.unet, y_hat, start_noise(seed, gamma, shape, y_hat.device), steps, tick)
    return _to_pixels(x0, width, height)


@torch.no_grad()
def code_with_hyperprior(
    tables: EntropyTables, hyperprior: MeanScaleHyperprior, y: torch.Tensor
) -> tuple[Payload, torch.Tensor, np.ndarray, np.ndarray]:
    """Quantise a latent (1, C, h, w) around the mean-scale hyperprior's means and range-code it with the
    integer tables (Minnen et al. 2018): (the two streams with their CRCs, y_hat, z symbols, y symbols).
    CDC, CorrDiff and FLDC code their latents with it."""
    z_sym = tables.clamp_z(torch.round(hyperprior.h_a(y)))
    mean, scale = hyperprior.params(z_sym)
    indices = tables.scale_indices(scale)
    y_sym = tables.clamp_y(torch.round(y - mean), indices)
    z_np = z_sym[0].cpu().numpy().astype(np.int64)
    y_np = y_sym[0].cpu().numpy().astype(np.int64)
    z_enc, y_enc = constriction.stream.queue.RangeEncoder(), constriction.stream.queue.RangeEncoder()
    tables.encode_z(z_enc, z_np)
    tables.encode_y(y_enc, y_np, indices[0].cpu().numpy())
    streams = Payload(crc(z_np), crc(y_np), z_enc.get_compressed().astype("<u4").tobytes(),
                      y_enc.get_compressed().astype("<u4").tobytes())
    return streams, mean + y_sym, z_np, y_np


@torch.no_grad()
def decode_with_hyperprior(
    tables: EntropyTables, hyperprior: MeanScaleHyperprior, streams: Payload, z_shape: tuple[int, int, int],
    device: torch.device, codec: str,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The inverse of :func:`code_with_hyperprior`: (y_hat, z symbols, y symbols), checking both CRCs
    (CorruptFileError for the side stream; DivergenceError for the latent, whose scale indices this machine
    recomputes)."""
    z_np = tables.decode_z(_decoder(streams.z_words), z_shape)
    if crc(z_np) != streams.z_crc:
        raise CorruptFileError(f"{codec} hyper-latent checksum mismatch: the z stream is damaged")
    z_sym = torch.as_tensor(z_np, dtype=torch.float32, device=device)[None]
    mean, scale = hyperprior.params(z_sym)
    indices = tables.scale_indices(scale)
    y_np = tables.decode_y(_decoder(streams.y_words), indices[0].cpu().numpy())
    if crc(y_np) != streams.y_crc:
        raise DivergenceError(
            f"{codec} latent checksum mismatch: the y stream is damaged, or this machine's entropy model (scale "
            "indices from the hyperprior) differs from the encoder's; no image is returned")
    return mean + torch.as_tensor(y_np, dtype=torch.float32, device=device)[None], z_np, y_np


@torch.no_grad()
def encode_latent(network: CDCNetwork, x: torch.Tensor) -> tuple[bytes, torch.Tensor, np.ndarray, np.ndarray]:
    """Code one padded image (1, 3, H, W): (payload, y_hat, z symbols, y symbols)."""
    hyperprior = network.transform.hyperprior
    streams, y_hat, z_np, y_np = code_with_hyperprior(network.entropy_tables(), hyperprior, network.transform.g_a(x))
    return streams.to_bytes(), y_hat, z_np, y_np


@torch.no_grad()
def decode_latent(network: CDCNetwork, payload: bytes, width: int, height: int) -> tuple[torch.Tensor, np.ndarray,
                                                                                           np.ndarray]:
    """Decode the latent of a payload: (y_hat, z symbols, y symbols); checks both CRCs."""
    arch = network.arch
    y_count, z_count = symbol_counts(arch.latent, arch.hyper, width, height)
    parsed = Payload.from_bytes(payload, worst_case_payload(y_count, z_count) // 4)
    pw, ph = padded(width, height)
    z_shape = (arch.hyper, ph // HYPER_STRIDE, pw // HYPER_STRIDE)
    device = next(network.parameters()).device
    return decode_with_hyperprior(network.entropy_tables(), network.transform.hyperprior, parsed, z_shape, device, "CDC")


def _decoder(words: bytes) -> constriction.stream.queue.RangeDecoder:
    return constriction.stream.queue.RangeDecoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))


def encode_batch(
    model: Any, params: CDCParams, seed: int, pixels: Sequence[torch.Tensor], progress: Progress | None = None,
) -> list[tuple[bytes, torch.Tensor]]:
    """Encode uint8 images (3, H, W) one by one; returns (payload, the default decoder's output) each.

    The reconstruction is what :func:`decode` gives with the default options (gamma 0, 17 steps), made
    by the same code path from the same latent.
    """
    network = _network(model, params)
    out = []
    for image in pixels:
        height, width = image.shape[1:]
        payload, y_hat, _, _ = encode_latent(network, _to_input(image, _model(model).device))
        with torch.no_grad():
            recon = _synthesise(network, y_hat, seed, DEFAULT_GAMMA, DEFAULT_STEPS, width, height, progress)
        out.append((payload, recon))
    return out


def decode(
    model: Any, params: CDCParams, seed: int, width: int, height: int, payload: bytes,
    progress: Progress | None = None, *, steps: int = DEFAULT_STEPS, gamma: float = DEFAULT_GAMMA,
) -> torch.Tensor:
    """Payload -> uint8 pixels (3, height, width) by DDIM with ``steps`` calls from ``x_1 = gamma * noise(seed)``."""
    steps, gamma = check_steps(steps), check_gamma(gamma)
    network = _file_network(model, params)
    y_hat, _, _ = decode_latent(network, payload, width, height)
    with torch.no_grad():
        return _synthesise(network, y_hat, seed, gamma, steps, width, height, progress)

