"""The CLI under hostile and careless input: one line per failed file, the others still run, nothing lost."""

from __future__ import annotations

import random
import signal
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from PIL import Image

import pillow_diffcodec as pdc

from .test_cli import SCRIPT, run
from .test_fuzz import mutate
from .test_limits import header_only

FAST_FLAGS = ("--steps", "2", "--codebook-size", "4")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width x height`` with no pixel data: Pillow refuses it as a bomb at open."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def assert_clean(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr + result.stdout


@pytest.fixture()
def folder(tmp_path, photo) -> Path:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    photo.save(tmp_path / "a" / "x.png")
    photo.convert("L").save(tmp_path / "b" / "x.jpg")
    return tmp_path


def test_a_bomb_among_good_files_fails_alone(folder, model_dir) -> None:
    (folder / "bomb.png").write_bytes(png_header_only(40000, 40000))
    result = run("encode", str(folder / "bomb.png"), str(folder / "a" / "x.png"), "-o", str(folder / "out"),
                 "--model", str(model_dir), *FAST_FLAGS, check=False)
    assert_clean(result)
    assert result.returncode == 1 and "encoded 1 file(s), 1 failed" in result.stdout
    failures = [line for line in result.stderr.splitlines() if "FAILED" in line]
    assert len(failures) == 1
    assert failures[0].startswith(f"[1/2] {folder / 'bomb.png'}: FAILED: refused as a decompression bomb: Image size")
    assert sorted(p.relative_to(folder / "out").as_posix() for p in (folder / "out").rglob("*.ddcm")) == ["a/x.ddcm"]
    (folder / "big.ddcm").write_bytes(header_only(1 << 24, 1 << 24, 1))
    decoded = run("decode", str(folder / "big.ddcm"), str(folder / "out" / "a" / "x.ddcm"), "-o", str(folder / "png"),
                  check=False)
    assert_clean(decoded)
    assert decoded.returncode == 1 and "decoded 1 file(s), 1 failed" in decoded.stdout
    assert "big.ddcm: FAILED: Image size 16777216x16777216" in decoded.stderr


def test_two_inputs_with_one_name_keep_their_folders(folder, model_dir) -> None:
    result = run("encode", str(folder / "a" / "x.png"), str(folder / "b" / "x.jpg"), "-o", str(folder / "out"),
                 "--model", str(model_dir), *FAST_FLAGS)
    assert "encoded 2 file(s), 0 failed" in result.stdout
    assert sorted(p.relative_to(folder / "out").as_posix() for p in (folder / "out").rglob("*")) == [
        "a", "a/x.ddcm", "b", "b/x.ddcm"]


def test_outputs_never_escape_the_output_folder(folder, model_dir) -> None:
    """``encode x.png ../b/x.jpg -o enc/`` run inside ``a/``: both outputs inside ``enc/``, and so for decode."""
    def run_in(cwd: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([SCRIPT, *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=300)

    before = {p for p in folder.rglob("*")}
    run_in(folder / "a", "encode", "x.png", "../b/x.jpg", "-o", "enc/", "--model", str(model_dir), *FAST_FLAGS)
    run_in(folder / "a" / "enc", "decode", "a/x.ddcm", "../enc/b/x.ddcm", "-o", "../png/")
    made = sorted(p.relative_to(folder).as_posix() for p in set(folder.rglob("*")) - before if p.is_file())
    assert made == ["a/enc/a/x.ddcm", "a/enc/b/x.ddcm", "a/png/a/x.png", "a/png/b/x.png"]


def test_two_inputs_for_one_output_are_refused_before_encoding(folder, model_dir, photo) -> None:
    photo.save(folder / "a" / "x.jpg")
    result = run("encode", str(folder / "a" / "x.png"), str(folder / "a" / "x.jpg"), "-o", str(folder / "out"),
                 "--model", str(model_dir), *FAST_FLAGS, check=False)
    assert_clean(result)
    assert result.returncode == 2 and "would both be written to" in result.stderr
    assert not (folder / "out").exists()


def test_existing_outputs_need_overwrite(folder, model_dir) -> None:
    target = folder / "one.ddcm"
    target.write_bytes(b"earlier run")
    args = ("encode", str(folder / "a" / "x.png"), "-o", str(target), "--model", str(model_dir), *FAST_FLAGS)
    refused = run(*args, check=False)
    assert refused.returncode == 1 and "already exists (pass --overwrite" in refused.stderr
    assert target.read_bytes() == b"earlier run"
    run(*args, "--overwrite")
    assert pdc.info(target.read_bytes())["codec"] == "DDCM"


def test_wrong_kinds_of_input_say_what_they_are(folder, model_dir, photo) -> None:
    photo.save(folder / "renamed.ddcm", format="PNG")
    frames = [photo, photo.rotate(90)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    (folder / "empty.png").write_bytes(b"")
    (folder / "noise.png").write_bytes(random.Random(0).randbytes(500))
    decoded = run("decode", str(folder / "renamed.ddcm"), "-o", str(folder / "d") + "/", check=False)
    assert decoded.returncode == 1 and "renamed.ddcm: FAILED: is a PNG file, not a diffcodec file" in decoded.stderr
    assert not (folder / "d").exists()
    run("decode", str(folder / "renamed.ddcm"), "-o", str(folder / "d") + "/", "--allow-foreign")
    assert (folder / "d" / "renamed.png").is_file()
    encoded = run("encode", str(folder / "anim.gif"), str(folder / "empty.png"), str(folder / "noise.png"),
                  str(folder / "nothing*.png"), "-o", str(folder / "out"), "--model", str(model_dir), *FAST_FLAGS,
                  check=False)
    assert_clean(encoded)
    lines = encoded.stderr.splitlines()
    assert any("anim.gif: FAILED: The image has 2 frames (animated or multi-page); choose one with frame= "
               "(--frame N" in line for line in lines)
    assert any(f"{folder / 'empty.png'}: FAILED: an empty file" in line for line in lines)
    assert any(f"{folder / 'noise.png'}: FAILED: not an image Pillow can read (500 bytes)" in line for line in lines)
    assert f"{folder / 'nothing*.png'}: FAILED: no file matches" in lines
    assert not (folder / "out").exists()
    run("encode", str(folder / "anim.gif"), "--frame", "1", "-o", str(folder / "anim.ddcm"), "--model",
        str(model_dir), *FAST_FLAGS)
    assert (folder / "anim.ddcm").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (("decode", "x.ddcm", "-o", "out", "--format", "BOGUS"), "Unknown output format 'BOGUS'; Pillow here"),
        (("encode", "x.png", "-o", "out", "--device", "banana"), "Expected a torch device such as 'cpu'"),
        (("encode", "x.png", "-o", "out", "--device", "cuda:7"), "cuda"),
    ],
)
def test_usage_errors_are_one_line(args, message) -> None:
    result = run(*args, check=False)
    assert_clean(result)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_progress_lines_and_api_callback(tmp_path, model_dir, photo) -> None:
    calls: list[tuple[int, int]] = []
    pdc.encode(photo, model=str(model_dir), steps=3, codebook_size=4, progress=lambda n, t: calls.append((n, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    photo.save(tmp_path / "p.png")
    result = run("encode", str(tmp_path / "p.png"), "-o", str(tmp_path / "p.ddcm"), "--model", str(model_dir),
                 "--steps", "3", "--codebook-size", "4", "--progress", "lines")
    assert [line.split(",")[0] for line in result.stderr.splitlines() if " step " in line] == [
        f"[1/1] {tmp_path / 'p.png'} step {n}/3" for n in (1, 2, 3)]


def test_ctrl_c_leaves_no_partial_file_and_no_traceback(tmp_path, model_dir) -> None:
    Image.effect_noise((512, 512), 50).convert("RGB").save(tmp_path / "big.png")
    process = subprocess.Popen(
        [SCRIPT, "encode", str(tmp_path / "big.png"), "-o", str(tmp_path / "out") + "/", "--model", str(model_dir),
         "--steps", "200", "--codebook-size", "4", "--progress", "lines"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:  # wait until encoding is under way
        if " step " in line:
            break
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr + stdout
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cli_fuzz_over_hundreds_of_mutated_files(tmp_path, model_dir, photo) -> None:
    """Mutated files in one run: exit 1, one FAILED line per bad file, no traceback, no output for failures."""
    small = photo.crop((0, 0, 24, 16))
    seeds = [pdc.encode(small, model=str(model_dir), steps=3, codebook_size=k, atoms=m, selection=s, tile=t)
             for k, m, s, t in [(16, 1, "mp", 0), (64, 3, "topm", 8), (32, 2, "mp", 16)]]
    rng = random.Random(7)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(300):
        kinds = ["flip", "set", "truncate", "insert", "delete"]
        mutations = [(rng.choice(kinds), rng.randrange(10**6), rng.randrange(8)) for _ in range(rng.randint(1, 3))]
        (inputs / f"f{i:03d}.ddcm").write_bytes(mutate(rng.choice(seeds), mutations, fix_crc=rng.random() < 0.5))
    result = run("decode", str(inputs), "-o", str(tmp_path / "out"), check=False, timeout=900)
    assert_clean(result)
    failed = {line.split("]")[1].split(":")[0].strip() for line in result.stderr.splitlines() if ": FAILED: " in line}
    written = {p.stem for p in (tmp_path / "out").glob("*.png")} if (tmp_path / "out").exists() else set()
    assert result.returncode == 1 and len(failed) > 250
    assert len(failed) + len(written) == 300 and not {Path(f).stem for f in failed} & written
    assert f"decoded {len(written)} file(s), {len(failed)} failed" in result.stdout
    assert all(line.startswith("[") for line in result.stderr.splitlines())
