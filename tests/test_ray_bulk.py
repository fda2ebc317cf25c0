"""Bulk recompression on a real local Ray instance (2 CPUs): folder, tar, zip and parquet sources with bad
and unusual images, reruns, refused settings, resuming after the driver is interrupted, and the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pillow_diffcodec
import ray_jobs
import storage
from pillow_diffcodec.cli import main as cli_main

from . import ray_helpers
from .conftest import FAST
from .ray_helpers import GOOD_KEYS, IMAGE_KEYS, photo, tree_files, write_tar, write_tree

local_ray = ray_helpers.local_ray  # the module's Ray instance (a fixture)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("tree"), tree_files())


@pytest.fixture(scope="module")
def folder_archive(local_ray, folder, model_dir, tmp_path_factory) -> tuple[str, ray_jobs.BulkReport]:
    """The nested folder compressed once (3 items per shard), shared by the tests that read it."""
    dest = str(tmp_path_factory.mktemp("archives") / "tree.zarr")
    report = ray_jobs.bulk_compress(str(folder), dest, model=str(model_dir), items_per_shard=3, progress=False, **FAST)
    return dest, report


def check_entries(dest: str, files: dict[str, bytes]) -> storage.Archive:
    """Every image key exactly once, ok entries matching their source's size, mode and hash; broken one failed."""
    archive = storage.open_archive(dest)
    assert archive.keys() == IMAGE_KEYS and len(archive) == len(IMAGE_KEYS)
    assert archive.counts() == {"ok": len(GOOD_KEYS), "failed": 1, "pending": 0}
    failed = archive.failed()
    assert list(failed) == ["a/broken.png"] and "OSError" in failed["a/broken.png"]
    for key in GOOD_KEYS:
        info = archive.info(key)
        decoded = pillow_diffcodec.decode(archive.read_bytes(key))
        with Image.open(io.BytesIO(files[key])) as original:
            assert decoded.size == original.size == (info["width"], info["height"])
            assert decoded.mode == original.mode == info["mode"]
        assert info["source_sha256"] == hashlib.sha256(files[key]).hexdigest()
    return archive


def test_nested_folder_with_corrupt_gray_rgba_and_odd_images(folder_archive) -> None:
    dest, report = folder_archive
    check_entries(dest, tree_files())
    assert (report.items, report.ok, report.failed, report.pending, report.skipped) == (8, 7, 1, 0, 0)
    assert report.encoded == 8 and report.shards == 3 and report.workers == 2 and report.complete
    assert report.bytes_in == sum(len(tree_files()[key]) for key in IMAGE_KEYS)
    archive = storage.open_archive(dest)
    assert report.bytes_out == sum(len(archive.read_bytes(key)) for key in GOOD_KEYS)
    pixels = sum(archive.info(key)["width"] * archive.info(key)["height"] for key in GOOD_KEYS)
    assert report.pixels == pixels and report.mean_bpp == pytest.approx(8 * report.bytes_out / pixels)
    assert report.images_per_second > 0 and report.wall_seconds > 0
    assert ray_jobs.read_report(dest)["runs"][0] == json.loads(json.dumps(report.as_dict()))
    assert archive.job["params"] == {"seed": 0, "keep_alpha": True, **FAST}
    assert archive.job["source"] == str(Path(report.source).resolve())


def test_a_tar_source_gives_the_same_entries(local_ray, folder_archive, model_dir, tmp_path) -> None:
    files = tree_files()
    tar = write_tar(tmp_path / "photos.tar", files)  # zip files and chained URLs: see test_ray_sources.py
    dest = str(tmp_path / "tar.zarr")
    report = ray_jobs.bulk_compress(str(tar), dest, model=str(model_dir), items_per_shard=4, progress=False, **FAST)
    assert (report.ok, report.failed, report.shards) == (7, 1, 2)
    archive = check_entries(dest, files)
    reference = storage.open_archive(folder_archive[0])
    for key in GOOD_KEYS:  # the same settings give the same files whatever the batching
        assert archive.read_bytes(key) == reference.read_bytes(key)


def test_rerun_skips_finished_shards_and_other_settings_are_refused(folder_archive, folder, model_dir) -> None:
    dest, _ = folder_archive
    before = storage.open_archive(dest)
    again = ray_jobs.bulk_compress(str(folder), dest, model=str(model_dir), items_per_shard=3, progress=False, **FAST)
    assert (again.skipped, again.encoded, again.shards, again.ok, again.failed) == (8, 0, 0, 7, 1)
    assert storage.open_archive(dest).keys() == before.keys()
    with pytest.raises(storage.JobMismatchError, match=r"params: archive has .*'steps': 3.*this job .*'steps': 4"):
        ray_jobs.bulk_compress(str(folder), dest, model=str(model_dir), progress=False, steps=4, codebook_size=16)
    with pytest.raises(storage.JobMismatchError, match="model: archive has"):
        ray_jobs.bulk_compress(str(folder), dest, progress=False, **FAST)


def test_a_folder_of_small_images_becomes_an_archive_of_restorations(local_ray, model_dir, tmp_path) -> None:
    """restore= in a bulk job (DDCM Sec. 6): every entry holds the 4x restoration, recorded in the job."""
    small = {f"s{i}.png": _png(photo().crop((16 * i, 0, 16 * i + 16, 12))) for i in range(2)}
    folder = write_tree(tmp_path / "small", small)
    dest = str(tmp_path / "restored.zarr")
    report = ray_jobs.bulk_compress(str(folder), dest, model=str(model_dir), restore="sr4", progress=False, **FAST)
    assert (report.ok, report.failed) == (2, 0)
    archive = storage.open_archive(dest)
    for key in small:
        assert pillow_diffcodec.decode(archive.read_bytes(key)).size == (64, 48)
    with pytest.raises(storage.JobMismatchError, match="restore"):
        ray_jobs.bulk_compress(str(folder), dest, model=str(model_dir), restore="colorize", progress=False, **FAST)
    with pytest.raises(pillow_diffcodec.InvalidParameterError, match="cannot restore"):
        ray_jobs.bulk_compress(str(folder), dest, codec="PSC", restore="sr4", progress=False)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_parquet_source_with_a_corrupt_row(local_ray, model_dir, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    files = tree_files()
    images = {key: files[key] for key in IMAGE_KEYS}
    table = pa.table({"name": list(images), "png": list(images.values()), "label": list(range(len(images)))})
    pq.write_table(table, tmp_path / "part-0.parquet", row_group_size=3)
    hf_style = pa.table({"name": ["extra/hf.png"], "png": [{"bytes": files["crops/c0.png"], "path": "c0.png"}],
                         "label": [99]})
    pq.write_table(hf_style, tmp_path / "part-1.parquet")
    dest = str(tmp_path / "parquet.zarr")
    report = ray_jobs.bulk_compress(str(tmp_path), dest, model=str(model_dir), image_column="png", key_column="name",
                                    items_per_shard=2, progress=False, **FAST)
    assert (report.items, report.ok, report.failed) == (9, 8, 1)
    archive = storage.open_archive(dest)
    assert archive.keys() == IMAGE_KEYS + ["extra/hf.png"]
    assert list(archive.failed()) == ["a/broken.png"]
    with pytest.raises(ray_jobs.SourceError, match=r"no column 'image'.*\['name', 'png', 'label'\]"):
        ray_jobs.bulk_compress(str(tmp_path / "part-0.parquet"), str(tmp_path / "x.zarr"), model=str(model_dir),
                               progress=False, **FAST)


def test_read_archive_equals_decoding_one_by_one(folder_archive) -> None:
    dest, _ = folder_archive
    rows = ray_jobs.read_archive(dest).take_all()
    archive = storage.open_archive(dest)
    assert sorted(row["key"] for row in rows) == GOOD_KEYS
    for row in rows:
        expected = pillow_diffcodec.decode(archive.read_bytes(row["key"]))
        assert np.array_equal(row["image"], np.asarray(expected))
        info = archive.info(row["key"])
        assert {name: row[name] for name in ("index", "width", "height", "mode", "bytes", "source_sha256")} == {
            name: info[name] for name in ("index", "width", "height", "mode", "bytes", "source_sha256")
        }


def test_bulk_extract_cli_writes_pngs_in_parallel(folder_archive, tmp_path, capsys) -> None:
    dest, _ = folder_archive
    status = cli_main(["bulk-extract", dest, str(tmp_path / "out"), "-q"])
    captured = capsys.readouterr()
    assert status == 1  # the corrupt source is a failed entry, reported as skipped
    assert "a/broken.png: skipped: OSError" in captured.err
    assert "extracted 7 entries" in captured.out
    archive = storage.open_archive(dest)
    for key in GOOD_KEYS:
        with Image.open(tmp_path / "out" / key) as written:
            assert written.format == "PNG"
            assert np.array_equal(np.asarray(written), np.asarray(pillow_diffcodec.decode(archive.read_bytes(key))))


def test_extract_reports_a_damaged_entry_and_writes_the_others(folder_archive, tmp_path) -> None:
    copy = tmp_path / "damaged.zarr"
    shutil.copytree(folder_archive[0], copy)
    archive = storage.open_archive(str(copy))
    shards = {key: copy / "bitstream" / "c" / str(archive.info(key)["index"] // archive.items_per_shard)
              for key in GOOD_KEYS}
    # tiny images can share a bitstream: damage one whose bytes occur once in its shard object
    victim = next(key for key in GOOD_KEYS if shards[key].read_bytes().count(archive.read_bytes(key)) == 1)
    data, shard = archive.read_bytes(victim), shards[victim]
    stored = shard.read_bytes()
    at = stored.index(data) + len(data) // 2
    shard.write_bytes(stored[:at] + bytes([stored[at] ^ 0xFF]) + stored[at + 1 :])
    report = ray_jobs.extract_archive(str(copy), str(tmp_path / "out"), progress=False)
    assert list(report.errors) == [victim] and victim in report.errors[victim]
    assert sorted(report.written) == sorted(set(GOOD_KEYS) - {victim}) and list(report.skipped) == ["a/broken.png"]


def test_bulk_extract_names_outputs_as_archive_extract_does(local_ray, model_dir, photo, tmp_path) -> None:
    """Both extraction commands share one entry writer: photo.png and photo.jpg are both kept, stored
    files get the codec's extension, and the two commands write the same files."""
    crops = [photo.crop((x, 0, x + 16, 16)) for x in (0, 16, 32)]
    url = str(tmp_path / "a.zarr")
    with storage.open_archive(url, "w", items_per_shard=2) as archive:
        for key, data in zip(["photo.png", "photo.jpg", "dir/cat.jpg"],
                             pillow_diffcodec.encode_batch(crops, model=str(model_dir), **FAST)):
            archive.add(key, data)
    expected = ["dir/cat.ddcm", "photo.jpg.ddcm", "photo.png.ddcm"]
    for format in ("RAW", "DDCM"):
        assert cli_main(["bulk-extract", url, str(tmp_path / format), "--format", format, "-q"]) == 0
        assert sorted(str(p.relative_to(tmp_path / format)) for p in (tmp_path / format).rglob("*.ddcm")) == expected
    ray_jobs.extract_archive(url, str(tmp_path / "ray"), progress=False)
    storage.open_archive(url).extract(str(tmp_path / "local"), progress=False, jobs=2)
    for name in ["dir/cat.png", "photo.jpg.png", "photo.png.png"]:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_bulk_cli_reports_and_refuses_in_one_line(local_ray, folder, model_dir, tmp_path, capsys) -> None:
    dest = str(tmp_path / "cli.zarr")
    arguments = ["bulk", str(folder), dest, "--model", str(model_dir), "--steps", "3", "--codebook-size", "16", "-q"]
    assert cli_main([*arguments, "--json"]) == 1  # one item failed
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert (report["ok"], report["failed"], report["pending"]) == (7, 1, 0)
    assert "1 item(s) failed; list them with: diffcodec archive ls" in captured.err
    assert cli_main([*arguments[:-3], "--steps", "5", "-q"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("diffcodec bulk: ") and "\n" not in error and "Traceback" not in error
    assert "other settings" in error and "'steps': 5" in error
    assert cli_main(["bulk", str(tmp_path / "nothing"), dest, "-q"]) == 2
    assert "No such source" in capsys.readouterr().err


DRIVER = """
import sys, ray_jobs
source, dest, model, address = sys.argv[1:5]
ray_jobs.bulk_compress(source, dest, model=model, ray_address=address, items_per_shard=1, progress=False,
                       steps=8, codebook_size=16)
"""


def test_interrupted_job_resumes_with_every_item_exactly_once(local_ray, model_dir, tmp_path) -> None:
    source = photo()
    files = {}
    for number in range(12):
        buffer = io.BytesIO()
        source.crop((number, number, number + 16, number + 16)).save(buffer, format="PNG")
        files[f"img{number:02d}.png"] = buffer.getvalue()
    folder = write_tree(tmp_path / "src", files)
    dest = str(tmp_path / "resume.zarr")
    driver = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(DRIVER), str(folder), dest, str(model_dir), local_ray],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )
    k = 2
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None:
        try:
            if len(storage.open_archive(dest).complete_shards()) >= k:
                break
        except storage.ArchiveError:
            pass  # not created yet
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)  # Ctrl-C after k shards
    assert driver.wait(timeout=60) != 0, driver.stderr.read()
    interrupted = storage.open_archive(dest)
    done = interrupted.complete_shards()
    assert k <= len(done) < 12 and interrupted.counts()["pending"] == 12 - len(done)
    report = ray_jobs.bulk_compress(str(folder), dest, model=str(model_dir), items_per_shard=1, progress=False,
                                    steps=8, codebook_size=16)
    assert report.skipped == len(done) and report.encoded == 12 - len(done)
    archive = storage.open_archive(dest)
    assert archive.keys() == sorted(files) and len(archive) == 12
    assert archive.counts() == {"ok": 12, "failed": 0, "pending": 0}
    assert archive.verify().ok == 12


def edge_case_files(photo_image: Image.Image) -> dict[str, bytes]:
    """An animated GIF (3 frames), a 1x1 image, a 16-bit greyscale PNG and an ordinary crop."""
    def saved(image: Image.Image, format: str = "PNG", **options: object) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=format, **options)
        return buffer.getvalue()

    frames = [photo_image.crop((8 * n, 0, 8 * n + 16, 16)) for n in range(3)]
    wide = Image.fromarray(np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16))
    return {
        "anim.gif": saved(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "dot.png": saved(photo_image.crop((0, 0, 1, 1))),
        "wide.png": saved(wide),
        "plain.png": saved(photo_image.crop((20, 20, 36, 36))),
    }


def test_frames_warnings_16_bit_and_reports_over_reruns(local_ray, model_dir, tmp_path, monkeypatch) -> None:
    files = edge_case_files(photo())
    write_tree(tmp_path / "src", files)
    monkeypatch.chdir(tmp_path)
    options = dict(model=str(model_dir), quality=50, progress=False)
    report = ray_jobs.bulk_compress("src", "edge.zarr", **options)
    archive = storage.open_archive("edge.zarr")
    assert archive.failed() == {"anim.gif": "UnsupportedImageError: The image has 3 frames (animated or multi-page); "
                                "choose one with frame= (--frame N on the command line), 0 .. 2"}
    assert "RateFallbackWarning" in archive.info("dot.png")["error"] and archive.info("dot.png")["status"] == "ok"
    assert report.warned >= 1 and "RateFallbackWarning" in report.warnings["dot.png"]
    assert archive.info("wide.png")["mode"] == "L"
    assert pillow_diffcodec.decode(archive.read_bytes("wide.png")).info["original_mode"] == "I;16"
    ok = [archive.info(key) for key in ("dot.png", "wide.png", "plain.png")]
    assert report.mean_bpp == pytest.approx(8 * sum(row["bytes"] for row in ok) / (1 + 2 * 256))
    assert report.mean_bpp < np.mean([row["bpp"] for row in ok])  # the 1x1 image does not skew it
    assert report.source == str(tmp_path / "src") and report.dest == str(tmp_path / "edge.zarr")
    again = ray_jobs.bulk_compress("src", "edge.zarr", **options)
    stored = ray_jobs.read_report("edge.zarr")
    assert [run["encoded"] for run in stored["runs"]] == [4, 0] and again.skipped == 4
    assert stored["totals"]["runs"] == 2 and stored["totals"]["bytes_out"] == report.bytes_out
    assert stored["totals"]["mean_bpp"] == pytest.approx(report.mean_bpp)
    chosen = ray_jobs.bulk_compress("src", "frame.zarr", frame=0, **options)  # frame 0 of every image
    assert (chosen.ok, chosen.failed) == (4, 0) and storage.open_archive("frame.zarr").job["params"]["frame"] == 0


def test_the_bar_moves_per_image(local_ray, model_dir, tmp_path, capsys) -> None:
    """One shard of six images, one image per batch: the bar shows counts between 0 and 6 while it runs."""
    source = photo()
    files = {}
    for number in range(6):
        buffer = io.BytesIO()
        source.crop((number, 0, number + 32, 32)).save(buffer, format="PNG")
        files[f"img{number}.png"] = buffer.getvalue()
    write_tree(tmp_path / "src", files)
    ray_jobs.bulk_compress(str(tmp_path / "src"), str(tmp_path / "bar.zarr"), model=str(model_dir), batch_size=1,
                           items_per_shard=6, num_workers=1, steps=12, codebook_size=16)
    shown = capsys.readouterr().err
    assert "6/6" in shown and any(f" {done}/6 " in shown for done in range(1, 6)), shown


def test_an_fldc_bulk_job_writes_files_that_decode_to_the_encoders_reconstruction(local_ray, tmp_path) -> None:
    from .test_fldc import tiny_fldc_folder

    model = tiny_fldc_folder(tmp_path / "fldc")
    source = tmp_path / "photos"
    source.mkdir()
    for i in range(3):
        photo().crop((8 * i, 0, 8 * i + 40, 32)).save(source / f"p{i}.png")
    dest = str(tmp_path / "fldc.zarr")
    report = ray_jobs.bulk_compress(str(source), dest, codec="FLDC", model=str(model), lam=16.0, items_per_shard=2,
                                    progress=False)
    assert (report.ok, report.failed) == (3, 0)
    archive = storage.open_archive(dest)
    for i in range(3):
        data = archive.read_bytes(f"p{i}.png")
        assert pillow_diffcodec.info(data)["codec"] == "FLDC"
        with Image.open(source / f"p{i}.png") as original:
            direct = pillow_diffcodec.encode(original, codec="FLDC", model=str(model), lam=16.0)
        assert data == direct  # the same settings give the same file in a Ray worker
