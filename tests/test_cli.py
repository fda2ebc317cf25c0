"""The real ``diffcodec`` console script, run in subprocesses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

SCRIPT = shutil.which("diffcodec", path=str(Path(sys.executable).parent)) or "diffcodec"


def run(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture()
def pictures(tmp_path, photo) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    photo.save(folder / "a.png")
    photo.rotate(180).save(folder / "b.png")
    photo.convert("L").save(folder / "c.jpg")
    return folder


def test_encode_decode_info_round_trip(tmp_path, pictures, model_dir) -> None:
    out = tmp_path / "out"
    result = run("encode", str(pictures / "*.png"), str(pictures / "c.jpg"), "-o", f"{out}/",
                 "--model", str(model_dir), "--steps", "3", "--codebook-size", "16")
    assert sorted(p.name for p in out.iterdir()) == ["a.ddcm", "b.ddcm", "c.ddcm"]
    assert "encoded 3 file(s), 0 failed" in result.stdout and "mean" in result.stdout and "bpp" in result.stdout
    assert "[3/3]" in result.stderr
    decoded = run("decode", str(out / "*.ddcm"), "-o", str(tmp_path / "png"))
    assert "decoded 3 file(s), 0 failed" in decoded.stdout
    with Image.open(tmp_path / "png" / "c.png") as image:
        assert image.mode == "L" and image.size == (64, 48)
    meta = json.loads(run("info", str(out / "a.ddcm"), "--json").stdout)
    assert meta["codec"] == "DDCM" and meta["params"]["steps"] == 3 and meta["model"] == str(model_dir)


def test_single_file_output_and_python_module(tmp_path, pictures, model_dir) -> None:
    target = tmp_path / "single.ddcm"
    subprocess.run([sys.executable, "-m", "pillow_diffcodec", "encode", str(pictures / "a.png"), "-o", str(target),
                    "--model", str(model_dir), "--bpp", "2.0", "--steps", "3"], check=True, capture_output=True)
    meta = json.loads(run("info", str(target), "--json").stdout)
    assert meta["bpp"] <= 2.0


def test_one_failure_does_not_stop_the_others(tmp_path, pictures, model_dir) -> None:
    (pictures / "broken.png").write_bytes(b"not an image")
    result = run("encode", str(pictures / "*.png"), "-o", str(tmp_path / "out"), "--model", str(model_dir),
                 "--steps", "2", "--codebook-size", "4", check=False)
    assert result.returncode == 1
    assert "broken.png: FAILED" in result.stderr
    assert "encoded 2 file(s), 1 failed" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.ddcm", "b.ddcm"]


def test_bad_files_and_usage_errors(tmp_path) -> None:
    bad = tmp_path / "bad.ddcm"
    bad.write_bytes(b"\x89DFC\x01\x01\x03\x00garbage")
    result = run("info", str(bad), check=False)
    assert result.returncode == 1 and ("CRC" in result.stderr or "truncated" in result.stderr)
    assert run("encode", check=False).returncode == 2


def test_models_lists_what_is_available() -> None:
    rows = json.loads(run("models", "--json").stdout)
    names = [row["name"] for row in rows]
    assert names[0] == "builtin" and "google/ddpm-cifar10-32" in names
    assert "google/ddpm-cifar10-32" in run("models").stdout


def test_a_closed_stdout_ends_quietly(tmp_path) -> None:
    """``diffcodec archive ls URL | head -1``: the reader goes away; no "Broken pipe", no traceback, status 141."""
    import storage

    url = str(tmp_path / "failed.zarr")
    with storage.open_archive(url, "w") as archive:
        for number in range(200):
            archive.add(f"item{number:03d}.png", b"not an image")  # failed entries: no model needed
    reader = subprocess.Popen([SCRIPT, "archive", "ls", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader.stdout.close()  # before the command writes its first line
    error = reader.stderr.read().decode()
    assert reader.wait(timeout=120) == 141, error
    assert error == ""
