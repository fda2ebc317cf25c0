"""Classical codecs through Pillow, encoded at a target rate by searching their quality setting.

JPEG (libjpeg via Pillow, 4:2:0, optimised Huffman tables), WebP (libwebp, method 6), AVIF (Pillow's own
plugin, present when ``PIL.features.check("avif")``) and JPEG XL (``pillow-jxl-plugin``, when installed).
Rates count the whole file, headers included (the same accounting as diffcodec files).

:func:`encode_at_bpp` bisects the integer quality (file size grows with quality for all four) and keeps
the quality whose file is closest to the target in log-rate; when even the lowest quality overshoots,
the result is that lowest-quality file, flagged ``reached=False`` (the codec's floor at this image).
"""

from __future__ import annotations

import importlib.util
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, features

from pillow_diffcodec.container import bits_per_pixel


@dataclass(frozen=True)
class Baseline:
    """A Pillow format with its quality range and fixed save options."""

    name: str
    format: str
    min_quality: int
    max_quality: int
    options: dict[str, Any] = field(default_factory=dict)
    available: Callable[[], bool] = lambda: True
    requirement: str = ""

    def encode(self, image: Image.Image, quality: int) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=self.format, quality=quality, **self.options)
        return buffer.getvalue()


def _jxl_available() -> bool:
    if importlib.util.find_spec("pillow_jxl") is None:
        return False
    import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)

    return "JXL" in Image.SAVE


BASELINES: dict[str, Baseline] = {
    "jpeg": Baseline("JPEG", "JPEG", 1, 100, {"optimize": True, "subsampling": "4:2:0"}),
    "webp": Baseline(
        "WebP", "WEBP", 0, 100, {"method": 6}, lambda: bool(features.check("webp")), "Pillow built with libwebp"
    ),
    "avif": Baseline(
        "AVIF", "AVIF", 0, 100, {}, lambda: bool(features.check("avif")), "Pillow >= 11.3 built with libavif"
    ),
    "jxl": Baseline("JPEG XL", "JXL", 1, 99, {}, _jxl_available, "pip install pillow-jxl-plugin"),
}
DEFAULT_BASELINES = tuple(BASELINES)


def baseline_by_name(name: str) -> Baseline:
    """The baseline called ``name`` (case-insensitive); ValueError listing the known ones otherwise."""
    try:
        return BASELINES[name.strip().lower()]
    except KeyError:
        raise ValueError(f"Unknown baseline {name!r}; expected some of {', '.join(BASELINES)}") from None


@dataclass(frozen=True)
class BaselineResult:
    """One baseline file at (or near) a target rate."""

    data: bytes
    reconstruction: Image.Image
    quality: int
    bpp: float
    reached: bool  # False: the target is below the codec's lowest-quality file for this image
    encode_seconds: float
    decode_seconds: float


def encode_at_bpp(image: Image.Image, baseline: Baseline, target_bpp: float) -> BaselineResult:
    """The ``baseline`` file of ``image`` (L or RGB; other modes are coded as RGB) whose whole-file bpp is
    closest to ``target_bpp`` (log scale); its reconstruction comes back in the mode coded."""
    image = image if image.mode in ("L", "RGB") else image.convert("RGB")
    width, height = image.size
    cache: dict[int, bytes] = {}

    def size_bpp(quality: int) -> float:
        if quality not in cache:
            cache[quality] = baseline.encode(image, quality)
        return bits_per_pixel(len(cache[quality]), width, height)

    low, high = baseline.min_quality, baseline.max_quality
    reached = size_bpp(low) <= target_bpp
    if not reached:
        best = low
    elif size_bpp(high) <= target_bpp:
        best = high
    else:  # invariant: bpp(low) <= target < bpp(high)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if size_bpp(middle) <= target_bpp else (low, middle)
        best = min((low, high), key=lambda q: abs(math.log(size_bpp(q) / target_bpp)))
    data = cache[best]
    start = time.perf_counter()
    baseline.encode(image, best)  # timed once more, alone, for an honest encode time
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with Image.open(io.BytesIO(data)) as opened:
        reconstruction = opened.convert(image.mode)
    decode_seconds = time.perf_counter() - start
    return BaselineResult(data, reconstruction, best, size_bpp(best), reached, encode_seconds, decode_seconds)
