"""Repairing archives on real local zarr stores (written as bulk jobs write them), with a real local Ray
instance (2 CPUs) for read_archive: ``verify --repair`` re-encodes damaged entries from their source (or marks them failed with
the reason), ``info``/``ls`` say what the last verify found, ``read_archive(on_error=...)`` raises the
documented error naming the key, skips or nulls damaged entries, and ``archive repair`` rebuilds a lost
root ``zarr.json``."""

from __future__ import annotations

import argparse
import gc
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

import pillow_diffcodec
import ray_jobs
import storage
from pillow_diffcodec.errors import InvalidParameterError
from storage.cli import register

from . import ray_helpers
from .conftest import FAST
from .ray_helpers import GOOD_KEYS, tree_files, write_tree
from .test_archive import crops, encoded  # noqa: F401  (fixtures)

local_ray = ray_helpers.local_ray  # the module's Ray instance (a fixture)


def run(*argv: str) -> int:
    """``diffcodec archive ARGV`` through a parser built with the registered commands."""
    parser = argparse.ArgumentParser(prog="diffcodec")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["archive", *argv])
    return args.run(args)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("tree"), tree_files())


@pytest.fixture(scope="module")
def bulk_archive(source, model_dir, tmp_path_factory) -> Path:
    """The tree written as a bulk job writes it (its job record, reserved keys, whole shards of 2 entries with
    their sources' sha256, the unreadable source failed); tests damage copies of it."""
    from pillow_diffcodec.models import load_model

    dest = tmp_path_factory.mktemp("archives") / "tree.zarr"
    model = load_model(str(model_dir))
    params = {"seed": 0, "keep_alpha": True, **FAST}
    job = {"codec": "DDCM", "model": model.name, "fingerprint": model.fingerprint.hex(), "params": params,
           "source": str(source)}
    files = {key: data for key, data in sorted(tree_files().items()) if key.endswith(".png")}
    with storage.open_archive(str(dest), "w", items_per_shard=2, job=job) as archive:
        reservation = archive.reserve(list(files))
    for shard in reservation.shards:
        entries = [bulk_entry(key, files[key], model.name, params) for key in reservation.shard_keys(shard)]
        storage.write_shard(str(dest), shard, entries)
    return dest


def bulk_entry(key: str, raw: bytes, model: str, params: dict) -> storage.Entry:
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            return storage.Entry.ok(key, pillow_diffcodec.encode(image, model=model, **params), source=raw)
    except OSError as exc:
        return storage.Entry.failed(key, exc, source=raw)


@pytest.fixture()
def copy(bulk_archive, tmp_path) -> Path:
    shutil.copytree(bulk_archive, tmp_path / "copy.zarr")
    return tmp_path / "copy.zarr"


def shard_object(url: Path, key: str) -> Path:
    archive = storage.open_archive(str(url))
    return url / "bitstream" / "c" / str(archive.info(key)["index"] // archive.items_per_shard)


def damage(url: Path) -> str:
    """Flip a byte inside one entry's bitstream (one whose bytes occur once in its shard object); its key."""
    archive = storage.open_archive(str(url))
    key = next(k for k in GOOD_KEYS if shard_object(url, k).read_bytes().count(archive.read_bytes(k)) == 1)
    data, shard = archive.read_bytes(key), shard_object(url, key)
    stored = bytearray(shard.read_bytes())
    stored[stored.index(data) + len(data) // 2] ^= 0x40
    shard.write_bytes(bytes(stored))
    return key


def originals(url: Path) -> dict[str, bytes]:
    archive = storage.open_archive(str(url))
    return {key: archive.read_bytes(key) for key in GOOD_KEYS}


def test_verify_repair_reencodes_a_damaged_entry_from_its_source(copy, capsys) -> None:
    before = originals(copy)
    victim = damage(copy)
    with pytest.raises(storage.CorruptEntryError, match="diffcodec archive verify --repair") as caught:
        storage.open_archive(str(copy)).read_bytes(victim)
    assert "rerun its shard" not in str(caught.value)
    assert run("verify", str(copy), "--repair") == 1  # a source item failed when written: still reported
    captured = capsys.readouterr()
    assert f"{victim}: repaired (re-encoded from its source)" in captured.out and "repaired 1" in captured.out
    archive = storage.open_archive(str(copy))
    assert originals(copy) == before  # byte-identical to what the bulk job wrote
    assert archive.info(victim)["source_sha256"] == storage.open_archive(str(copy)).info(victim)["source_sha256"]
    report = archive.verify()
    assert report.healthy and report.ok == len(GOOD_KEYS)
    assert archive.last_verify["repaired"] == [victim] and archive.last_verify["healthy"]


def test_a_damaged_shard_index_is_repaired_whole(copy) -> None:
    before = originals(copy)
    shard = shard_object(copy, GOOD_KEYS[0])
    blob = bytearray(shard.read_bytes())
    blob[-10] ^= 0xFF  # inside the shard index (CRC-32C): zarr can read no entry of this object
    shard.write_bytes(bytes(blob))
    archive = storage.open_archive(str(copy), "a")
    report = archive.verify(repair=True)
    assert report.corrupt and sorted(report.repaired) == sorted(report.corrupt) and not report.marked_failed
    assert report.healthy and originals(copy) == before


def test_entries_without_a_reachable_source_are_marked_failed(copy, source) -> None:
    victim = damage(copy)
    moved = source / victim
    hidden = moved.rename(moved.with_suffix(".gone"))
    try:
        report = storage.open_archive(str(copy), "a").verify(repair=True)
    finally:
        hidden.rename(moved)
    assert report.repaired == [] and list(report.marked_failed) == [victim] and report.healthy
    archive = storage.open_archive(str(copy))
    reason = archive.failed()[victim]
    assert "cannot be re-encoded" in reason and "cannot be read" in reason and "FileNotFoundError" in reason
    assert archive.info(victim)["source_sha256"]  # what was recorded about the source is kept
    with pytest.raises(storage.FailedEntryError, match="cannot be re-encoded"):
        archive.read_bytes(victim)


def test_an_archive_without_a_recorded_source_marks_damaged_entries_failed(tmp_path, encoded) -> None:  # noqa: F811
    url = tmp_path / "added.zarr"
    with storage.open_archive(str(url), "w", items_per_shard=4) as archive:
        for number, data in enumerate(encoded):
            archive.add(f"img{number}.png", data)
    blob = bytearray((url / "bitstream" / "c" / "1").read_bytes())
    blob[blob.index(encoded[5]) + 30] ^= 0x40
    (url / "bitstream" / "c" / "1").write_bytes(bytes(blob))
    report = storage.open_archive(str(url), "a").verify(repair=True)
    assert list(report.marked_failed) == ["img5.png"] and "records no source" in report.marked_failed["img5.png"]
    with pytest.raises(storage.ReadOnlyArchiveError):
        storage.open_archive(str(url)).verify(repair=True)


def test_info_and_ls_say_unverified_until_a_verify_then_its_result(copy, capsys) -> None:
    run("info", str(copy), "--json")
    assert json.loads(capsys.readouterr().out)["verified"] == "unverified"
    run("ls", str(copy), "--status", "ok")
    assert all(line.split()[1] == "unverified" for line in capsys.readouterr().out.splitlines())
    victim = damage(copy)
    assert not storage.open_archive(str(copy)).verify().healthy  # read-only: checked, not recorded
    assert storage.open_archive(str(copy)).last_verify is None
    assert run("verify", str(copy)) == 1
    capsys.readouterr()
    assert run("info", str(copy)) == 1
    verified = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("verified: "))
    assert f"{len(GOOD_KEYS) + 1} entries, {len(GOOD_KEYS) - 1} ok" in verified and "1 corrupt" in verified
    assert run("ls", str(copy), "--status", "ok") == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines].count("ok") == len(GOOD_KEYS) - 1
    [corrupt] = [line for line in lines if line.split()[1] == "corrupt"]
    assert f"{victim}  Entry '{victim}'" in corrupt and "CRC" in corrupt
    run("ls", str(copy), "--json")
    rows = {row["key"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows[victim]["verified"] == "corrupt" and "CRC" in rows[victim]["damage"]
    assert rows["a/broken.png"]["verified"] is None and rows["a/broken.png"]["damage"] == ""


def corrupt_entry_error(consume: Callable[[], object]) -> str:
    """The message of the storage.CorruptEntryError that ``consume`` raises (whose Ray wrapper carries the same
    error as its cause); the exception and its traceback are dropped on return."""
    try:
        consume()
    except storage.CorruptEntryError as exc:
        assert isinstance(exc.cause, storage.CorruptEntryError)
        return str(exc.cause)
    raise AssertionError("no CorruptEntryError was raised")


def test_read_archive_raises_skips_or_nulls_a_damaged_entry(local_ray, copy) -> None:
    victim = damage(copy)
    for consume in (lambda: ray_jobs.read_archive(str(copy)).take_all(),
                    lambda: list(ray_jobs.read_archive(str(copy), on_error="raise").iter_rows())):
        assert victim in corrupt_entry_error(consume)
        gc.collect()  # the failed dataset's actors hold the 2 CPUs until nothing refers to the executor
    skipped = ray_jobs.read_archive(str(copy), on_error="skip").take_all()
    assert sorted(row["key"] for row in skipped) == sorted(set(GOOD_KEYS) - {victim})
    nulled = {row["key"]: row for row in ray_jobs.read_archive(str(copy), on_error="null").take_all()}
    assert sorted(nulled) == GOOD_KEYS and nulled[victim]["image"] is None and victim in nulled[victim]["error"]
    assert all(nulled[key]["error"] == "" and nulled[key]["image"].shape[:2] for key in GOOD_KEYS if key != victim)
    with pytest.raises(InvalidParameterError, match="on_error"):
        ray_jobs.read_archive(str(copy), on_error="ignore")


def test_archive_repair_rebuilds_a_truncated_root(copy, capsys) -> None:
    before = storage.open_archive(str(copy))
    keys, counts, job, entries = before.keys(), before.counts(), before.job, list(before.entries())
    assert run("repair", str(copy)) == 0 and "nothing to rebuild" in capsys.readouterr().out
    root = copy / "zarr.json"
    root.write_bytes(root.read_bytes()[: len(root.read_bytes()) // 2])
    with pytest.raises(storage.NotAnArchiveError):
        storage.open_archive(str(copy))
    assert run("repair", str(copy)) == 0
    assert f"{len(keys)} entries, 2 per shard" in capsys.readouterr().out
    archive = storage.open_archive(str(copy))
    assert archive.keys() == keys and archive.counts() == counts and archive.job == job
    assert json.dumps(list(archive.entries())) == json.dumps(entries) and archive.verify().ok == len(GOOD_KEYS)
    root.unlink()
    (copy / "status" / "zarr.json").unlink()
    assert run("repair", str(copy)) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "'status' array does not open" in error and "Traceback" not in error
