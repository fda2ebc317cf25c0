"""Faults: damaged entries affect only themselves, writers killed with SIGKILL lose nothing and duplicate
nothing, and two processes write different shards of one archive at the same time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import storage

from .test_archive import crops, encoded  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]


def build(url: str, encoded: list[bytes], items_per_shard: int = 4) -> list[str]:
    keys = [f"img{n}.png" for n in range(len(encoded))]
    with storage.open_archive(url, "w", items_per_shard=items_per_shard) as archive:
        for key, data in zip(keys, encoded):
            archive.add(key, data)
    return keys


def flip_byte_inside(path: Path, needle: bytes) -> None:
    """Flip one byte in the middle of ``needle``'s occurrence in the object at ``path``."""
    blob = bytearray(path.read_bytes())
    at = blob.find(needle)
    assert at >= 0 and blob.find(needle, at + 1) < 0
    blob[at + len(needle) // 2] ^= 0x40
    path.write_bytes(bytes(blob))


def test_a_flipped_byte_damages_exactly_one_entry(tmp_path, encoded) -> None:
    url = tmp_path / "a.zarr"
    keys = build(str(url), encoded)
    flip_byte_inside(url / "bitstream" / "c" / "1", encoded[5])
    archive = storage.open_archive(str(url))
    report = archive.verify()
    assert list(report.corrupt) == ["img5.png"] and report.ok == 5 and not report.healthy
    assert "img5.png" in report.corrupt["img5.png"] and "CRC" in report.corrupt["img5.png"]
    with pytest.raises(storage.CorruptEntryError, match="'img5.png'"):
        archive["img5.png"]
    with pytest.raises(OSError):  # CorruptEntryError is also the core's CorruptFileError, an OSError
        archive.read_bytes(5)
    assert [archive.read_bytes(key) for key in keys[:5]] == encoded[:5]
    assert archive.read_bytes(5, check=False) != encoded[5]


def test_a_missing_shard_object_or_damaged_index_names_each_key(tmp_path, encoded) -> None:
    url = tmp_path / "a.zarr"
    keys = build(str(url), encoded)
    (url / "bitstream" / "c" / "1").unlink()  # entries 4 and 5
    shard = url / "bitstream" / "c" / "0"
    blob = bytearray(shard.read_bytes())
    blob[-10] ^= 0xFF  # inside the shard index, which carries a CRC-32C
    shard.write_bytes(bytes(blob))
    archive = storage.open_archive(str(url))
    report = archive.verify()
    assert sorted(report.corrupt) == keys and report.ok == 0
    assert "missing" in report.corrupt["img4.png"]
    for key in keys[:4]:
        with pytest.raises(storage.CorruptEntryError, match=f"'{key}'.*cannot be read"):
            archive.read_bytes(key)
    assert archive.info("img4.png")["status"] == "ok"  # the columns are intact


def test_verify_decodes_a_sample(tmp_path, encoded, model_dir) -> None:
    url = str(tmp_path / "a.zarr")
    build(url, encoded)
    report = storage.open_archive(url).verify(sample=2)
    assert report.healthy and report.decoded == ["img0.png", "img5.png"] and report.ok == 6
    assert "6 entries, 6 ok" in report.summary()


CHILD_ADDS = """
import sys, pathlib, storage
url, source = sys.argv[1], pathlib.Path(sys.argv[2])
data = sorted(source.iterdir())
with storage.open_archive(url, "a", items_per_shard=4) as archive:
    for round in range(1000):
        for path in data:
            key = f"{round:03d}/{path.stem}.png"
            archive.add(key, path.read_bytes())
            archive.flush()
            print(key, flush=True)
"""


def run_until(script: str, args: list[str], lines: int) -> list[str]:
    """Start ``script``, read ``lines`` lines of its output, SIGKILL it, return what it printed."""
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    printed = [child.stdout.readline().strip() for _ in range(lines)]
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL and all(printed)
    return printed


@pytest.fixture()
def sources(tmp_path, encoded) -> Path:
    folder = tmp_path / "sources"
    folder.mkdir()
    for number, data in enumerate(encoded):
        (folder / f"s{number}.ddcm").write_bytes(data)
    return folder


def test_adding_writer_killed_midway_loses_and_duplicates_nothing(tmp_path, encoded, sources) -> None:
    url = str(tmp_path / "killed.zarr")
    durable = run_until(CHILD_ADDS, [url, str(sources)], lines=15)
    sequence = [(f"{round:03d}/s{number}.png", data) for round in range(1000) for number, data in enumerate(encoded)]
    archive = storage.open_archive(url, "a")
    keys = archive.keys()
    assert keys == [key for key, _ in sequence[: len(keys)]] and keys[: len(durable)] == durable
    report = archive.verify()
    assert report.healthy and not report.pending and report.ok == len(keys)  # no half-written entry visible
    assert [archive.read_bytes(key) for key in keys] == [data for _, data in sequence[: len(keys)]]
    wanted = sequence[: len(keys) + 6]
    for key, data in wanted:  # the rerun skips what is there and adds the rest, once
        if key not in archive:
            archive.add(key, data)
    archive.close()
    archive = storage.open_archive(url)
    assert archive.keys() == [key for key, _ in wanted] and archive.verify().ok == len(wanted)


CHILD_SHARDS = """
import sys, pathlib, storage
url, source, shards = sys.argv[1], pathlib.Path(sys.argv[2]), [int(s) for s in sys.argv[3].split(",")]
data = [path.read_bytes() for path in sorted(source.iterdir())]
archive = storage.open_archive(url)
for attempt in range(int(sys.argv[4])):
    for shard in shards:
        keys = archive.keys()[shard * archive.items_per_shard : (shard + 1) * archive.items_per_shard]
        entries = [storage.Entry.ok(key, data[int(key[1:]) % len(data)]) for key in keys]
        storage.write_shard(url, shard, entries)
        print(shard, flush=True)
"""


def reserve(url: str, count: int) -> list[str]:
    keys = [f"k{n}" for n in range(count)]
    with storage.open_archive(url, "w", items_per_shard=4, job={"codec": "DDCM"}) as driver:
        driver.reserve(keys)
    return keys


def test_shard_writer_killed_midway_then_retried(tmp_path, encoded, sources) -> None:
    url = str(tmp_path / "job.zarr")
    keys = reserve(url, 12)
    run_until(CHILD_SHARDS, [url, str(sources), "0,1,2", "1000"], lines=7)  # rewriting shards 0..2 over and over
    archive = storage.open_archive(url)
    complete = archive.complete_shards()
    assert len(complete) >= 2 and len(archive) == 12 and archive.keys() == keys  # at most one was cut short
    assert archive.verify().healthy  # whatever shard was cut short is pending, not half visible
    for shard in {0, 1, 2} - set(complete):
        storage.write_shard(
            url, shard, [storage.Entry.ok(k, encoded[int(k[1:]) % 6]) for k in keys[4 * shard : 4 * shard + 4]]
        )
    archive = storage.open_archive(url)
    assert archive.complete_shards() == [0, 1, 2] and archive.counts() == {"ok": 12, "failed": 0, "pending": 0}
    assert [archive.read_bytes(k) for k in keys] == [encoded[n % 6] for n in range(12)]


def test_two_processes_write_different_shards_at_once(tmp_path, encoded, sources) -> None:
    url = str(tmp_path / "job.zarr")
    keys = reserve(url, 24)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CHILD_SHARDS), url, str(sources), shards, "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for shards in ("0,2,4", "1,3,5")
    ]
    outputs = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0], [err for _, err in outputs]
    archive = storage.open_archive(url)
    assert archive.complete_shards() == list(range(6)) and archive.keys() == keys
    assert [archive.read_bytes(k) for k in keys] == [encoded[n % 6] for n in range(24)]
    assert archive.verify().healthy


def test_an_invalid_status_is_reported_not_trusted(tmp_path, encoded) -> None:
    import numpy as np
    import zarr

    url = tmp_path / "a.zarr"
    build(str(url), encoded)
    zarr.open_array(str(url / "status"), mode="r+")[2:3] = np.array([7], dtype=np.uint8)
    archive = storage.open_archive(str(url))
    with pytest.raises(storage.CorruptEntryError, match=r"'img2.png'.*has status invalid \(7\)"):
        archive.read_bytes(2)
    assert list(archive.verify().corrupt) == ["img2.png"]
