"""Public API: encode images to diffcodec files and decode them.

The CompressAI-style contract: ``encode(image) -> bytes`` and ``decode(bytes) -> PIL.Image``. Rate
is exactly predictable (the payload size depends on the parameters only), so ``bpp=`` picks the
largest configuration whose whole file fits the target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import container, imagemodes
from .codecs import codec_by_id, codec_by_name, ddcm
from .codecs.ddcm_format import MAX_ATOMS, DDCMParams
from .errors import InvalidParameterError, ModelMismatchError, UnsupportedImageError
from .fileinfo import info
from .models import DiffusionModel, load_model

__all__ = ["EncodeResult", "decode", "encode", "encode_batch", "encode_images", "file_size", "generate", "info"]

ModelRef = str | Path | DiffusionModel
# The family that bpp= and quality= search: sized for the built-in model (a 768x512 image encodes in
# well under a minute on two CPU cores); explicit parameters override any of these.
QUALITY_BASE_PARAMS = DDCMParams(steps=20, codebook_size=64, selection="topm", tile=32)
MIN_QUALITY_BPP = 0.01
DEFAULT_QUALITY = 60  # used when neither a rate nor any codec parameter is given
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class EncodeResult:
    """A file and the image its decoder will produce (bit for bit, on the same machine)."""

    data: bytes
    reconstruction: Image.Image

    @property
    def bpp(self) -> float:
        return 8 * len(self.data) / (self.reconstruction.width * self.reconstruction.height)


def quality_to_bpp(quality: float) -> float:
    """Quality preset (0-100) to a target rate: 0.01 bpp at 0, doubling every 12.5 points (2.56 at 100)."""
    if isinstance(quality, bool) or not isinstance(quality, (int, float)) or not 0 <= quality <= 100:
        raise InvalidParameterError(f"Expected quality in [0, 100], got {quality!r}")
    return MIN_QUALITY_BPP * 2 ** (quality / 12.5)


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InvalidParameterError(f"Expected dtype in {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def _resolve(model: ModelRef | None, device: Any, dtype: torch.dtype | str | None) -> DiffusionModel:
    """The model for ``model`` (None: the built-in default), cached per process."""
    return load_model(model, device=device, dtype=_dtype(dtype))


def _to_pixels(image: Image.Image, model: DiffusionModel) -> torch.Tensor:
    """RGB or L PIL image -> uint8 tensor (C, H, W) in the model's channel count."""
    coded = image.convert("RGB" if model.channels == 3 else "L")
    array = np.asarray(coded, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _to_image(pixels: torch.Tensor) -> Image.Image:
    array = pixels.permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array[:, :, 0], "L") if array.shape[2] == 1 else Image.fromarray(array, "RGB")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= container.MAX_SEED:
        raise InvalidParameterError(f"Expected seed in [0, {container.MAX_SEED}], got {seed!r}")


def _header(
    params: DDCMParams, model: DiffusionModel, prepared: imagemodes.PreparedImage, seed: int
) -> container.Header:
    _check_seed(seed)
    return container.Header(
        codec_id=codec_by_name("DDCM").codec_id,
        mode=prepared.mode,
        width=prepared.coded.width,
        height=prepared.coded.height,
        seed=seed,
        fingerprint=model.fingerprint,
        model_name=model.name,
        params=params.to_bytes(),
        chunks=prepared.chunks,
    )


def _size(params: DDCMParams, model: DiffusionModel, prepared: imagemodes.PreparedImage, seed: int) -> int:
    width, height = prepared.coded.size
    return container.header_size(_header(params, model, prepared, seed)) + ddcm.payload_bytes(params, model, width, height)


def file_size(params: DDCMParams, model: DiffusionModel, width: int, height: int, mode: str = "RGB", seed: int = 0) -> int:
    """Exact size in bytes of a file with these parameters (header, payload and CRC; no chunks)."""
    blank = imagemodes.PreparedImage(Image.new("L", (width, height)), mode, ())
    return _size(params, model, blank, seed)


def params_for_bpp(
    bpp: float, model: DiffusionModel, base: DDCMParams, prepared: imagemodes.PreparedImage, seed: int = 0
) -> DDCMParams:
    """The largest configuration of the family around ``base`` whose whole file is at most ``bpp``.

    Atoms M grow first (binary search; topm only while bits still grow with M, up to 2K/3), then
    K grows 4x at a time; below M = 1 only the first steps are coded (a window, K = 1 afterwards)
    while the sampler keeps all its steps. Raises when even a file without payload exceeds the target.
    """
    if isinstance(bpp, bool) or not isinstance(bpp, (int, float)) or not 0 < bpp <= 64:
        raise InvalidParameterError(f"Expected bpp in (0, 64], got {bpp!r}")
    width, height = prepared.coded.size
    budget = math.floor(bpp * width * height / 8)

    def fits(params: DDCMParams) -> bool:
        return _size(params, model, prepared, seed) <= budget

    def largest(low: int, high: int, make: Any) -> int:
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(make(mid)) else (low, mid - 1)
        return low

    base = replace(base, atoms=1)
    if not fits(base):
        timesteps = model.schedule.timesteps(base.steps)

        def first_steps_coded(count: int) -> DDCMParams:
            """Code only the first ``count`` steps (DDCM App. B.4's window; K = 1 afterwards)."""
            high = model.schedule.num_train_timesteps - 1
            return replace(base, window=(high, timesteps[count - 1]) if count else (0, 0))

        if not fits(first_steps_coded(0)):
            minimum = 8 * _size(first_steps_coded(0), model, prepared, seed) / (width * height)
            raise InvalidParameterError(
                f"bpp={bpp} is below the minimum {minimum:.5f} for a {width}x{height} image "
                "(header, alpha and metadata chunks included)"
            )
        return first_steps_coded(largest(0, len(timesteps) - 1, first_steps_coded))
    size = base.codebook_size
    while True:
        cap = min(MAX_ATOMS, size if base.selection == "mp" else max(1, (2 * size - 1) // 3))
        params = replace(base, codebook_size=size)
        atoms = largest(1, cap, lambda m: replace(params, atoms=m))
        if atoms < cap or size * 4 > 1 << 16:
            return replace(params, atoms=atoms)
        size *= 4


def _codec_params(
    model: DiffusionModel, prepared: imagemodes.PreparedImage, seed: int,
    bpp: float | None, quality: float | None, options: dict[str, Any],
) -> DDCMParams:
    if bpp is not None and quality is not None:
        raise InvalidParameterError("Give bpp= or quality=, not both")
    if bpp is None and quality is None:
        if options:
            return DDCMParams.from_dict(options)
        quality = DEFAULT_QUALITY
    base = DDCMParams.from_dict({**QUALITY_BASE_PARAMS.to_dict(), **options})
    target = bpp if bpp is not None else quality_to_bpp(quality)
    return params_for_bpp(target, model, base, prepared, seed)


def encode_images(
    images: Sequence[Image.Image],
    *,
    codec: str = "DDCM",
    model: ModelRef | None = None,
    bpp: float | None = None,
    quality: float | None = None,
    seed: int = 0,
    device: Any = None,
    dtype: torch.dtype | str | None = None,
    keep_alpha: bool = True,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    xmp: bytes | str | None = None,
    **params: Any,
) -> list[EncodeResult]:
    """Encode same-size, same-mode images in one batch; returns each file with its reconstruction.

    Metadata (``icc_profile``, ``exif``, ``xmp``) defaults to each image's ``info``; alpha is kept
    losslessly unless ``keep_alpha=False``. Codec parameters: ``steps``, ``codebook_size``,
    ``atoms``, ``coef_levels``, ``selection``, ``window`` -- or ``bpp=`` / ``quality=`` for rate control.
    """
    if not images:
        return []
    codec_by_name(codec)
    _check_seed(seed)
    loaded = _resolve(model, device, dtype)
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
    if loaded.channels == 1 and prepared[0].coded.mode != "L":
        raise UnsupportedImageError(f"Model {loaded.name!r} codes grayscale images; convert the image to 'L'")
    codec_params = _codec_params(loaded, prepared[0], seed, bpp, quality, params)
    pixels = [_to_pixels(p.coded, loaded) for p in prepared]
    results = []
    for prep, (payload, recon) in zip(prepared, ddcm.encode_batch(loaded, codec_params, seed, pixels)):
        data = container.pack(_header(codec_params, loaded, prep, seed), payload)
        results.append(EncodeResult(data, imagemodes.finish(_to_image(recon), prep.mode, prep.chunks)))
    return results


def encode(image: Image.Image, **options: Any) -> bytes:
    """Encode one image to diffcodec bytes; options as :func:`encode_images`."""
    return encode_images([image], **options)[0].data


def encode_batch(images: Sequence[Image.Image], **options: Any) -> list[bytes]:
    """Encode same-size images together (the codebook scan is shared); returns one file per image."""
    return [result.data for result in encode_images(images, **options)]


def _default_max_pixels() -> int | None:
    """Pillow's error threshold for decompression bombs: twice ``Image.MAX_IMAGE_PIXELS``."""
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * int(limit)


def decode(
    data: bytes,
    *,
    model: ModelRef | None = None,
    device: Any = None,
    dtype: torch.dtype | str | None = None,
    max_pixels: int | None | str = "pillow",
) -> Image.Image:
    """Decode a file to a PIL image. An explicit ``model`` wins over the reference stored in the file;
    either way its fingerprint must match. ``max_pixels`` defaults to Pillow's bomb limit."""
    limit = _default_max_pixels() if max_pixels == "pillow" else max_pixels
    header, payload = container.parse(data, max_pixels=limit)
    entry = codec_by_id(header.codec_id)
    params = entry.params.from_bytes(header.params)
    loaded = _resolve(model if model is not None else header.model_name, device, dtype)
    if loaded.fingerprint != header.fingerprint:
        raise ModelMismatchError(
            f"File was encoded with model {header.model_name!r} (fingerprint {header.fingerprint.hex()}), "
            f"but model {loaded.name!r} has fingerprint {loaded.fingerprint.hex()}"
        )
    pixels = entry.load().decode_payload(loaded, params, header.seed, header.width, header.height, payload)
    return imagemodes.finish(_to_image(pixels), header.mode, header.chunks)


def generate(
    width: int,
    height: int,
    *,
    model: ModelRef | None = None,
    seed: int = 0,
    rng_seed: int | None = None,
    mode: str = "RGB",
    device: Any = None,
    dtype: torch.dtype | str | None = None,
    **params: Any,
) -> EncodeResult:
    """Compressed generation (DDCM Sec. 4): a random sample together with the file that decodes to it."""
    if mode not in ("RGB", "L"):
        raise UnsupportedImageError(f"generate() makes 'RGB' or 'L' images, got mode {mode!r}")
    loaded = _resolve(model, device, dtype)
    codec_params = DDCMParams.from_dict(params)
    payload, pixels = ddcm.generate(loaded, codec_params, seed, width, height, np.random.default_rng(rng_seed))
    prepared = imagemodes.PreparedImage(Image.new(mode, (width, height)), mode, ())
    image = _to_image(pixels).convert(mode)
    return EncodeResult(container.pack(_header(codec_params, loaded, prepared, seed), payload), image)
