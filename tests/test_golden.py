"""The format promise: today's encoder writes the committed golden files byte for byte, and decodes them
to their pixels within float rounding (exact on the machine that made them; see tests/golden.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import pillow_diffcodec as pdc

from .golden import CASES, GOLDEN, assert_pixels_close, case_input


@pytest.mark.parametrize("name", sorted(CASES))
def test_encoder_reproduces_golden_file_and_decoder_its_pixels(name: str) -> None:
    model, image, options = case_input(name)
    golden = (GOLDEN / f"{name}.ddcm").read_bytes()
    assert pdc.encode(image, model=model, **options) == golden
    with Image.open(GOLDEN / f"{name}.png") as expected:
        decoded = pdc.decode(golden, model=model)
        assert decoded.mode == expected.mode == image.mode
        assert_pixels_close(np.asarray(decoded), np.asarray(expected))
