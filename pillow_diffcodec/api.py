"""Public API: encode images to diffcodec files, decode them, read their headers.

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

from . import container
from .codecs import codec_by_id, codec_by_name, ddcm
from .errors import InvalidParameterError, ModelMismatchError, UnsupportedImageError
from .models import DiffusionModel, load_model

ModelRef = str | Path | DiffusionModel
SUPPORTED_MODES = ("RGB", "L")
QUALITY_BASE_PARAMS = ddcm.DDCMParams(steps=50, codebook_size=256, selection="topm")
MIN_QUALITY_BPP = 0.01


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


def _resolve(model: ModelRef | None, device: Any, dtype: torch.dtype | None) -> DiffusionModel:
    if model is None:
        from .errors import ModelNotFoundError

        raise ModelNotFoundError("No model given: pass model= a model object or a local model directory")
    return load_model(model, device=device, dtype=dtype or torch.float32)


def _to_pixels(image: Image.Image, model: DiffusionModel) -> torch.Tensor:
    """PIL image -> uint8 tensor (C, H, W) in the model's channel count."""
    if image.mode not in SUPPORTED_MODES:
        raise UnsupportedImageError(f"Mode {image.mode!r} is not supported; supported modes: {SUPPORTED_MODES}")
    coded = image.convert("RGB" if model.channels == 3 else "L")
    array = np.asarray(coded, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _to_image(pixels: torch.Tensor, mode: str) -> Image.Image:
    array = pixels.permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array, "L" if array.shape[2] == 1 else "RGB")
    return image if image.mode == mode else image.convert(mode)


def _header(codec: Any, params: Any, model: DiffusionModel, mode: str, width: int, height: int, seed: int) -> container.Header:
    if not 0 <= seed <= container.MAX_SEED:
        raise InvalidParameterError(f"Expected seed in [0, {container.MAX_SEED}], got {seed}")
    return container.Header(
        codec_id=codec.CODEC_ID,
        mode=mode,
        width=width,
        height=height,
        seed=seed,
        fingerprint=model.fingerprint,
        model_name=model.name,
        params=params.to_bytes(),
    )


def file_size(params: ddcm.DDCMParams, model: DiffusionModel, width: int, height: int, mode: str = "RGB", seed: int = 0) -> int:
    """Exact size in bytes of a file with these parameters (header, payload and CRC)."""
    header = _header(ddcm, params, model, mode, width, height, seed)
    return container.header_size(header) + ddcm.payload_bytes(params, model)


def params_for_bpp(
    bpp: float, width: int, height: int, model: DiffusionModel, base: ddcm.DDCMParams, mode: str = "RGB", seed: int = 0
) -> ddcm.DDCMParams:
    """The largest configuration of the family around ``base`` whose whole file is at most ``bpp``.

    Atoms M grow first (binary search; topm only while bits still grow with M, up to 2K/3), then
    K grows 4x at a time; below M = 1 the number of steps shrinks. Raises when even a single step
    (a header without payload) exceeds the target.
    """
    if isinstance(bpp, bool) or not isinstance(bpp, (int, float)) or not 0 < bpp <= 64:
        raise InvalidParameterError(f"Expected bpp in (0, 64], got {bpp!r}")
    budget = math.floor(bpp * width * height / 8)

    def fits(params: ddcm.DDCMParams) -> bool:
        return file_size(params, model, width, height, mode, seed) <= budget

    def largest(low: int, high: int, make: Any) -> int:
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(make(mid)) else (low, mid - 1)
        return low

    base = replace(base, atoms=1)
    if not fits(base):
        one_step = replace(base, steps=1)
        if not fits(one_step):
            minimum = 8 * file_size(one_step, model, width, height, mode, seed) / (width * height)
            raise InvalidParameterError(f"bpp={bpp} is below the minimum {minimum:.5f} for a {width}x{height} image")
        steps = largest(1, base.steps, lambda s: replace(base, steps=s))
        return replace(base, steps=steps)
    size = base.codebook_size
    while True:
        cap = min(ddcm.MAX_ATOMS, size if base.selection == "mp" else max(1, (2 * size - 1) // 3))
        params = replace(base, codebook_size=size)
        atoms = largest(1, cap, lambda m: replace(params, atoms=m))
        if atoms < cap or size * 4 > 1 << 16:
            return replace(params, atoms=atoms)
        size *= 4


def _codec_params(codec: Any, model: DiffusionModel, width: int, height: int, mode: str, seed: int,
                  bpp: float | None, quality: float | None, options: dict[str, Any]) -> Any:
    if bpp is not None and quality is not None:
        raise InvalidParameterError("Give bpp= or quality=, not both")
    if bpp is None and quality is None:
        return codec.DDCMParams.from_dict(options)
    base = codec.DDCMParams.from_dict({**QUALITY_BASE_PARAMS.to_dict(), **options})
    target = bpp if bpp is not None else quality_to_bpp(quality)
    return params_for_bpp(target, width, height, model, base, mode, seed)


def encode_images(
    images: Sequence[Image.Image],
    *,
    codec: str = "DDCM",
    model: ModelRef | None = None,
    bpp: float | None = None,
    quality: float | None = None,
    seed: int = 0,
    device: Any = None,
    dtype: torch.dtype | None = None,
    **params: Any,
) -> list[EncodeResult]:
    """Encode same-size, same-mode images in one batch; returns each file with its reconstruction."""
    if not images:
        return []
    codec_module = codec_by_name(codec)
    loaded = _resolve(model, device, dtype)
    first = images[0]
    if any(im.size != first.size or im.mode != first.mode for im in images):
        raise InvalidParameterError("A batch needs images of one size and mode; encode others separately")
    width, height = first.size
    pixels = [_to_pixels(im, loaded) for im in images]
    codec_params = _codec_params(codec_module, loaded, width, height, first.mode, seed, bpp, quality, params)
    header = _header(codec_module, codec_params, loaded, first.mode, width, height, seed)
    results = []
    for payload, recon in codec_module.encode_batch(loaded, codec_params, seed, pixels):
        results.append(EncodeResult(container.pack(header, payload), _to_image(recon, first.mode)))
    return results


def encode(image: Image.Image, **options: Any) -> bytes:
    """Encode one image; options as :func:`encode_images` (``codec``, ``model``, ``bpp``, ``quality``,
    ``seed``, ``device``, ``dtype``, and codec parameters such as ``steps``, ``codebook_size``,
    ``atoms``, ``coef_levels``, ``window``, ``selection``)."""
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
    dtype: torch.dtype | None = None,
    max_pixels: int | None | str = "pillow",
) -> Image.Image:
    """Decode a file to a PIL image. An explicit ``model`` wins over the reference stored in the file;
    either way its fingerprint must match. ``max_pixels`` defaults to Pillow's bomb limit."""
    limit = _default_max_pixels() if max_pixels == "pillow" else max_pixels
    header, payload = container.parse(data, max_pixels=limit)
    codec = codec_by_id(header.codec_id)
    params = codec.DDCMParams.from_bytes(header.params)
    loaded = _resolve(model if model is not None else header.model_name, device, dtype)
    if loaded.fingerprint != header.fingerprint:
        raise ModelMismatchError(
            f"File was encoded with model {header.model_name!r} (fingerprint {header.fingerprint.hex()}), "
            f"but model {loaded.name!r} has fingerprint {loaded.fingerprint.hex()}"
        )
    pixels = codec.decode_payload(loaded, params, header.seed, header.width, header.height, payload)
    return _to_image(pixels, header.mode)


def info(data: bytes) -> dict[str, Any]:
    """Header fields of a file (verifies the CRC; loads no model and imports no model code)."""
    header, payload = container.parse(data, max_pixels=None)
    codec = codec_by_id(header.codec_id)
    params = codec.DDCMParams.from_bytes(header.params)
    return {
        "codec": codec.FORMAT_NAME,
        "format_version": header.version,
        "width": header.width,
        "height": header.height,
        "mode": header.mode,
        "model": header.model_name,
        "fingerprint": header.fingerprint.hex(),
        "seed": header.seed,
        "params": params.to_dict(),
        "bytes": len(data),
        "payload_bytes": len(payload),
        "bpp": 8 * len(data) / (header.width * header.height),
        "chunks": [tag.decode("latin-1") for tag, _ in header.chunks],
    }


def generate(
    width: int,
    height: int,
    *,
    model: ModelRef | None = None,
    seed: int = 0,
    rng_seed: int | None = None,
    mode: str = "RGB",
    device: Any = None,
    dtype: torch.dtype | None = None,
    **params: Any,
) -> EncodeResult:
    """Compressed generation (DDCM Sec. 4): a random sample together with the file that decodes to it."""
    if mode not in SUPPORTED_MODES:
        raise UnsupportedImageError(f"Mode {mode!r} is not supported; supported modes: {SUPPORTED_MODES}")
    loaded = _resolve(model, device, dtype)
    codec_params = ddcm.DDCMParams.from_dict(params)
    payload, pixels = ddcm.generate(loaded, codec_params, seed, width, height, np.random.default_rng(rng_seed))
    header = _header(ddcm, codec_params, loaded, mode, width, height, seed)
    return EncodeResult(container.pack(header, payload), _to_image(pixels, mode))
