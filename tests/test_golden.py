"""The format promise: today's encoder writes the committed golden files byte for byte, and decodes them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import pillow_diffcodec as pdc

from .golden import CASES, GOLDEN, case_input


@pytest.mark.parametrize("name", sorted(CASES))
def test_encoder_reproduces_golden_file_and_decoder_its_pixels(name: str) -> None:
    model, image, options = case_input(name)
    golden = (GOLDEN / f"{name}.ddcm").read_bytes()
    assert pdc.encode(image, model=model, **options) == golden
    with Image.open(GOLDEN / f"{name}.png") as expected:
        decoded = pdc.decode(golden, model=model)
        assert decoded.mode == expected.mode == image.mode
        assert np.array_equal(np.asarray(decoded), np.asarray(expected))
