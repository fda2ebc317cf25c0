"""Decode limits: crafted headers that ask for hours or gigabytes are refused before a model is loaded."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec import container, limits
from pillow_diffcodec.codecs.ddcm.format import DDCMParams
from pillow_diffcodec.errors import DecompressionBombError


def header_only(width: int, height: int, steps: int, model: str = "builtin", fingerprint: bytes = b"\0" * 4) -> bytes:
    """A valid file with no payload: codebook size 1, so every step is free to store but not to decode."""
    params = DDCMParams(steps=steps, codebook_size=1, tile=0)
    return container.pack(container.Header(1, "RGB", width, height, 0, fingerprint, model, params.to_bytes()), b"")


def test_a_38_byte_file_asking_for_1000_steps_at_1024x1024_is_refused_at_once() -> None:
    bomb = header_only(1024, 1024, 1000)
    assert len(bomb) <= 40
    start = time.monotonic()
    with pytest.raises(DecompressionBombError, match=r"1000 model calls on 1024x1024.*max_work=.*MAX_DECODE_WORK"):
        pdc.decode(bomb)
    with pytest.raises(DecompressionBombError, match="model calls"):
        Image.open(io.BytesIO(bomb)).load()
    assert time.monotonic() - start < 2


def test_huge_dimensions_are_refused_before_allocation() -> None:
    with pytest.raises(DecompressionBombError, match=r"8000x8000 = 64000000 pixels.*MAX_DECODE_PIXELS"):
        pdc.decode(header_only(8000, 8000, 1))
    with pytest.raises(DecompressionBombError, match="pixels"):
        Image.open(io.BytesIO(header_only(1 << 24, 1 << 24, 1)))  # above Pillow's own threshold: refused at open
    with Image.open(io.BytesIO(header_only(8000, 8000, 1))) as image:  # below it: the size is readable ...
        assert image.size == (8000, 8000)
        with pytest.raises(DecompressionBombError):  # ... but decoding is refused
            image.load()


def test_presets_for_16_megapixels_and_the_papers_latent_setting_are_allowed() -> None:
    limits.check_decode(DDCMParams().decode_model_calls(), 4096, 4096)  # the default family at 16.8 MP
    limits.check_decode(1000, 768, 768)  # DDCM with SD 2.1 (T = 1000), counted in image pixels


def test_limits_can_be_changed_per_process_and_per_call(model, photo, monkeypatch) -> None:
    data = pdc.encode(photo, model=model, steps=4, codebook_size=8)
    monkeypatch.setattr(limits, "MAX_DECODE_WORK", 3 * photo.width * photo.height)
    with pytest.raises(DecompressionBombError, match="4 model calls"):
        pdc.decode(data, model=model)
    assert pdc.decode(data, model=model, max_work=None).size == photo.size
    monkeypatch.setattr(limits, "MAX_DECODE_WORK", None)
    monkeypatch.setattr(limits, "MAX_DECODE_PIXELS", 100)
    with pytest.raises(DecompressionBombError, match="exceeds the limit of 100 .*MAX_DECODE_PIXELS"):
        pdc.decode(data, model=model)
    assert pdc.decode(data, model=model, max_pixels=photo.width * photo.height).size == photo.size


def test_running_out_of_memory_is_a_library_error(tmp_path, model_dir) -> None:
    """A real allocation failure (address space capped below what decoding needs) becomes ResourceExhaustedError."""
    script = f"""
import resource
import pillow_diffcodec as pdc
from pillow_diffcodec.models import load_model
from tests.test_limits import header_only
model = load_model({str(model_dir)!r})
bomb = header_only(3000, 3000, 1, model={str(model_dir)!r}, fingerprint=model.fingerprint)
with open("/proc/self/status") as status:
    used = next(int(line.split()[1]) for line in status if line.startswith("VmSize")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (used + 300 * 2**20, resource.RLIM_INFINITY))
try:
    pdc.decode(bomb)
except pdc.ResourceExhaustedError as exc:
    print("refused:", exc)
"""
    root = Path(__file__).parent.parent
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=root)
    assert result.stdout.startswith("refused: Out of memory while decoding a 3000x3000 image"), result.stderr[-2000:]
