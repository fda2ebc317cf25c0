"""Golden DDCM files: fixed inputs, models and parameters whose files must never change.

``python -m tests.golden`` (re)writes ``tests/data/golden/<case>.ddcm`` and ``<case>.png`` (the
decoded image). Run it only on purpose: the point of the files is that an encoder change which alters
a single byte of an existing configuration fails ``tests/test_golden.py``. Every parameter is spelled
out, so a change of defaults does not alter what a case means.

What the golden tests pin: the *bytes* of each file exactly (the format and the encoder's choices), and
the decoded *pixels* within float rounding (:func:`assert_pixels_close`), because a model's float
results differ between CPU vector ISAs and GPUs (docs/FORMAT.md, "Determinism"). Bit-exact decoding on
one machine, whatever the thread count or process, is pinned by tests/test_determinism.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .conftest import DATA, identity_denoiser, tiny_model

GOLDEN = DATA / "golden"
MP = dict(steps=4, codebook_size=32, atoms=1, coef_levels=1, selection="mp", window=None, tile=0)


def _photo(mode: str) -> Image.Image:
    with Image.open(DATA / "kodim23_crop.png") as image:
        rgb = image.convert("RGB")
    if mode == "RGBA":
        alpha = Image.linear_gradient("L").resize(rgb.size)
        return Image.merge("RGBA", [*rgb.split(), alpha])
    return rgb.convert(mode)


# Decoded pixels made on another machine agree within this (DESIGN.md: "within 2 levels on another device").
MAX_LEVELS = 2
MAX_MEAN_LEVELS = 0.05


def assert_pixels_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """``actual`` equals ``expected`` within float rounding: no value more than MAX_LEVELS off and a mean
    absolute difference under MAX_MEAN_LEVELS (a real change of the decoder moves far more)."""
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= MAX_LEVELS and diff.mean() <= MAX_MEAN_LEVELS, (
        f"pixels differ by up to {diff.max()} levels (mean {diff.mean():.4f}); "
        f"float rounding stays within {MAX_LEVELS} (mean {MAX_MEAN_LEVELS})"
    )


# name -> (model factory, image mode, encode options)
CASES: dict[str, tuple[Callable[[], Any], str, dict[str, Any]]] = {
    "mp_single_atom": (identity_denoiser, "RGB", MP),
    "mp_pursuit": (identity_denoiser, "RGB", {**MP, "codebook_size": 64, "atoms": 3, "coef_levels": 4}),
    "topm_tiled": (identity_denoiser, "RGB", {**MP, "codebook_size": 48, "atoms": 4, "selection": "topm", "tile": 16}),
    "window_rgba": (tiny_model, "RGBA", {**MP, "steps": 8, "codebook_size": 16, "window": (800, 300), "seed": 7}),
    "gray_topm": (identity_denoiser, "L", {**MP, "codebook_size": 40, "atoms": 2, "selection": "topm", "tile": 24}),
}


def case_input(name: str) -> tuple[Any, Image.Image, dict[str, Any]]:
    factory, mode, options = CASES[name]
    return factory(), _photo(mode), options


def write_golden(folder: Path = GOLDEN) -> None:
    import pillow_diffcodec as pdc

    folder.mkdir(parents=True, exist_ok=True)
    for name in CASES:
        model, image, options = case_input(name)
        data = pdc.encode(image, model=model, **options)
        (folder / f"{name}.ddcm").write_bytes(data)
        pdc.decode(data, model=model).save(folder / f"{name}.png")


if __name__ == "__main__":
    write_golden()
