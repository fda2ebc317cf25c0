"""The ``diffcodec`` zarr v3 codec: configuration validated and mirrored, and an image array written here
read back by nothing but ``zarr.open_array`` in a fresh process (the codec found through its entry point)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr

import pillow_diffcodec
from pillow_diffcodec.errors import InvalidParameterError, UnknownCodecError
from storage.zarr_codec import DiffCodecImageCodec

from .conftest import FAST


def test_configuration_round_trips_through_dicts() -> None:
    codecs = [
        DiffCodecImageCodec(),
        DiffCodecImageCodec(codec="ddcm", model="builtin", quality=40, seed=7),
        DiffCodecImageCodec(bpp=0.25, params={"selection": "topm", "window": [999, 500]}),
    ]
    for codec in codecs:
        assert DiffCodecImageCodec.from_dict(codec.to_dict()) == codec and hash(codec) == hash(codec)
    assert codecs[1].to_dict() == {
        "name": "diffcodec",
        "configuration": {"codec": "DDCM", "seed": 7, "model": "builtin", "quality": 40},
    }
    assert codecs[2].to_dict()["configuration"]["params"] == {"selection": "topm", "window": [999, 500]}


@pytest.mark.parametrize(
    ("configuration", "message"),
    [
        ({"quality": 101}, r"Expected quality in \[0, 100\], got 101"),
        ({"bpp": 0}, r"Expected bpp in \(0, 64\], got 0"),
        ({"quality": 5, "bpp": 0.1}, "not both"),
        ({"seed": -1}, "Expected seed in"),
        ({"model": ""}, "non-empty string"),
        ({"params": {"steps": 0}}, r"Expected steps in \[1, 4096\], got 0"),
        ({"params": {"nope": 1}}, r"Unknown DDCM option\(s\) \['nope'\]"),
        ({"level": 3}, r"Unknown diffcodec codec configuration \['level'\]"),
    ],
)
def test_bad_configuration_says_what_is_wrong(configuration: dict, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        DiffCodecImageCodec.from_dict({"name": "diffcodec", "configuration": configuration})


def test_unknown_codec_lists_the_available_ones() -> None:
    with pytest.raises(UnknownCodecError, match=r"available: \[.*'DDCM'"):
        DiffCodecImageCodec(codec="JPEG")


def test_array_layout_is_checked(tmp_path) -> None:
    codec = DiffCodecImageCodec()
    with pytest.raises(InvalidParameterError, match="one image per chunk"):
        zarr.create_array(str(tmp_path / "a"), shape=(2, 8, 8, 3), chunks=(2, 8, 8, 3), dtype="uint8", serializer=codec)
    with pytest.raises(InvalidParameterError, match="uint8"):
        zarr.create_array(
            str(tmp_path / "b"), shape=(2, 8, 8, 3), chunks=(1, 8, 8, 3), dtype="float32", serializer=codec
        )


READ_BACK = """
import sys, numpy as np, zarr
array = zarr.open_array(sys.argv[1], mode="r")
np.save(sys.argv[2], array[:])
print(array.metadata.codecs[0].to_dict()["name"])
"""


def test_plain_zarr_reads_the_array_in_a_fresh_process(tmp_path, photo, model_dir) -> None:
    codec = DiffCodecImageCodec(model=str(model_dir), params=FAST)
    pixels = np.stack([np.asarray(photo)[:16, :16], np.asarray(photo)[16:32, 16:32], np.asarray(photo)[:16, 32:48]])
    array = zarr.create_array(
        str(tmp_path / "images.zarr"),
        shape=pixels.shape,
        chunks=(1, 16, 16, 3),
        dtype="uint8",
        serializer=codec,
        compressors=None,
    )
    array[:] = pixels
    stored = (tmp_path / "images.zarr" / "c" / "1" / "0" / "0" / "0").read_bytes()
    assert pillow_diffcodec.info(stored)["width"] == 16  # each chunk is a standalone diffcodec file
    expected = array[:]
    assert expected.shape == pixels.shape and expected.dtype == np.uint8
    assert np.array_equal(expected[1], np.asarray(pillow_diffcodec.decode(stored)))
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(READ_BACK), str(tmp_path / "images.zarr"), str(tmp_path / "back.npy")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.strip() == "diffcodec"
    assert np.array_equal(np.load(tmp_path / "back.npy"), expected)
