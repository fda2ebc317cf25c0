"""Hypothesis fuzzing of CDC files: mutated files raise only documented DiffCodecError subclasses."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pillow_diffcodec as pdc
from pillow_diffcodec.models import load_model

from .test_cdc import tiny_cdc_folder
from .test_fuzz import decode_both_ways, mutate, mutations


@pytest.fixture(scope="module")
def cdc_files(tmp_path_factory, photo) -> tuple[object, list[bytes]]:
    model = load_model(str(tiny_cdc_folder(tmp_path_factory.mktemp("fuzz") / "tiny-cdc")))
    small = photo.crop((0, 0, 24, 16))
    return model, [pdc.encode(small, codec="CDC", model=model, rate_point=i) for i in (0, 1)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 1), changes=mutations, fix_crc=st.booleans())
def test_mutated_cdc_files_raise_only_documented_errors(cdc_files, which, changes, fix_crc) -> None:
    model, files = cdc_files
    decode_both_ways(mutate(files[which], changes, fix_crc), model)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 1), changes=mutations, fix_crc=st.booleans())
def test_many_mutated_cdc_files_raise_only_documented_errors(cdc_files, which, changes, fix_crc) -> None:
    model, files = cdc_files
    decode_both_ways(mutate(files[which], changes, fix_crc), model)
