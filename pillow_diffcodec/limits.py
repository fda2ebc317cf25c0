"""Limits that apply before any model is loaded, in the spirit of ``PIL.Image.MAX_IMAGE_PIXELS``.

A 40-byte header can ask for a 64-megapixel image or a thousand model calls. Both figures are known
from the header alone (and the model's down-sampling from its folder's config), so a decoder refuses them
before anything is allocated or a model is loaded:

* work = model calls x positions the model runs on (image pixels for a pixel model, latent positions,
  pixels / 64, for an f8 latent model), at most :data:`MAX_DECODE_WORK`;
* image pixels, at most :data:`MAX_DECODE_PIXELS` (peak memory grows with them: the built-in model
  needs about 220 bytes of activations per pixel, so 7 GiB at the limit), and never more than
  Pillow's own bomb threshold (twice ``Image.MAX_IMAGE_PIXELS``).

The figures are read at call time, so a process can change them (``pillow_diffcodec.limits.MAX_DECODE_WORK
= 4 * 10**9``; None means no limit) and a single call can pass ``max_work=`` / ``max_pixels=``.
"""

from __future__ import annotations

from PIL import Image

from .errors import DecompressionBombError

# 10**9 admits every file the presets make for images up to 16 MP (20 steps x 16.8 MP = 3.4e8) and the
# DDCM paper's Stable Diffusion setting (T = 1000 at 768 x 768 = 96 x 96 latent positions: 9.2e6), and
# refuses a 1024 x 1024 file asking a pixel model for 1000 steps (1.05e9).
MAX_DECODE_WORK: int | None = 10**9
MAX_DECODE_PIXELS: int | None = 1 << 25  # 32 MP: twice the 16 MP the presets are made for

DEFAULT = "default"


def pillow_pixel_limit() -> int | None:
    """Pillow's error threshold for decompression bombs: twice ``Image.MAX_IMAGE_PIXELS`` (read now)."""
    return None if Image.MAX_IMAGE_PIXELS is None else 2 * int(Image.MAX_IMAGE_PIXELS)


def max_pixels_default() -> int | None:
    """The pixel limit in force for decoding: the smaller of :data:`MAX_DECODE_PIXELS` and Pillow's threshold."""
    limits = [limit for limit in (pillow_pixel_limit(), MAX_DECODE_PIXELS) if limit is not None]
    return min(limits) if limits else None


def check_decode(
    model_calls: int, width: int, height: int,
    max_work: int | None | str = DEFAULT, max_pixels: int | None | str = DEFAULT, pixels_per_position: int = 1,
) -> None:
    """Raise :class:`DecompressionBombError` when a decode would exceed the pixel or work limit; each model
    call costs one unit per position of the model's sample (``pixels_per_position`` image pixels each)."""
    pixel_limit = max_pixels_default() if max_pixels == DEFAULT else max_pixels
    if pixel_limit is not None and width * height > pixel_limit:
        raise DecompressionBombError(
            f"Image size {width}x{height} = {width * height} pixels exceeds the decoding limit of {pixel_limit} "
            "(raise it with max_pixels= or pillow_diffcodec.limits.MAX_DECODE_PIXELS if you trust the file)"
        )
    work_limit = MAX_DECODE_WORK if max_work == DEFAULT else max_work
    positions = -(-width * height // pixels_per_position)
    work = model_calls * positions
    if work_limit is not None and work > work_limit:
        where = f"{width}x{height} pixels" + (f" ({positions} latent positions)" if pixels_per_position > 1 else "")
        raise DecompressionBombError(
            f"Decoding needs {model_calls} model calls on {where} = {work:.3g} units of work, above "
            f"the limit of {work_limit:.3g} (raise it with max_work= or pillow_diffcodec.limits.MAX_DECODE_WORK if "
            "you trust the file)"
        )
