"""One policy for image edge cases in every encoder: multi-frame images need a chosen frame, 16-bit and
float greyscale become L as documented (pillow_diffcodec.imagemodes.WIDE_GREY_RULES)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec import imagemodes


def animated_gif(photo: Image.Image, frames: int = 3) -> Image.Image:
    """An animated GIF of ``frames`` different 16x16 frames, reopened by Pillow."""
    crops = [photo.crop((8 * n, 0, 8 * n + 16, 16)) for n in range(frames)]
    buffer = io.BytesIO()
    crops[0].save(buffer, format="GIF", save_all=True, append_images=crops[1:])
    return Image.open(io.BytesIO(buffer.getvalue()))


def test_a_multi_frame_image_is_refused_unless_a_frame_is_chosen(photo, options) -> None:
    gif = animated_gif(photo)
    with pytest.raises(pdc.UnsupportedImageError, match=r"has 3 frames .*choose one with frame="):
        pdc.encode(gif, **options)
    with pytest.raises(pdc.UnsupportedImageError, match="frame 3 is out of range"):
        pdc.encode(gif, frame=3, **options)
    with pytest.raises(pdc.InvalidParameterError, match="non-negative int"):
        pdc.encode(gif, frame=-1, **options)
    chosen = pdc.encode(gif, frame=1, **options)
    assert gif.tell() == 0  # the caller's image stays where it was
    gif.seek(1)
    assert chosen == pdc.encode(gif.copy(), **options)
    assert pdc.encode(photo.crop((0, 0, 16, 16)), frame=0, **options)  # frame 0 of a single-frame image


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16_bit_greyscale_keeps_its_high_byte_and_says_what_it_was(mode, options) -> None:
    values = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    if mode == "I":
        image = Image.fromarray(values.astype(np.int32))
    else:
        image = Image.frombytes(mode, (16, 16), values.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    assert image.mode == mode
    prepared = imagemodes.prepare(image)
    assert prepared.mode == "L" and np.array_equal(np.asarray(prepared.coded), (values >> 8).astype(np.uint8))
    decoded = pdc.decode(pdc.encode(image, **options))
    assert decoded.mode == "L" and decoded.info["original_mode"] == mode


def test_float_greyscale_is_clipped_as_pillow_converts_it() -> None:
    image = Image.fromarray(np.array([[-3.0, 0.4, 100.6, 300.0]], dtype=np.float32))
    prepared = imagemodes.prepare(image)
    assert np.asarray(prepared.coded).tolist() == [[0, 0, 100, 255]] == np.asarray(image.convert("L")).tolist()
    assert prepared.chunks == ((imagemodes.ORIGINAL_MODE_TAG, b"F"),)
