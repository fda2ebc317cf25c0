"""Pillow modes in and out of the codecs: what is coded, what rides along in chunks.

The diffusion models code RGB (or L) pixels. Alpha is kept losslessly in a zlib-compressed
``alph`` chunk; P, PA, 1 and CMYK images are converted and the original mode is recorded in an
``omod`` chunk so the reopened image can say so in ``info["original_mode"]``. Greyscale of more than 8
bits (I;16, I;16L, I;16B, I;16N, I, F) is converted to L the way :data:`WIDE_GREY_RULES` says and noted
the same way. ICC profiles, EXIF and XMP travel in ``iccp``, ``exif`` and ``xmp `` chunks. Multi-frame
images (animated GIF/APNG/WebP, multi-page TIFF) are refused unless a frame is chosen
(:func:`select_frame`). Torch-free: Pillow's header path uses it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .errors import CorruptFileError, InvalidParameterError, UnsupportedImageError

# Greyscale wider than 8 bits -> L: 16-bit samples keep their high byte (v >> 8, so 0..65535 maps onto
# 0..255); 32-bit integers are taken as 16-bit samples (how Pillow opens 16-bit PNGs), clipped to 0..65535
# first; floats are clipped to 0..255 and their fraction dropped, as Image.convert("L") does.
WIDE_GREY_RULES = {"I;16": "v >> 8", "I;16L": "v >> 8", "I;16B": "v >> 8", "I;16N": "v >> 8",
                   "I": "clip(v, 0, 65535) >> 8", "F": "int(clip(v, 0, 255))"}
SUPPORTED_MODES = ("RGB", "RGBA", "L", "LA", "P", "PA", "1", "CMYK", *WIDE_GREY_RULES)
CONVERTED_MODES = {"P": "RGB", "PA": "RGBA", "1": "L", "CMYK": "RGB", **dict.fromkeys(WIDE_GREY_RULES, "L")}
ALPHA_TAG, ORIGINAL_MODE_TAG, RESTORED_TAG = b"alph", b"omod", b"rstr"
METADATA_TAGS = {"icc_profile": b"iccp", "exif": b"exif", "xmp": b"xmp "}


@dataclass(frozen=True)
class PreparedImage:
    """An image split into what the codec codes and what the container carries."""

    coded: Image.Image  # RGB or L
    mode: str  # the mode written into the header: L, LA, RGB or RGBA
    chunks: tuple[tuple[bytes, bytes], ...]


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if hasattr(value, "tobytes") and not isinstance(value, (bytes, bytearray)):
        return value.tobytes()  # PIL.Image.Exif
    return bytes(value)


def check_frame(frame: object) -> int | None:
    """``frame`` if it is None or a non-negative int (a frame index), else InvalidParameterError."""
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, int) or frame < 0):
        raise InvalidParameterError(f"Expected frame to be a non-negative int (a frame index), got {frame!r}")
    return frame


def select_frame(image: Image.Image, frame: int | None = None) -> Image.Image:
    """The one frame of ``image`` to encode: the image itself when it has one frame and ``frame`` is None or 0,
    else a copy of frame ``frame`` (the image is left at the frame it was at).

    A multi-frame image without ``frame`` is refused (UnsupportedImageError naming its frame count), as
    is a ``frame`` it does not have: nothing is encoded silently from a sequence.
    """
    frames = getattr(image, "n_frames", 1)
    if check_frame(frame) is None:
        if frames > 1:
            raise UnsupportedImageError(
                f"The image has {frames} frames (animated or multi-page); choose one with frame= "
                f"(--frame N on the command line), 0 .. {frames - 1}"
            )
        return image
    if frame >= frames:
        raise UnsupportedImageError(f"The image has {frames} frame(s); frame {frame} is out of range")
    if frames == 1:
        return image
    position = image.tell()
    image.seek(frame)
    chosen = image.copy()
    image.seek(position)
    return chosen


def _convert(image: Image.Image, target: str) -> Image.Image:
    """``image`` in mode ``target``; integer greyscale wider than 8 bits by :data:`WIDE_GREY_RULES`, the rest
    (floats included) by Pillow."""
    if image.mode not in WIDE_GREY_RULES or image.mode == "F":
        return image.convert(target)
    grey = np.clip(np.asarray(image).astype(np.int64), 0, 65535) >> 8
    return Image.fromarray(grey.astype(np.uint8))


def prepare(image: Image.Image, *, keep_alpha: bool = True, metadata: dict[str, Any] | None = None) -> PreparedImage:
    """Split ``image`` into coded pixels, header mode and chunks (alpha, original mode, metadata)."""
    original = image.mode
    if original not in SUPPORTED_MODES:
        raise UnsupportedImageError(f"Mode {original!r} is not supported; supported modes: {list(SUPPORTED_MODES)}")
    chunks: list[tuple[bytes, bytes]] = []
    if original in CONVERTED_MODES:
        target = CONVERTED_MODES[original]
        if original == "P" and "transparency" in image.info:
            target = "RGBA"
        image = _convert(image, target)
        chunks.append((ORIGINAL_MODE_TAG, original.encode("ascii")))
    mode = image.mode
    if mode in ("RGBA", "LA"):
        base = mode[:-1]
        if keep_alpha:
            chunks.append((ALPHA_TAG, zlib.compress(image.getchannel("A").tobytes(), 9)))
        else:
            mode = base
        image = image.convert(base)
    for key, tag in METADATA_TAGS.items():
        value = (metadata or {}).get(key)
        if value:
            chunks.append((tag, _as_bytes(value)))
    return PreparedImage(coded=image, mode=mode, chunks=tuple(chunks))


def restored(prepared: PreparedImage, size: tuple[int, int], colour: bool, note: str | None) -> PreparedImage:
    """``prepared`` as the header and chunks of its restoration (DDCM Sec. 6) to ``size``: alpha is resized
    bicubically, a greyscale image made ``colour`` becomes RGB(A), and ``note`` (the task, for information) goes
    into an ancillary ``rstr`` chunk; ``coded`` stays the degraded input."""
    chunks = []
    for tag, data in prepared.chunks:
        if tag == ALPHA_TAG and size != prepared.coded.size:
            alpha = Image.frombytes("L", prepared.coded.size, zlib.decompress(data))
            data = zlib.compress(alpha.resize(size, Image.Resampling.BICUBIC).tobytes(), 9)
        chunks.append((tag, data))
    if note:
        chunks.append((RESTORED_TAG, note.encode("utf-8")))
    mode = prepared.mode.replace("L", "RGB") if colour else prepared.mode
    return PreparedImage(coded=prepared.coded, mode=mode, chunks=tuple(chunks))


def chunk_info(chunks: tuple[tuple[bytes, bytes], ...]) -> dict[str, Any]:
    """``Image.info`` entries from a file's chunks (metadata and the original mode)."""
    info: dict[str, Any] = {}
    for tag, data in chunks:
        if tag == ORIGINAL_MODE_TAG:
            info["original_mode"] = data.decode("ascii", "replace")
        if tag == RESTORED_TAG:
            info["restored_by"] = data.decode("utf-8", "replace")
        for key, metadata_tag in METADATA_TAGS.items():
            if tag == metadata_tag:
                info[key] = data
    return info


def finish(decoded: Image.Image, mode: str, chunks: tuple[tuple[bytes, bytes], ...]) -> Image.Image:
    """Turn decoded RGB/L pixels into an image of the header's mode with alpha and info restored."""
    base = mode.rstrip("A") if mode in ("LA", "RGBA") else mode
    image = decoded if decoded.mode == base else decoded.convert(base)
    if mode in ("LA", "RGBA"):
        alpha_data = next((data for tag, data in chunks if tag == ALPHA_TAG), None)
        if alpha_data is None:
            alpha = Image.new("L", image.size, 255)
        else:
            try:
                raw = zlib.decompressobj().decompress(alpha_data, image.width * image.height + 1)
            except zlib.error as exc:
                raise CorruptFileError(f"Alpha chunk is corrupt: {exc}") from None
            if len(raw) != image.width * image.height:
                raise CorruptFileError(f"Alpha chunk holds {len(raw)} bytes for a {image.width}x{image.height} image")
            alpha = Image.frombytes("L", image.size, raw)
        image = Image.merge(mode, [*image.split(), alpha])
    image.info.update(chunk_info(chunks))
    return image
