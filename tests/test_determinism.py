"""Same pixels in every process: a file decodes to its encoder's reconstruction whatever the thread count.

Convolutions split their reductions by torch's intra-op thread count, so before the codec maths were
pinned (pillow_diffcodec.compute) a file decoded with 2 threads differed from the 1-thread decode of a
Ray worker by one level on a few pixels. These tests hold on any machine: they compare decodes made on
this machine with each other, never with numbers made elsewhere.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec.compute import pinned_compute

from .conftest import DATA

THREAD_COUNTS = (1, 2, 3)


def _decode_with_threads(data: bytes, threads: int) -> np.ndarray:
    torch.set_num_threads(threads)
    return np.asarray(pdc.decode(data))


def _decode_in_subprocess(path: str, threads: int) -> np.ndarray:
    """Decode in a fresh interpreter with its own thread count, as a Ray worker or another CLI run would."""
    script = (
        "import sys, torch, numpy as np, pillow_diffcodec as pdc; torch.set_num_threads(int(sys.argv[2])); "
        "sys.stdout.buffer.write(np.asarray(pdc.decode(open(sys.argv[1], 'rb').read())).tobytes())"
    )
    out = subprocess.run([sys.executable, "-c", script, path, str(threads)], capture_output=True, check=True)
    return np.frombuffer(out.stdout, dtype=np.uint8)


def test_a_builtin_file_decodes_to_the_same_pixels_with_any_thread_count(tmp_path) -> None:
    """The file that exposed the bug (the first built-in model's golden file: 1 of 9216 values differed
    between 1 and 2 threads), decoded in this process and in a fresh one."""
    path = DATA / "golden" / "first_builtin.ddcm"
    data = path.read_bytes()
    decodes = {threads: _decode_with_threads(data, threads) for threads in THREAD_COUNTS}
    for threads, pixels in decodes.items():
        assert np.array_equal(pixels, decodes[1]), f"{threads} threads decode differently from 1 thread"
    assert np.array_equal(_decode_in_subprocess(str(path), 2), decodes[1].reshape(-1))


@pytest.mark.parametrize("codec, options", [("DDCM", {"quality": 50, "steps": 8}), ("CDC", {"rate_point": 1})])
def test_the_encoders_reconstruction_is_every_decode(photo, codec, options) -> None:
    """Encoding with 2 threads and decoding with 1 or 3 give one image (what `Image.save` promises to store)."""
    torch.set_num_threads(2)
    result = pdc.encode_images([photo], codec=codec, **options)[0]
    for threads in (1, 3):
        assert np.array_equal(_decode_with_threads(result.data, threads), np.asarray(result.reconstruction)), (
            f"{codec} decode with {threads} threads differs from the encoder's reconstruction"
        )


def test_pinned_compute_restores_the_callers_settings() -> None:
    torch.set_num_threads(2)
    with pinned_compute(1):
        assert torch.get_num_threads() == 1 and torch.backends.cudnn.deterministic
        with pinned_compute(1):  # nested, as a codec inside the API
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2 and not torch.backends.cudnn.deterministic


def test_pinned_compute_lets_equal_pins_share_and_makes_another_count_wait() -> None:
    """Threads decoding under one count run together; a caller asking for another count (a PSC file
    recorded with 2 threads) starts only once they are done, so nobody computes under a foreign count."""
    seen: list[tuple[str, int]] = []
    inside = threading.Barrier(2)

    def single(name: str) -> None:
        with pinned_compute(1):
            inside.wait(timeout=10)  # both single-threaded callers are inside at once
            time.sleep(0.2)
            seen.append((name, torch.get_num_threads()))

    def double() -> None:
        time.sleep(0.05)
        with pinned_compute(2):
            seen.append(("double", torch.get_num_threads()))

    workers = [threading.Thread(target=single, args=(n,)) for n in "ab"] + [threading.Thread(target=double)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=20)
    assert sorted(seen[:2]) == [("a", 1), ("b", 1)] and seen[2] == ("double", 2)


def test_golden_pixel_tolerance_helper_accepts_rounding_and_refuses_damage() -> None:
    """The tolerance golden pixel tests use across machines (tests/golden.py) is not vacuous."""
    from .golden import assert_pixels_close

    with Image.open(DATA / "golden" / "first_builtin.png") as image:
        pixels = np.asarray(image.convert("RGB"))
    nudged = pixels.copy()
    nudged[0, :3] = np.clip(nudged[0, :3].astype(int) + 1, 0, 255)
    assert_pixels_close(nudged, pixels)
    damaged = pixels.copy()
    damaged[:8] = 255 - damaged[:8]
    with pytest.raises(AssertionError):
        assert_pixels_close(damaged, pixels)
