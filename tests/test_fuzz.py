"""Hypothesis fuzzing: mutated files raise only documented DiffCodecError subclasses, never hang or panic."""

from __future__ import annotations

import io
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, UnidentifiedImageError

import pillow_diffcodec as pdc
from pillow_diffcodec.errors import DiffCodecError

from .conftest import tiny_model

MODEL = tiny_model()
SEEDS = {
    "mp": dict(steps=4, codebook_size=64, atoms=3, coef_levels=3),
    "topm": dict(steps=4, codebook_size=300, atoms=4, selection="topm"),
    "window": dict(steps=6, codebook_size=16, window=(700, 200)),
    "tiled": dict(steps=4, codebook_size=20, atoms=2, selection="topm", tile=8),
}


@pytest.fixture(scope="module")
def valid_files(photo) -> list[bytes]:
    small = photo.crop((0, 0, 24, 16))
    return [pdc.encode(small, model=MODEL, **params) for params in SEEDS.values()]


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.just(0)),
)


def mutate(data: bytes, mutations: list[tuple[str, int, int]], fix_crc: bool) -> bytes:
    out = bytearray(data[:-4] if fix_crc else data)
    for kind, position, value in mutations:
        if not out:
            break
        i = position % len(out)
        if kind == "flip":
            out[i] ^= 1 << value
        elif kind == "set":
            out[i] = value
        elif kind == "truncate":
            del out[i:]
        elif kind == "insert":
            out.insert(i, value)
        else:
            del out[i]
    if fix_crc:  # recompute the CRC so the mutation reaches the parser and decoder behind it
        out += zlib.crc32(bytes(out)).to_bytes(4, "little")
    return bytes(out)


def _pillow_load(data: bytes) -> Image.Image:
    """Open and load with Pillow; returns the image (``load()`` itself returns a pixel accessor)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def decode_both_ways(data: bytes, model: object = MODEL) -> None:
    """``info``, ``decode`` and Pillow's ``Image.open(...).load()`` either succeed or raise a documented error."""
    for decode in (
        lambda: pdc.decode(data, model=model, max_pixels=64 * 64),
        lambda: _pillow_load(data),
    ):
        try:
            pdc.info(data)
            image = decode()
        except DiffCodecError as exc:
            assert str(exc)  # every error says what is wrong
            continue
        except (UnidentifiedImageError, SyntaxError):  # Pillow: the magic bytes were mutated away
            assert data[:4] != b"\x89DFC"
            continue
        assert image is None or image.width * image.height <= 64 * 64


files = st.integers(0, len(SEEDS) - 1)
mutations = st.lists(mutation, min_size=1, max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=files, changes=mutations, fix_crc=st.booleans())
def test_mutated_files_raise_only_documented_errors(valid_files, which, changes, fix_crc) -> None:
    decode_both_ways(mutate(valid_files[which], changes, fix_crc))


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=files, changes=mutations, fix_crc=st.booleans())
def test_many_mutated_files_raise_only_documented_errors(valid_files, which, changes, fix_crc) -> None:
    decode_both_ways(mutate(valid_files[which], changes, fix_crc))
