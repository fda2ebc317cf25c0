"""``diffcodec archive info|ls|verify|extract``: through an argparse parser built here with the registered
commands, and once through the installed console script."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import storage
from storage.cli import register

from .test_archive import crops, encoded  # noqa: F401  (fixtures)


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="diffcodec")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["archive", *argv])
    return args.run(args)


@pytest.fixture()
def archive_url(tmp_path, encoded) -> str:
    url = str(tmp_path / "a.zarr")
    with storage.open_archive(url, "w", items_per_shard=2, job={"codec": "DDCM", "source": "test"}) as archive:
        for number in range(3):
            archive.add(f"photos/p{number}.jpg", encoded[number])
        archive.add("photos/broken.jpg", b"not an image")
    return url


def test_info_and_ls(archive_url, capsys) -> None:
    assert run("info", archive_url, "--json") == 1  # one entry failed
    summary = json.loads(capsys.readouterr().out)
    assert summary["entries"] == 4 and summary["ok"] == 3 and summary["failed"] == 1
    assert summary["job"] == {"codec": "DDCM", "source": "test"} and summary["format_version"] == 1
    assert run("ls", archive_url) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and "16x16 RGB" in lines[0] and lines[0].endswith("photos/p0.jpg")
    assert "failed" in lines[3] and "UnidentifiedImageError" in lines[3]
    assert run("ls", archive_url, "--status", "ok", "--json") == 0
    assert [json.loads(line)["key"] for line in capsys.readouterr().out.splitlines()] == [
        "photos/p0.jpg",
        "photos/p1.jpg",
        "photos/p2.jpg",
    ]


def test_ls_shows_the_warning_an_entry_was_encoded_with(tmp_path, encoded, capsys) -> None:
    url = str(tmp_path / "w.zarr")
    with storage.open_archive(url, "w") as archive:
        archive.add("tiny.png", storage.Entry.ok("tiny.png", encoded[0], warning="RateFallbackWarning: smallest file"))
    assert run("ls", url) == 0
    assert capsys.readouterr().out.rstrip().endswith("tiny.png  warning: RateFallbackWarning: smallest file")


def test_a_damaged_root_points_to_archive_repair(archive_url, capsys) -> None:
    root = Path(archive_url) / "zarr.json"
    root.write_bytes(root.read_bytes()[:100])
    assert run("ls", archive_url) == 1
    error = capsys.readouterr().err
    assert "diffcodec archive repair" in error and error.count("\n") == 1


def test_verify_reports_each_damaged_entry_on_one_line(archive_url, encoded, capsys) -> None:
    shard = Path(archive_url) / "bitstream" / "c" / "0"
    blob = bytearray(shard.read_bytes())
    blob[blob.find(encoded[1]) + 20] ^= 1
    shard.write_bytes(bytes(blob))
    assert run("verify", archive_url, "--sample", "1") == 1
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    assert len(errors) == 2 and errors[0].startswith("photos/p1.jpg: Entry 'photos/p1.jpg'") and "CRC" in errors[0]
    assert errors[1].startswith("photos/broken.jpg: failed when written")
    assert "4 entries, 2 ok, 1 failed when written, 0 pending, 1 corrupt; decoded 1" in captured.out


def test_extract_goes_on_past_failures(archive_url, tmp_path, capsys) -> None:
    destination = tmp_path / "out"
    assert run("extract", archive_url, str(destination), "--quiet") == 1
    assert sorted(p.name for p in (destination / "photos").iterdir()) == ["p0.png", "p1.png", "p2.png"]
    captured = capsys.readouterr()
    assert "extracted 3 of 4 entries" in captured.out and "photos/broken.jpg: skipped" in captured.err
    assert run("extract", archive_url, str(tmp_path / "raw"), "--format", "ddcm", "--quiet") == 1
    assert (tmp_path / "raw" / "photos" / "p0.ddcm").exists()


def test_errors_are_one_line_without_traceback(tmp_path, capsys) -> None:
    assert run("info", str(tmp_path / "missing.zarr")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No archive at" in err and "Traceback" not in err
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "zarr.json").write_text("{not json")
    assert run("verify", str(tmp_path / "plain")) == 1
    assert "not a zarr v3 group" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run("ls", "x", "-o", "no-equals-sign")


def test_console_script(archive_url) -> None:
    script = shutil.which("diffcodec", path=str(Path(sys.executable).parent))
    assert script is not None
    help_text = subprocess.run([script, "archive", "--help"], capture_output=True, text=True, timeout=120)
    assert help_text.returncode == 0 and all(c in help_text.stdout for c in ("info", "ls", "verify", "extract"))
    listing = subprocess.run(
        [script, "archive", "ls", archive_url, "--status", "failed"], capture_output=True, text=True, timeout=120
    )
    assert listing.returncode == 1 and "photos/broken.jpg" in listing.stdout and listing.stderr == ""
