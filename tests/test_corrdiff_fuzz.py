"""Hypothesis fuzzing of CorrDiff files: mutated files raise only documented DiffCodecError subclasses."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pillow_diffcodec as pdc
from pillow_diffcodec.models import load_model

from .test_corrdiff import tiny_corrdiff_folder
from .test_fuzz import decode_both_ways, mutate, mutations


@pytest.fixture(scope="module")
def crd_files(tmp_path_factory, photo) -> tuple[object, list[bytes]]:
    model = load_model(str(tiny_corrdiff_folder(tmp_path_factory.mktemp("fuzz") / "tiny-corrdiff")))
    small = photo.crop((0, 0, 24, 16))
    return model, [pdc.encode(small, codec="CORRDIFF", model=model, rate_point=i, steps=3) for i in (0, 1)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 1), changes=mutations, fix_crc=st.booleans())
def test_mutated_corrdiff_files_raise_only_documented_errors(crd_files, which, changes, fix_crc) -> None:
    model, files = crd_files
    decode_both_ways(mutate(files[which], changes, fix_crc), model)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 1), changes=mutations, fix_crc=st.booleans())
def test_many_mutated_corrdiff_files_raise_only_documented_errors(crd_files, which, changes, fix_crc) -> None:
    model, files = crd_files
    decode_both_ways(mutate(files[which], changes, fix_crc), model)
