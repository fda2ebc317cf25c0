"""fsspec reading and writing: real local and memory filesystems, chained URLs, atomic writes."""

from __future__ import annotations

import io
import tarfile

import fsspec
import numpy as np
import pytest

import storage
from pillow_diffcodec.errors import InvalidParameterError



def test_memory_and_local_url_round_trip(tmp_path, photo, options) -> None:
    for url in ["memory://bucket/deep/photo.ddcm", f"file://{tmp_path}/sub/photo.ddcm", str(tmp_path / "plain.ddcm")]:
        storage.save_image(photo, url, **options)
        image = storage.open_image(url)
        assert image.format == "DDCM" and image.size == photo.size
    memory = fsspec.filesystem("memory")
    assert memory.ls("/bucket/deep", detail=False) == ["/bucket/deep/photo.ddcm"]  # no temporary left behind


def test_other_formats_pass_through(tmp_path, photo) -> None:
    storage.save_image(photo, "memory://x/photo.png", format="PNG")
    assert np.array_equal(np.asarray(storage.open_image("memory://x/photo.png")), np.asarray(photo))


def test_reading_from_inside_a_tar(tmp_path, photo, options) -> None:
    buffer = io.BytesIO()
    photo.save(buffer, format="DDCM", **options)
    with tarfile.open(tmp_path / "archive.tar", "w") as tar:
        info = tarfile.TarInfo("inner/photo.ddcm")
        info.size = len(buffer.getvalue())
        tar.addfile(info, io.BytesIO(buffer.getvalue()))
    image = storage.open_image(f"tar://inner/photo.ddcm::file://{tmp_path}/archive.tar")
    assert image.size == photo.size and image.format == "DDCM"


def test_failed_encode_leaves_existing_file_untouched(tmp_path, photo, options) -> None:
    target = tmp_path / "keep.ddcm"
    target.write_bytes(b"precious")
    with pytest.raises(InvalidParameterError):
        storage.save_image(photo, str(target), **{**options, "codebook_size": -3})
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.ddcm"]


def test_failed_write_leaves_no_partial_file(tmp_path, photo, options) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"x")
    with pytest.raises(OSError):
        storage.save_image(photo, str(blocker / "photo.ddcm"), **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder"]
