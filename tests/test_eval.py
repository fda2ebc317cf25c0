"""``diffcodec eval``: metrics against hand-checked values, baselines at equal rate, BD-rate, plots, and
resumable runs over a dataset with a corrupt image (tiny real model, real Pillow codecs)."""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pillow_diffcodec.cli import main
from pillow_diffcodec.evaluation import metrics
from pillow_diffcodec.evaluation.baselines import BASELINES, baseline_by_name, encode_at_bpp
from pillow_diffcodec.evaluation.bdrate import bd_rate
from pillow_diffcodec.evaluation.report import plot, write_report
from pillow_diffcodec.evaluation.runner import EvaluationError, evaluate, load_results
from pillow_diffcodec.evaluation.table import EvalTable, Row

from .conftest import DATA, FAST

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def noisy(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(30, 220, size[0])[None, :, None] * np.ones((size[1], 1, 3))
    return Image.fromarray(np.clip(ramp + rng.normal(0, 12, ramp.shape), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def photo128() -> Image.Image:
    with Image.open(DATA / "kodim23_crop.png") as image:
        return image.convert("RGB").resize((128, 96), Image.BICUBIC)


def test_psnr_of_known_noise():
    flat = np.full((32, 48, 3), 128, dtype=np.uint8)
    signs = np.where(np.indices((32, 48)).sum(axis=0) % 2 == 0, 5, -5)[:, :, None]  # +-5 everywhere: MSE 25
    noisy_image = Image.fromarray((flat.astype(int) + signs).astype(np.uint8))
    assert metrics.psnr(Image.fromarray(flat), noisy_image) == pytest.approx(10 * math.log10(255**2 / 25))  # 34.15 dB
    assert metrics.psnr(noisy_image, noisy_image) == math.inf
    with pytest.raises(ValueError, match="differ in size"):
        metrics.psnr(noisy_image, noisy_image.resize((48, 48)))


def test_stripe_ratio_sees_a_one_pixel_stripe_that_psnr_barely_sees():
    """Issue 27's metric: +-3 levels on alternating columns (PSNR 38.6 dB, which looks harmless) is a
    ratio in the hundreds along columns and none along rows, on a smooth image with fine grain."""
    photo = (128 + np.random.default_rng(0).normal(0, 3, size=(64, 96, 3))).round().astype(np.uint8)
    original = Image.fromarray(photo)
    striped = photo.astype(int)
    striped[:, 0::2] += 3
    striped[:, 1::2] -= 3
    decoded = Image.fromarray(striped.clip(0, 255).astype(np.uint8))
    ratios = metrics.stripe_ratios(original, decoded)
    assert ratios["columns"] > 100 and ratios["rows"] == pytest.approx(1.0, abs=0.05)
    assert metrics.stripe_ratios(original, original) == {"columns": 1.0, "rows": 1.0}
    with pytest.raises(ValueError, match="axis"):
        metrics.alternation_energy(original, "diagonal")


def test_ms_ssim_identical_is_one_and_drops_with_noise():
    image = noisy(3, (192, 176))
    assert metrics.ms_ssim(image, image) == pytest.approx(1.0, abs=1e-6)
    blurred = Image.fromarray(
        np.clip(np.asarray(image, dtype=int) + np.random.default_rng(0).normal(0, 40, (176, 192, 3)), 0, 255).astype(
            np.uint8
        )
    )
    assert 0 < metrics.ms_ssim(image, blurred) < 0.95
    small = noisy(4)  # 64 px: pytorch-msssim's 5 scales need a smaller window
    assert metrics.ms_ssim_window(64, 64) == 3 and metrics.ms_ssim_window(768, 512) == 11
    assert metrics.ms_ssim(small, small) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="larger than 32 px"):
        metrics.ms_ssim_window(32, 100)


@pytest.mark.parametrize("name", list(BASELINES))
def test_baseline_hits_target_bpp_within_5_percent(name, photo128):
    baseline = baseline_by_name(name)
    if not baseline.available():
        pytest.skip(f"{baseline.name} not available here ({baseline.requirement})")
    for target in (0.6, 1.2, 2.0):
        result = encode_at_bpp(photo128, baseline, target)
        assert result.reached
        assert abs(result.bpp - target) / target < 0.05, (target, result.bpp, result.quality)
        assert result.reconstruction.size == photo128.size
        assert metrics.psnr(photo128, result.reconstruction) > 15
    floor = encode_at_bpp(photo128, baseline, 0.01)  # below the lowest quality: its floor, flagged
    assert not floor.reached and floor.quality == baseline.min_quality and floor.bpp > 0.01


def test_unknown_baseline_lists_the_known_ones():
    with pytest.raises(ValueError, match="jpeg, webp, avif, jxl"):
        baseline_by_name("bpg")


def test_bd_rate_of_a_codec_against_itself_is_zero():
    rates, psnrs = [0.1, 0.2, 0.4, 0.8], [24.0, 27.0, 30.5, 33.0]
    assert bd_rate(rates, psnrs, rates, psnrs) == pytest.approx(0.0, abs=1e-9)
    halved = [r / 2 for r in rates]  # same quality at half the bits everywhere: -50 %
    assert bd_rate(rates, psnrs, halved, psnrs) == pytest.approx(-50.0, abs=1e-6)
    assert math.isnan(bd_rate(rates, psnrs, rates, [p + 20 for p in psnrs]))  # no overlap in quality


def _table() -> EvalTable:
    rows = []
    for codec, offset in (("DDCM", 0.0), ("JPEG", 2.0)):
        for point, bpp in (("bpp=0.1", 0.1), ("bpp=0.3", 0.3), ("bpp=0.9", 0.9)):
            rows.append(
                Row(
                    "a.png",
                    codec,
                    point,
                    bpp,
                    bpp,
                    20 + offset + 5 * bpp,
                    0.7 + 0.2 * bpp,
                    1.0,
                    0.5,
                    "{}",
                    width=64,
                    height=64,
                )
            )
    return EvalTable(rows=rows, codecs=["DDCM", "JPEG"], points=["bpp=0.1", "bpp=0.3", "bpp=0.9"])


def test_plot_is_a_valid_png(tmp_path):
    path = plot(_table(), "psnr", tmp_path / "rd.png")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300
    written = {p.name for p in write_report(_table(), tmp_path / "report")}
    assert {
        "per_image.csv",
        "per_image.json",
        "per_point.csv",
        "per_point.json",
        "bd_rate.csv",
        "rd_psnr.png",
        "rd_ms_ssim.png",
    } <= written
    assert "| DDCM | bpp=0.1 | 1 | 0.1000 | 20.50 |" in (tmp_path / "report" / "summary.md").read_text()
    bd = {r["codec"]: r for r in json.loads((tmp_path / "report" / "bd_rate.json").read_text())}
    assert bd["JPEG"]["bd_rate_psnr"] == pytest.approx(0.0, abs=1e-9)
    assert bd["DDCM"]["bd_rate_psnr"] > 0  # 2 dB below JPEG at every rate: more bits for the same PSNR


@pytest.fixture(scope="module")
def first_run(model_dir, tmp_path_factory):
    """One evaluation of a.png, broken.png, b.png (DDCM at 0.5 bpp and JPEG), shared by the tests below."""
    folder = tmp_path_factory.mktemp("eval")
    dataset = folder / "images"
    dataset.mkdir()
    noisy(1).save(dataset / "a.png")
    noisy(2).save(dataset / "b.png")
    (dataset / "broken.png").write_bytes(PNG_MAGIC + b"\x00\x00\x00\x0dIHDR truncated")
    log = io.StringIO()
    new: list[Row] = []
    options = {"model": str(model_dir), "bpp": [0.5], "params": FAST, "baselines": ["jpeg"], "out": folder / "results"}
    options.update(progress=False, log=log)
    table = evaluate(dataset, on_row=new.append, **options)
    return dataset, options, table, new, log.getvalue()


def test_evaluate_reports_corrupt_image_and_rerun_reuses_rows(first_run):
    dataset, options, table, new, log = first_run
    out = options["out"]
    assert [f.image for f in table.failures] == ["broken.png"]
    assert "broken.png: cannot read image" in log
    model = options["model"]
    assert sorted(r.key for r in table.rows) == [
        ("a.png", "DDCM", model, "bpp=0.5"),
        ("a.png", "JPEG", "", "bpp=0.5"),
        ("b.png", "DDCM", model, "bpp=0.5"),
        ("b.png", "JPEG", "", "bpp=0.5"),
    ]
    assert len(new) == 4
    for row in table.rows:
        assert row.bpp > 0 and row.psnr > 0 and 0 < row.ms_ssim <= 1 and row.encode_s >= 0 and row.decode_s >= 0
        assert row.stripes_columns is not None and row.stripes_columns >= 0 and row.stripes_rows is not None
        if row.codec == "DDCM":
            assert row.bpp <= 0.5 and json.loads(row.setting)["steps"] == FAST["steps"]
        else:  # the baseline at the DDCM file's rate (or its floor)
            ddcm = next(r for r in table.rows if r.image == row.image and r.codec == "DDCM")
            assert row.target_bpp == ddcm.bpp
    assert len((out / "rows.jsonl").read_text().splitlines()) == 4

    again: list[Row] = []
    rerun = evaluate(dataset, on_row=again.append, **options)
    assert again == [] and len((out / "rows.jsonl").read_text().splitlines()) == 4
    assert {r.key: r for r in rerun.rows} == {r.key: r for r in table.rows}  # reused as they were
    assert [f.image for f in rerun.failures] == ["broken.png"]

    assert {r.key for r in load_results(out).rows} == {r.key for r in table.rows}  # reports from the journal alone
    with pytest.raises(EvaluationError, match="other settings"):
        evaluate(dataset, **{**options, "params": dict(FAST, steps=4)})


def test_cli_eval_writes_reports_and_reports_corrupt_image(first_run, model_dir, tmp_path, capsys):
    dataset, options, _, _, _ = first_run
    out = tmp_path / "cli"
    shutil.copytree(options["out"], out)  # the CLI's settings match: its rows are reused, nothing is encoded
    journal = (out / "rows.jsonl").read_text()
    argv = ["eval", str(dataset), "--model", str(model_dir), "--bpp", "0.5", "--out", str(out), "--no-progress"]
    argv += ["--param", f"steps={FAST['steps']}", "--param", f"codebook_size={FAST['codebook_size']}"]
    assert main([*argv, "--baselines", "jpeg"]) == 1  # broken.png: reported in one line, the run goes on
    printed = capsys.readouterr()
    assert "broken.png: cannot read image" in printed.err and "Traceback" not in printed.err
    assert "DDCM     bpp=0.5" in printed.out and "JPEG     bpp=0.5" in printed.out and "BD-rate" in printed.out
    assert (out / "rows.jsonl").read_text() == journal
    assert (out / "rd_psnr.png").read_bytes().startswith(PNG_MAGIC)
    assert (out / "rd_ms_ssim.png").read_bytes().startswith(PNG_MAGIC)
    per_image = (out / "per_image.csv").read_text().splitlines()
    assert per_image[0].startswith("image,codec,point,target_bpp,bpp,psnr,ms_ssim,encode_s,decode_s")
    assert len(per_image) == 5
    assert [f["image"] for f in json.loads((out / "failures.json").read_text())] == ["broken.png"]

    assert main([*argv, "--baselines", "jpeg", "--limit", "1"]) == 0  # a.png only
    capsys.readouterr()
    assert main([*argv, "--param", "stepz=3"]) == 2
    assert "Unknown DDCM parameter 'stepz'" in capsys.readouterr().err
    assert main([*argv, "--baselines", "bpg"]) == 2
    assert "Unknown baseline 'bpg'" in capsys.readouterr().err
    assert main([*argv[:-4], "--param", "steps=4"]) == 2  # other settings than the results in --out
    assert "other settings" in capsys.readouterr().err


def test_registering_eval_imports_nothing_heavy():
    code = (
        "import sys, argparse, pillow_diffcodec, pillow_diffcodec.evaluation.cli as c; "
        "c.register(argparse.ArgumentParser().add_subparsers()); "
        "print(sorted(m for m in ('matplotlib', 'torch', 'pytorch_msssim', 'bjontegaard') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_dataset_from_fsspec_url_and_glob():
    import fsspec

    from pillow_diffcodec.evaluation.runner import _points, list_images

    fs = fsspec.filesystem("memory")
    if fs.exists("/set"):
        fs.rm("/set", recursive=True)
    for name in ("set/x/one.png", "set/two.jpg", "set/notes.txt"):
        with fs.open(name, "wb") as handle:
            if name.endswith(".txt"):
                handle.write(b"not an image")
            else:
                noisy(0, (40, 40)).save(handle, format="JPEG" if name.endswith(".jpg") else "PNG")
    assert [i.name for i in list_images("memory://set")] == ["two.jpg", "x/one.png"]
    assert [i.name for i in list_images("memory://set/*.jpg")] == ["two.jpg"]
    with pytest.raises(EvaluationError, match="No images"):
        list_images("memory://set/*.webp")
    assert _points(None, [20, 60]) == [("quality=20", {"quality": 20.0}), ("quality=60", {"quality": 60.0})]
    with pytest.raises(EvaluationError, match="not both"):
        _points([0.1], [20])
    with pytest.raises(EvaluationError, match="> 0"):
        _points([0.0], None)
