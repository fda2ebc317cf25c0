"""Bulk jobs on object storage: moto's S3 server on a loopback port, reached through s3fs by the driver
and by every Ray worker, as the source (a folder and a tar) and as the destination archive."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

import pillow_diffcodec
import ray_jobs
import storage

from . import ray_helpers
from .conftest import FAST, moto_s3
from .ray_helpers import GOOD_KEYS, IMAGE_KEYS, tree_files, write_tar

pytestmark = pytest.mark.slow
local_ray = ray_helpers.local_ray  # the module's Ray instance (a fixture)


@pytest.fixture(scope="module")
def s3_options() -> Iterator[dict]:
    """storage_options for a fresh moto S3 server on 127.0.0.1 with buckets ``photos`` and ``archives``."""
    yield from moto_s3("photos", "archives")


def test_s3_folder_and_tar_sources_into_an_s3_archive(local_ray, s3_options, model_dir, tmp_path) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options)
    files = tree_files()
    for name, data in files.items():
        fs.pipe_file(f"photos/tree/{name}", data)
    fs.put_file(str(write_tar(tmp_path / "tree.tar", files)), "photos/tree.tar")
    archives = {}
    for source in ("s3://photos/tree", "s3://photos/tree.tar"):
        dest = f"s3://archives/{uuid.uuid4().hex}.zarr"
        report = ray_jobs.bulk_compress(source, dest, model=str(model_dir), storage_options=s3_options,
                                        items_per_shard=3, progress=False, **FAST)
        assert (report.items, report.ok, report.failed, report.pending) == (8, 7, 1, 0)
        archive = storage.open_archive(dest, storage_options=s3_options)
        assert archive.keys() == IMAGE_KEYS and list(archive.failed()) == ["a/broken.png"]
        assert ray_jobs.read_report(dest, s3_options)["runs"][-1]["ok"] == 7
        archives[source] = archive
    first, second = archives.values()
    assert all(first.read_bytes(key) == second.read_bytes(key) for key in GOOD_KEYS)
    rows = ray_jobs.read_archive(first.url, storage_options=s3_options).take_all()
    assert sorted(row["key"] for row in rows) == GOOD_KEYS
    for row in rows:
        assert np.array_equal(row["image"], np.asarray(pillow_diffcodec.decode(first.read_bytes(row["key"]))))
    again = ray_jobs.bulk_compress("s3://photos/tree", first.url, model=str(model_dir), storage_options=s3_options,
                                   items_per_shard=3, progress=False, **FAST)
    assert (again.skipped, again.encoded) == (8, 0)
    assert first.info("a/b/alpha.png")["source_size"] == len(fs.cat_file("photos/tree/a/b/alpha.png"))
