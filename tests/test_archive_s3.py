"""Archives on a real S3-compatible server: moto's server mode on a loopback port, reached through s3fs
with storage_options (no mocks of fsspec), including worker processes that write shards at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import storage

from .conftest import moto_s3
from .test_archive import crops, encoded  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def s3_options() -> Iterator[dict]:
    """storage_options for a fresh moto S3 server on 127.0.0.1 with a bucket named ``archives``."""
    yield from moto_s3("archives")


def test_write_reopen_and_read_on_s3(s3_options, encoded) -> None:
    url = f"s3://archives/{uuid.uuid4().hex}.zarr"
    with storage.open_archive(url, "w", s3_options, items_per_shard=4) as archive:
        for number, data in enumerate(encoded):
            archive.add(f"img{number}.png", data)
    with storage.open_archive(url, "a", s3_options) as archive:
        archive.add("extra.png", encoded[0])
    archive = storage.open_archive(url, storage_options=s3_options)
    assert archive.url == url and len(archive) == 7
    assert archive.read_bytes("img4.png") == encoded[4] and archive.read_bytes(-1) == encoded[0]
    assert archive[2].size == (16, 16) and archive.verify().ok == 7
    import s3fs

    objects = s3fs.S3FileSystem(**s3_options).find(url)
    assert len([o for o in objects if "/bitstream/c/" in o]) == 2  # seven entries, two shard objects
    with pytest.raises(storage.ArchiveNotFoundError, match="No archive at s3://archives/missing.zarr"):
        storage.open_archive("s3://archives/missing.zarr", storage_options=s3_options)


WORKER = """
import json, sys, pathlib, storage
url, options, source, shards = sys.argv[1], json.loads(sys.argv[2]), pathlib.Path(sys.argv[3]), sys.argv[4]
data = [path.read_bytes() for path in sorted(source.iterdir())]
for shard in map(int, shards.split(",")):
    keys = json.loads(sys.argv[5])[str(shard)]
    entries = [storage.Entry.ok(key, data[int(key[1:]) % len(data)]) for key in keys]
    print(storage.write_shard(url, shard, entries, storage_options=options), flush=True)
"""


def test_worker_processes_write_shards_to_s3_at_once(s3_options, encoded, tmp_path) -> None:
    import json

    url = f"s3://archives/{uuid.uuid4().hex}.zarr"
    keys = [f"k{n}" for n in range(16)]
    with storage.open_archive(url, "a", s3_options, items_per_shard=4, job={"codec": "DDCM"}) as driver:
        reservation = driver.reserve(keys)
    (tmp_path / "src").mkdir()
    for number, data in enumerate(encoded):
        (tmp_path / "src" / f"{number}.ddcm").write_bytes(data)
    shard_keys = json.dumps({shard: reservation.shard_keys(shard) for shard in reservation.shards})
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(WORKER),
                url,
                json.dumps(s3_options),
                str(tmp_path / "src"),
                shards,
                shard_keys,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for shards in ("0,2", "1,3")
    ]
    results = [worker.communicate(timeout=180) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], [err[-2000:] for _, err in results]
    archive = storage.open_archive(url, storage_options=s3_options)
    assert archive.complete_shards() == [0, 1, 2, 3] and archive.keys() == keys
    assert [archive.read_bytes(key) for key in keys] == [encoded[n % 6] for n in range(16)]
