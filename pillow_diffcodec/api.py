"""Public API: encode images to diffcodec files and decode them, for any registered codec.

The CompressAI-style contract: ``encode(image) -> bytes`` and ``decode(bytes) -> PIL.Image``. This module
only dispatches: the codec (its rate control, encoder and decoder) comes from the registry, the model
from the model registry, and the header from :mod:`.container`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import conditioning, container, imagemodes, limits, restoration
from .codecs import CODECS, DEFAULT_CODEC, CodecEntry, CodecParams, codec_by_name
from .codecs.base import Progress
from .compute import pinned_compute
from .errors import (
    InvalidParameterError,
    ModelMismatchError,
    ResourceExhaustedError,
    UnsupportedImageError,
)
from .fileinfo import ParsedFile, info, read_file
from .models import DiffusionModel, check_kind, condition, load_model, pixels_per_position, reference_for_file
from .options import check_known
from .restoration import Degradation
from .settings import EncodeSettings, check_restoration, check_seed

__all__ = ["EncodeResult", "decode", "decode_file", "encode", "encode_batch", "encode_images", "file_size", "generate",
           "info", "restore"]

ModelRef = str | Path | DiffusionModel  # or a loaded CDC model (pillow_diffcodec.models.CDCModel)


@dataclass(frozen=True)
class EncodeResult:
    """A file and the image its decoder will produce (bit for bit, on the same machine)."""

    data: bytes
    reconstruction: Image.Image

    @property
    def bpp(self) -> float:
        return container.bits_per_pixel(len(self.data), self.reconstruction.width, self.reconstruction.height)


@contextlib.contextmanager
def _memory_guard(what: str, width: int, height: int) -> Iterator[None]:
    """Turn running out of host or accelerator memory into :class:`ResourceExhaustedError`."""
    try:
        yield
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise ResourceExhaustedError(f"Out of memory while {what} a {width}x{height} image: {exc}") from None
    except RuntimeError as exc:
        text = str(exc).lower()
        if "allocate" in text or "out of memory" in text:
            raise ResourceExhaustedError(
                f"Out of memory while {what} a {width}x{height} image ({str(exc).splitlines()[0]}); "
                "free memory, use a smaller image or another device"
            ) from None
        raise


def _codec_compute(entry: CodecEntry) -> contextlib.AbstractContextManager[None]:
    """The compute settings ``entry``'s maths run under: its pinned thread count, if it declares one."""
    return pinned_compute(entry.compute_threads) if entry.compute_threads else contextlib.nullcontext()


def _to_pixels(image: Image.Image, model: DiffusionModel) -> torch.Tensor:
    """RGB or L PIL image -> uint8 tensor (C, H, W) in the model's image channels."""
    coded = image.convert("RGB" if model.image_channels == 3 else "L")
    array = np.asarray(coded, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _to_image(pixels: torch.Tensor) -> Image.Image:
    array = pixels.permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array[:, :, 0], "L") if array.shape[2] == 1 else Image.fromarray(array, "RGB")


def _header(
    entry: CodecEntry, params: CodecParams, model: DiffusionModel, mode: str, size: tuple[int, int], seed: int,
    chunks: tuple[tuple[bytes, bytes], ...] = (),
) -> container.Header:
    return container.Header(
        codec_id=entry.codec_id,
        mode=mode,
        width=size[0],
        height=size[1],
        seed=seed,
        fingerprint=model.fingerprint,
        model_name=model.name,
        params=params.to_bytes(),
        chunks=chunks,
    )


def _entry_for(params: CodecParams) -> CodecEntry:
    entry = next((e for e in CODECS if isinstance(params, e.params)), None)
    if entry is None:
        raise InvalidParameterError(f"{type(params).__name__} is not the parameter class of a registered codec")
    return entry


def file_size(
    params: CodecParams, model: DiffusionModel, width: int, height: int, mode: str = "RGB", seed: int = 0
) -> int:
    """Size in bytes of a file with these parameters (header, payload and CRC; no chunks): exact for codecs
    whose registry entry declares ``exact_size`` (DDCM), else the largest such a file can be."""
    entry = _entry_for(params)
    header = _header(entry, params, model, mode, (width, height), seed)
    return container.header_size(header) + entry.load().payload_bound(params, model, width, height)


def encode_images(
    images: Sequence[Image.Image],
    *,
    codec: str = DEFAULT_CODEC,
    model: ModelRef | None = None,
    bpp: float | None = None,
    quality: float | None = None,
    prompt: str | None = None,
    guidance: float | None = None,
    seed: int = 0,
    device: Any = None,
    dtype: torch.dtype | str | None = None,
    keep_alpha: bool = True,
    frame: int | None = None,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    xmp: bytes | str | None = None,
    progress: Progress | None = None,
    restore: str | Degradation | None = None,
    perception: float | None = None,
    nr_measure: Callable[[torch.Tensor], float] | None = None,
    record_task: bool = False,
    **params: Any,
) -> list[EncodeResult]:
    """Encode same-size, same-mode images in one batch; returns each file with its reconstruction.

    Metadata (``icc_profile``, ``exif``, ``xmp``) defaults to each image's ``info``; alpha is kept
    losslessly unless ``keep_alpha=False``. A multi-frame image (animated GIF/APNG/WebP, multi-page TIFF)
    is refused with :class:`UnsupportedImageError` naming its frame count unless ``frame=`` chooses one
    (an index from 0; ``frame=0`` also accepts single-frame images). ``params`` are the codec's own
    parameters (for DDCM ``steps``, ``codebook_size``, ``atoms``, ``coef_levels``, ``selection``, ``window``, ``tile``);
    ``bpp=`` / ``quality=`` choose the rest (see the codec's ``choose_params``). ``prompt`` and ``guidance``
    condition a latent (Stable Diffusion) model and are stored in the file's ``Cond`` chunk.

    ``restore`` (a task name, ``"sr4"`` or ``"colorize"``, or a :class:`~pillow_diffcodec.restoration.Degradation`)
    treats the images as degraded inputs and writes files of their restorations (DDCM Sec. 6, compressed
    conditional generation; see :func:`restore`): ``bpp``/``quality`` then count the restored image's pixels.
    ``perception`` (a weight lambda >= 0) switches from posterior sampling to the perception-distortion
    selection of eq. 11-12 with ``nr_measure`` (image (C, H, W) in [0, 1] -> score, lower is better; default
    NIQE); ``record_task`` notes the task in the file (``info["restored_by"]``).
    """
    if not images:
        return []
    images = [imagemodes.select_frame(im, frame) for im in images]  # refused before a model is loaded
    settings = EncodeSettings(codec, model, bpp, quality, seed, device, dtype, params)
    entry = settings.entry
    check_restoration(entry, restore, perception, record_task, nr_measure)
    task = None if restore is None else restoration.task_for(restore)
    text = conditioning.from_options(prompt, guidance)
    loaded = condition(_load_for(entry, model, device, dtype), text)
    model_chunks = (text.chunk(),) if text is not None else ()
    first = images[0]
    if any(im.size != first.size or im.mode != first.mode for im in images):
        raise InvalidParameterError("A batch needs images of one size and mode; encode others separately")
    explicit = {"icc_profile": icc_profile, "exif": exif, "xmp": xmp}
    prepared = [
        imagemodes.prepare(
            im,
            keep_alpha=keep_alpha,
            metadata={key: value if value is not None else im.info.get(key) for key, value in explicit.items()},
        )
        for im in images
    ]
    if loaded.image_channels == 1 and prepared[0].coded.mode != "L":
        raise UnsupportedImageError(f"Model {loaded.name!r} codes grayscale images; convert the image to 'L'")
    runner = entry.load()
    size = prepared[0].coded.size
    if task is not None:
        size = task.output_size(size)
        colour = task.output_channels(1) == 3
        note = f"{task.name}" + (f", perception {perception:g}" if perception is not None else "")
        prepared = [imagemodes.restored(p, size, colour, note if record_task else None) for p in prepared]
    mode, chunks = prepared[0].mode, prepared[0].chunks + model_chunks

    def header_size(candidate: CodecParams) -> int:
        return container.header_size(_header(entry, candidate, loaded, mode, size, seed, chunks))

    with _memory_guard("encoding", *size), _codec_compute(entry):
        if task is None:
            pixels = [_to_pixels(p.coded, loaded) for p in prepared]
            codec_params = runner.choose_params(loaded, params, bpp, quality, header_size, *size, images=pixels)
            coded = runner.encode_batch(loaded, codec_params, seed, pixels, progress)
        else:
            codec_params = runner.choose_params(loaded, params, bpp, quality, header_size, *size)
            inputs = [restoration.measurements(p.coded, task, loaded.image_channels) for p in prepared]
            coded = entry.conditional_runner().restore_batch(
                loaded, codec_params, seed, task, inputs, *size, perception=perception, measure=nr_measure,
                progress=progress)
    results = []
    for prep, (payload, recon) in zip(prepared, coded):
        header = _header(entry, codec_params, loaded, prep.mode, size, seed, prep.chunks + model_chunks)
        data = container.pack(header, payload)
        results.append(EncodeResult(data, imagemodes.finish(_to_image(recon), prep.mode, prep.chunks)))
    return results


def restore(image: Image.Image, task: str | Degradation = "sr4", **options: Any) -> bytes:
    """Restore a degraded image into a compressed file (DDCM Sec. 6, compressed conditional generation).

    ``task``: ``"sr4"`` (4x bicubic super-resolution: the file holds an image 4x the input's sides),
    ``"colorize"`` (an L or RGB image's luma -> an RGB file) or a :class:`~pillow_diffcodec.restoration.Degradation`.
    The file decodes like any DDCM file, without the degraded input. Options as :func:`encode_images`
    (``bpp``/``quality`` apply to the restored image; ``perception=`` for eq. 11-12's selection).
    """
    return encode_images([image], restore=task, **options)[0].data


def encode(image: Image.Image, **options: Any) -> bytes:
    """Encode one image to diffcodec bytes; options as :func:`encode_images`."""
    return encode_images([image], **options)[0].data


def encode_batch(images: Sequence[Image.Image], **options: Any) -> list[bytes]:
    """Encode same-size images together (the codebook scan is shared); returns one file per image."""
    return [result.data for result in encode_images(images, **options)]



def _load_for(entry: CodecEntry, model: ModelRef | None, device: Any, dtype: torch.dtype | str | None) -> Any:
    """The model a codec runs on: ``model`` (default: the codec's own default), refused when of the wrong kind."""
    loaded = load_model(entry.model_or_default(model), device=device, dtype=dtype)
    check_kind(loaded, entry.model_kind, entry.name)
    return loaded

def decode_file(
    parsed: ParsedFile,
    *,
    model: ModelRef | None = None,
    device: Any = None,
    dtype: torch.dtype | str | None = None,
    max_pixels: int | None | str = limits.DEFAULT,
    max_work: int | None | str = limits.DEFAULT,
    progress: Progress | None = None,
    **codec_options: Any,
) -> Image.Image:
    """Decode an already parsed file (see :func:`decode`)."""
    header = parsed.header
    check_known(codec_options, parsed.codec.decode_options, f"{parsed.codec.name} decode")
    stored = reference_for_file(header.model_name, header.fingerprint)
    limits.check_decode(parsed.decode_model_calls(**codec_options), header.width, header.height, max_work, max_pixels,
                        pixels_per_position(model if model is not None else stored))
    loaded = condition(_load_for(parsed.codec, model if model is not None else stored, device, dtype), parsed.conditioning)
    if loaded.fingerprint != header.fingerprint:
        raise ModelMismatchError(
            f"File was encoded with model {header.model_name!r} (fingerprint {header.fingerprint.hex()}), "
            f"but model {loaded.name!r} has fingerprint {loaded.fingerprint.hex()}"
        )
    with _memory_guard("decoding", header.width, header.height), _codec_compute(parsed.codec):
        pixels = parsed.codec.load().decode(
            loaded, parsed.params, header.seed, header.width, header.height, parsed.payload, progress, **codec_options
        )
    return imagemodes.finish(_to_image(pixels), header.mode, header.chunks)


def decode(
    data: bytes,
    *,
    model: ModelRef | None = None,
    device: Any = None,
    dtype: torch.dtype | str | None = None,
    max_pixels: int | None | str = limits.DEFAULT,
    max_work: int | None | str = limits.DEFAULT,
    progress: Progress | None = None,
    **codec_options: Any,
) -> Image.Image:
    """Decode a file to a PIL image.

    An explicit ``model`` wins over the reference stored in the file; either way its fingerprint must
    match. ``max_pixels`` and ``max_work`` (model calls x the model's positions: pixels, or latent positions
    for a latent model) default to the limits in :mod:`pillow_diffcodec.limits`; both are checked before a
    model is loaded. ``codec_options`` are the
    file's codec's own decode options (its registry entry's ``decode_options``, e.g. PSC's
    ``max_measurements``, ``sampler``, ``force``); others raise InvalidParameterError.
    """
    limit = limits.max_pixels_default() if max_pixels == limits.DEFAULT else max_pixels
    parsed = read_file(data, max_pixels=limit)
    return decode_file(
        parsed, model=model, device=device, dtype=dtype, max_pixels=limit, max_work=max_work, progress=progress,
        **codec_options,
    )


def generate(
    width: int,
    height: int,
    *,
    codec: str = DEFAULT_CODEC,
    model: ModelRef | None = None,
    seed: int = 0,
    rng_seed: int | None = None,
    mode: str = "RGB",
    device: Any = None,
    dtype: torch.dtype | str | None = None,
    guide: Any = None,
    **params: Any,
) -> EncodeResult:
    """Compressed generation (DDCM Sec. 4): a random sample together with the file that decodes to it.

    ``guide`` steers the sample without being needed to decode it (DDCM App. C.5-C.6):
    ``pillow_diffcodec.TextGuidance(prompt, candidates)`` on a text-conditioned latent model, or
    ``pillow_diffcodec.ClassifierGuidance(log_prob, candidates)`` with a classifier of your own.
    """
    if mode not in ("RGB", "L"):
        raise UnsupportedImageError(f"generate() makes 'RGB' or 'L' images, got mode {mode!r}")
    entry = codec_by_name(codec)
    runner = entry.generator()
    check_seed(seed)
    loaded = _load_for(entry, model, device, dtype)
    codec_params = entry.params.from_dict(params)
    rng = np.random.default_rng(rng_seed)
    with _codec_compute(entry):
        if guide is None:
            payload, pixels = runner.generate(loaded, codec_params, seed, width, height, rng)
        else:
            payload, pixels = entry.conditional_runner().generate_guided(
                loaded, codec_params, seed, width, height, rng, guide)
    header = _header(entry, codec_params, loaded, mode, (width, height), seed)
    return EncodeResult(container.pack(header, payload), _to_image(pixels).convert(mode))
