"""Zarr image archives on real local and memory:// stores: writing, reopening, appending, random access,
the shard API for parallel writers, and the errors for bad archives, keys and jobs."""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pytest
import zarr
from PIL import Image

import pillow_diffcodec
import storage
from pillow_diffcodec.errors import DiffCodecError, InvalidParameterError
from storage.extract import output_bases

from .conftest import FAST


@pytest.fixture(scope="module")
def crops(photo) -> list[Image.Image]:
    """Six different 16x16 crops of the test photo (tiny, so encoding stays cheap)."""
    return [photo.crop((x, y, x + 16, y + 16)) for x in (0, 20, 40) for y in (0, 24)]


@pytest.fixture(scope="module")
def encoded(crops, model_dir) -> list[bytes]:
    """The crops encoded with the tiny model loaded by path (so they decode in any process)."""
    return pillow_diffcodec.encode_batch(crops, model=str(model_dir), **FAST)


@pytest.fixture(params=["local", "memory"])
def url(request, tmp_path) -> str:
    return str(tmp_path / "photos.zarr") if request.param == "local" else f"memory://{uuid.uuid4().hex}/photos.zarr"


def test_write_reopen_and_random_access(url, encoded) -> None:
    with storage.open_archive(url, "w", items_per_shard=4) as archive:
        for number, data in enumerate(encoded):
            archive.add(f"dir/img{number}.png", data)
        assert len(archive) == len(encoded) and archive.read_bytes(5) == encoded[5]  # readable before flush
    archive = storage.open_archive(url)
    assert len(archive) == 6 and archive.keys() == [f"dir/img{n}.png" for n in range(6)]
    assert list(archive) == archive.keys() and "dir/img3.png" in archive and "nope" not in archive
    assert archive.read_bytes(2) == encoded[2] and archive.read_bytes("dir/img4.png") == encoded[4]
    assert archive.read_bytes(-1) == encoded[5]
    info = archive.info("dir/img1.png")
    header = pillow_diffcodec.info(encoded[1])
    assert info["index"] == 1 and info["status"] == "ok" and info["error"] == ""
    assert (info["width"], info["height"], info["mode"]) == (16, 16, "RGB")
    assert info["bpp"] == header["bpp"] and info["bytes"] == len(encoded[1])
    image = archive[3]
    assert image.format == "DDCM" and image.size == (16, 16)
    assert np.array_equal(np.asarray(image), np.asarray(pillow_diffcodec.decode(encoded[3])))
    assert archive.counts() == {"ok": 6, "failed": 0, "pending": 0} and archive.failed() == {}
    assert archive.complete_shards() == [0, 1]
    assert [key for key, _ in archive.items()] == archive.keys()
    assert archive.job["codec"] == "DDCM" and archive.job["fingerprint"] == header["fingerprint"]
    assert archive.attributes["format_version"] == 1 and archive.attributes["items_per_shard"] == 4


def test_bitstream_written_out_opens_in_pillow(tmp_path, encoded) -> None:
    url = str(tmp_path / "a.zarr")
    with storage.open_archive(url, "w") as archive:
        archive.add("x.png", encoded[0])
    path = tmp_path / "x.ddcm"
    path.write_bytes(storage.open_archive(url).read_bytes("x.png"))
    with Image.open(path) as image:
        assert image.format == "DDCM" and image.size == (16, 16)


def test_layout_is_sharded_and_consolidated(tmp_path, encoded) -> None:
    url = tmp_path / "a.zarr"
    with storage.open_archive(str(url), "w", items_per_shard=4) as archive:
        for number, data in enumerate(encoded):
            archive.add(f"k{number}", data)
    assert sorted(p.name for p in (url / "bitstream" / "c").iterdir()) == ["0", "1"]  # one object per shard
    root = json.loads((url / "zarr.json").read_text())
    assert set(root["consolidated_metadata"]["metadata"]) == set(storage.archive_layout.COLUMN_NAMES)
    codec = root["consolidated_metadata"]["metadata"]["bitstream"]["codecs"][0]
    assert codec["name"] == "sharding_indexed" and codec["configuration"]["chunk_shape"] == [1]
    bitstream = zarr.open_array(str(url / "bitstream"), mode="r")
    assert bitstream.shape == (8,) and bytes(bitstream[1:2][0]) == encoded[1]  # plain zarr reads it too


def test_append_mode_duplicates_and_overwrite(url, encoded) -> None:
    with storage.open_archive(url, "w", items_per_shard=4) as archive:
        for number in range(3):
            archive.add(f"k{number}", encoded[number])
    with storage.open_archive(url, "a") as archive:
        with pytest.raises(storage.DuplicateKeyError, match="'k1'.*overwrite=True"):
            archive.add("k1", encoded[4])
        archive.add("k3", encoded[3])
        archive.add("k4", encoded[4])
        archive.add("k1", encoded[5], overwrite=True)
    archive = storage.open_archive(url)
    assert archive.keys() == ["k0", "k1", "k2", "k3", "k4"]
    assert [archive.read_bytes(n) for n in range(5)] == [encoded[0], encoded[5], encoded[2], encoded[3], encoded[4]]


def test_add_images_source_files_and_failures(tmp_path, crops, model_dir) -> None:
    png = io.BytesIO()
    crops[0].save(png, format="PNG")
    url = str(tmp_path / "a.zarr")
    with storage.open_archive(url, "w") as archive:
        first = archive.add("pil.png", crops[1], model=str(model_dir), **FAST)
        second = archive.add("file.png", png.getvalue(), model=str(model_dir), **FAST)
        broken = archive.add("broken.png", b"not an image at all")
        damaged = archive.add("damaged.ddcm", pillow_diffcodec.encode(crops[3], model=str(model_dir), **FAST)[:-1])
        with pytest.raises(InvalidParameterError):  # bad options are the caller's to fix: nothing recorded
            archive.add("bad-options.png", crops[2], model=str(model_dir), codebook_size=-3)
        with pytest.raises(InvalidParameterError, match="already encoded"):
            archive.add("x", pillow_diffcodec.encode(crops[2], model=str(model_dir), **FAST), steps=4)
    assert first["status"] == "ok" and first["source_size"] == -1
    assert second["source_size"] == len(png.getvalue()) and len(second["source_sha256"]) == 64
    assert broken["status"] == "failed" and "UnidentifiedImageError" in broken["error"]
    assert damaged["status"] == "failed" and damaged["error"].startswith("CorruptFileError")
    archive = storage.open_archive(url)
    assert len(archive) == 4 and list(archive.failed()) == ["broken.png", "damaged.ddcm"]
    with pytest.raises(storage.FailedEntryError, match="'broken.png'.*UnidentifiedImageError"):
        archive["broken.png"]
    assert [key for key, _ in archive.items()] == ["pil.png", "file.png"]


def test_reserve_then_write_shards(url, encoded) -> None:
    keys = [f"src/{n:02d}.png" for n in range(10)]
    job = {"codec": "DDCM", "model": "tiny", "params": {"steps": 3}, "source": "memory://src"}
    with storage.open_archive(url, "a", items_per_shard=4, job=job) as driver:
        reservation = driver.reserve(keys)
        assert (reservation.start, reservation.stop, reservation.shards) == (0, 10, range(3))
        assert reservation.shard_keys(2) == keys[8:] and driver.complete_shards() == []
        assert driver.reserve(keys) == reservation  # a rerun of the driver resumes
    archive = storage.open_archive(url)
    assert len(archive) == 10 and archive.counts()["pending"] == 10
    with pytest.raises(storage.PendingEntryError, match="'src/05.png'.*shard 1"):
        archive.read_bytes("src/05.png")
    for shard in (0, 2):
        entries = [storage.Entry.ok(key, encoded[n % 6]) for n, key in enumerate(reservation.shard_keys(shard))]
        entries[1] = storage.Entry.failed(entries[1].key, ValueError("cannot decode source"), source=b"\x00junk")
        report = storage.write_shard(url, shard, entries)
        assert (report.ok, report.failed) == (len(entries) - 1, 1)
    archive = storage.open_archive(url)
    assert archive.complete_shards() == [0, 2] and archive.pending() == keys[4:8]
    assert archive.failed() == {
        keys[1]: "ValueError: cannot decode source",
        keys[9]: "ValueError: cannot decode source",
    }
    assert archive.info(keys[1])["source_size"] == 5
    storage.write_shard(url, 0, [storage.Entry.ok(key, encoded[0]) for key in reservation.shard_keys(0)])  # a retry
    archive = storage.open_archive(url)
    assert len(archive) == 10 and archive.keys() == keys and archive.read_bytes(keys[1]) == encoded[0]
    assert archive.attributes["job"] == job


def test_reservation_after_added_entries_shares_a_shard(tmp_path, encoded) -> None:
    url = str(tmp_path / "mixed.zarr")
    with storage.open_archive(url, "w", items_per_shard=4) as archive:
        for number in range(3):
            archive.add(f"a{number}", encoded[number])
        reservation = archive.reserve(["b0", "b1", "b2"])
    assert reservation.shards == range(2) and reservation.shard_keys(0) == ["b0"]
    storage.write_shard(url, 0, [storage.Entry.ok("b0", encoded[3])])
    archive = storage.open_archive(url)
    assert archive.complete_shards() == [0] and archive.read_bytes("a2") == encoded[2]
    assert archive.read_bytes("b0") == encoded[3]
    with storage.open_archive(url, "a") as writer:  # add() fills reserved (pending) entries
        writer.add("b1", encoded[4])
        writer.add("b2", encoded[5])
    assert storage.open_archive(url).complete_shards() == [0, 1]


def test_write_shard_refuses_what_is_not_its_own(tmp_path, encoded) -> None:
    url = str(tmp_path / "job.zarr")
    with storage.open_archive(url, "w", items_per_shard=2) as driver:
        driver.reserve(["a", "b", "c"])
    with pytest.raises(storage.UnreservedKeyError, match="'c' is not reserved in shard 0"):
        storage.write_shard(url, 0, [storage.Entry.ok("c", encoded[0])])
    with pytest.raises(storage.ArchiveError, match="no shard 2"):
        storage.write_shard(url, 2, [])
    with pytest.raises(storage.DuplicateKeyError):
        storage.write_shard(url, 0, [storage.Entry.ok("a", encoded[0]), storage.Entry.ok("a", encoded[1])])
    with pytest.raises(storage.CorruptEntryError, match="'a'"):
        storage.Entry.ok("a", encoded[0][:-1])
    assert storage.open_archive(url).counts()["pending"] == 3


def test_reserve_refuses_overlapping_keys(tmp_path, encoded) -> None:
    with storage.open_archive(str(tmp_path / "a.zarr"), "w") as archive:
        archive.reserve(["a", "b"])
        with pytest.raises(storage.DuplicateKeyError, match="already in"):
            archive.reserve(["b", "c"])
        with pytest.raises(storage.DuplicateKeyError, match="more than once"):
            archive.reserve(["x", "x"])
        with pytest.raises(storage.InvalidKeyError):
            archive.reserve(["", "y"])


def test_job_settings_are_recorded_and_checked(tmp_path) -> None:
    url = str(tmp_path / "a.zarr")
    storage.open_archive(url, "a", job={"model": "m1", "params": {"steps": 20}}).close()
    storage.open_archive(url, "a", job={"model": "m1", "params": {"steps": 20}}).close()
    with pytest.raises(
        storage.JobMismatchError, match=r"params: archive has \{'steps': 20\}, this job \{'steps': 10\}"
    ):
        storage.open_archive(url, "a", job={"model": "m1", "params": {"steps": 10}})


def test_not_an_archive_and_newer_versions(tmp_path, encoded) -> None:
    with pytest.raises(storage.ArchiveNotFoundError, match="No archive at"):
        storage.open_archive(str(tmp_path / "missing.zarr"))
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w").create_array("a", shape=(3,), dtype="i4")
    with pytest.raises(storage.NotAnArchiveError, match="not a diffcodec archive"):
        storage.open_archive(str(tmp_path / "plain.zarr"))
    with pytest.raises(storage.NotAnArchiveError):
        storage.open_archive(str(tmp_path / "plain.zarr" / "a"))
    url = tmp_path / "new.zarr"
    storage.open_archive(str(url), "w").close()
    root = json.loads((url / "zarr.json").read_text())
    root["attributes"]["diffcodec_archive"]["format_version"] = 2
    (url / "zarr.json").write_text(json.dumps(root))
    for mode in ("r", "a"):
        with pytest.raises(storage.UnsupportedArchiveVersionError, match="version 2.*upgrade pillow-diffcodec"):
            storage.open_archive(str(url), mode)


def test_addressing_errors(tmp_path, encoded) -> None:
    url = str(tmp_path / "a.zarr")
    with storage.open_archive(url, "w") as archive:
        archive.add("a", encoded[0])
    archive = storage.open_archive(url)
    with pytest.raises(storage.EntryIndexError, match="Index 1 is out of range"):
        archive[1]
    with pytest.raises(IndexError):
        archive.info(-2)
    with pytest.raises(storage.EntryNotFoundError, match="No entry with key 'b'"):
        archive["b"]
    with pytest.raises(KeyError):
        archive.read_bytes("b")
    with pytest.raises(storage.ReadOnlyArchiveError, match="mode 'a'"):
        archive.add("b", encoded[1])
    with pytest.raises(DiffCodecError):
        storage.open_archive(url, "x")
    with pytest.raises(storage.InvalidKeyError):
        archive[1.5]


def test_extract_writes_images_and_reports_the_rest(tmp_path, encoded, capsys) -> None:
    url = str(tmp_path / "a.zarr")
    with storage.open_archive(url, "w") as archive:
        archive.add("deep/dir/one.jpg", encoded[0])
        archive.add("two", encoded[1])
        archive.add("bad.png", b"garbage")
        archive.add("../escape.png", encoded[2])
        archive.add("a::b.png", encoded[3])
    destination = f"memory://{uuid.uuid4().hex}/out"
    report = storage.open_archive(url).extract(destination)
    assert report.written == {"deep/dir/one.jpg": f"{destination}/deep/dir/one.png", "two": f"{destination}/two.png"}
    assert list(report.skipped) == ["bad.png"] and "not a safe relative path" in report.errors["../escape.png"]
    assert "a::b.png" in report.errors
    restored = storage.open_image(f"{destination}/two.png")
    assert restored.format == "PNG" and np.array_equal(
        np.asarray(restored), np.asarray(pillow_diffcodec.decode(encoded[1]))
    )
    assert "extract" in capsys.readouterr().err  # the progress bar
    raw = storage.open_archive(url).extract(str(tmp_path / "raw"), format=None, progress=False)
    assert (tmp_path / "raw" / "deep" / "dir" / "one.ddcm").read_bytes() == encoded[0] and len(raw.written) == 2


def test_extract_keeps_every_entry_whose_names_would_clash(tmp_path, encoded) -> None:
    """photo.png, photo.jpg and photo would all become photo.png: the two with extensions keep their full
    key (photo.png.png, photo.jpg.png), and each file holds its own entry's pixels, with any --jobs."""
    url = str(tmp_path / "a.zarr")
    keys = ["photo.png", "photo.jpg", "photo", "deep/cat.jpg"]
    with storage.open_archive(url, "w") as archive:
        for key, data in zip(keys, encoded):
            archive.add(key, data)
    names = {"photo.png": "photo.png.png", "photo.jpg": "photo.jpg.png", "photo": "photo.png",
             "deep/cat.jpg": "deep/cat.png"}
    outputs = {}
    for jobs in (1, 3):
        report = storage.open_archive(url).extract(str(tmp_path / f"out{jobs}"), progress=False, jobs=jobs)
        assert report.written == {key: str(tmp_path / f"out{jobs}" / name) for key, name in names.items()}
        assert not report.errors and not report.skipped
        outputs[jobs] = {key: (tmp_path / f"out{jobs}" / name).read_bytes() for key, name in names.items()}
    assert outputs[1] == outputs[3]  # the decoded pixels do not depend on the number of threads
    for key, data in zip(keys, encoded):
        restored = Image.open(io.BytesIO(outputs[3][key]))
        assert np.array_equal(np.asarray(restored), np.asarray(pillow_diffcodec.decode(data)))
    assert output_bases(["a.png", "a.jpg", "a.png.tif"]) == {
        "a.png": "a.png", "a.jpg": "a.jpg", "a.png.tif": "a.png.tif"}  # a.png.png would clash: all keep their key


def test_archive_of_cdc_files_extracts_to_cdc_files(tmp_path, photo) -> None:
    """The stored files get their codec's extension (from the registry); a codec name as the format
    writes the stored files too and refuses entries of another codec; unknown formats are refused."""
    from .test_cdc import tiny_cdc_folder

    cdc = pillow_diffcodec.encode(photo.crop((0, 0, 32, 32)), codec="CDC",
                                  model=str(tiny_cdc_folder(tmp_path / "tiny-cdc")), rate_point=0)
    url = str(tmp_path / "a.zarr")
    with storage.open_archive(url, "w") as archive:
        archive.add("crop.png", cdc)
    archive = storage.open_archive(url)
    for format in (None, "RAW", "cdc"):
        report = archive.extract(str(tmp_path / str(format)), format=format, progress=False)
        assert (tmp_path / str(format) / "crop.cdc").read_bytes() == cdc and len(report.written) == 1
    wrong = archive.extract(str(tmp_path / "psc"), format="PSC", progress=False)
    assert "is a CDC file, not PSC" in wrong.errors["crop.png"] and not (tmp_path / "psc").exists()
    with pytest.raises(InvalidParameterError, match="Cannot extract as 'NOPE'"):
        archive.extract(str(tmp_path / "nope"), format="NOPE")


def test_as_torch_dataset(tmp_path, encoded) -> None:
    import pickle

    import torch

    url = str(tmp_path / "a.zarr")
    with storage.open_archive(url, "w") as archive:
        archive.add("a", encoded[0])
        archive.add("failed", b"garbage")
        archive.add("b", encoded[1])
    dataset = storage.open_archive(url).as_torch_dataset()
    assert len(dataset) == 2 and dataset.keys == ["a", "b"]
    item = dataset[1]
    assert item.dtype == torch.uint8 and item.shape == (3, 16, 16)
    assert torch.equal(item, torch.from_numpy(np.array(pillow_diffcodec.decode(encoded[1]))).permute(2, 0, 1))
    copy = pickle.loads(pickle.dumps(dataset))  # what spawned DataLoader workers receive
    assert torch.equal(copy[0], dataset[0])
    batches = list(torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2))  # forked workers
    assert len(batches) == 1 and torch.equal(batches[0][1], item)
    sizes = storage.open_archive(url).as_torch_dataset(transform=lambda image: image.size)
    assert sizes[0] == (16, 16)


def test_reading_one_entry_costs_the_same_requests_in_any_size_of_archive(tmp_path, encoded) -> None:
    from zarr.storage import LocalStore, LoggingStore

    counts = []
    for size in (8, 200):
        url = tmp_path / f"a{size}.zarr"
        with storage.open_archive(str(url), "w", items_per_shard=4) as archive:
            for number in range(size):
                archive.add(f"k{number}", encoded[number % 6])
        logged = LoggingStore(LocalStore(str(url), read_only=True), log_level="ERROR")
        archive = storage.open_archive(logged)
        assert archive.read_bytes(size - 3) == encoded[(size - 3) % 6]
        counts.append(dict(logged.counter))
    assert counts[0] == counts[1] and counts[0]["get"] <= 4  # root metadata, status, bitstream index and entry


def test_creating_never_replaces_other_data(tmp_path, encoded) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "precious.jpg").write_bytes(b"\xff\xd8 not backed up anywhere")
    for mode in ("w", "a"):
        with pytest.raises(storage.ArchiveError, match="holds other data.*refusing"):
            storage.open_archive(str(photos), mode)
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w").create_array("a", shape=(3,), dtype="i4")
    with pytest.raises(storage.ArchiveError, match="not a diffcodec archive; refusing"):
        storage.open_archive(str(tmp_path / "plain.zarr"), "w")
    assert (photos / "precious.jpg").exists() and (tmp_path / "plain.zarr" / "a" / "zarr.json").exists()
    url = str(tmp_path / "a.zarr")
    with storage.open_archive(url, "w") as archive:
        archive.add("a", encoded[0])
    assert len(storage.open_archive(url, "w")) == 0  # an archive may be replaced


def test_records_of_chosen_shards(tmp_path, encoded) -> None:
    url = str(tmp_path / "a.zarr")
    with storage.open_archive(url, "w", items_per_shard=4) as archive:
        for number, data in enumerate(encoded):
            archive.add(f"k{number}", data)
        archive.add("bad", b"junk")
    archive = storage.open_archive(url)
    assert archive.shards == range(2)
    rows = list(archive.records(shards=[1]))
    assert [row["key"] for row, _ in rows] == ["k4", "k5", "bad"]
    assert [data for _, data in rows] == [encoded[4], encoded[5], None]
    with pytest.raises(storage.EntryIndexError, match="no shard 2"):
        list(archive.records(shards=[2]))
