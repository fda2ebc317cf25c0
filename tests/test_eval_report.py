"""``diffcodec eval`` with several codecs in one run (tiny real DDCM, PSC and CDC models), the weight-free
metrics (VIF-p, GMSD, HaarPSI), the HTML report and the suites."""

from __future__ import annotations

import html.parser
import io
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pillow_diffcodec.cli import main
from pillow_diffcodec.evaluation import metrics
from pillow_diffcodec.evaluation.report import write_report
from pillow_diffcodec.evaluation.runner import EvaluationError, contenders, evaluate
from pillow_diffcodec.evaluation.suites import SAMPLE, SUITES
from pillow_diffcodec.evaluation.table import Row

from .conftest import DATA, FAST
from .test_cdc import tiny_cdc_folder
from .test_eval import noisy

TINY_PSC = dict(iterations=1, samples=2, rows=1, ddrm_steps=1, final_steps=1, final_sampler="ddrm")


def degraded(image: Image.Image, sigma: float, seed: int = 0) -> Image.Image:
    """``image`` with Gaussian noise of ``sigma`` levels (clipped)."""
    array = np.asarray(image, dtype=float)
    noise = np.random.default_rng(seed).normal(0, sigma, array.shape)
    return Image.fromarray(np.clip(array + noise, 0, 255).astype(np.uint8), image.mode)


@pytest.fixture(scope="module")
def photo97() -> Image.Image:
    with Image.open(DATA / "kodim23_crop.png") as image:
        return image.convert("RGB").resize((97, 75), Image.BICUBIC)


@pytest.mark.parametrize(
    ("metric", "identical", "worse"), [("vif", 1.0, "lower"), ("gmsd", 0.0, "higher"), ("haarpsi", 1.0, "lower")]
)
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_weight_free_metrics_known_values_and_direction(photo97, metric, identical, worse, mode):
    measure = getattr(metrics, metric)
    original = photo97.convert(mode)
    assert measure(original, original) == pytest.approx(identical, abs=1e-7)
    light, heavy = measure(original, degraded(original, 8)), measure(original, degraded(original, 30))
    if worse == "lower":
        assert identical > light > heavy
    else:
        assert identical < light < heavy


def test_vif_equals_an_independent_implementation(photo97):
    """VIF-p of this pair as piq 0.8.0 computes it (``piq.vif_p(..., data_range=255)``, run once elsewhere: piq
    is not importable beside this project's torch): the two implementations of Sheikh & Bovik's pixel-domain
    definition agree. (GMSD and HaarPSI differ from piq's on odd sides, which piq zero-pads before halving.)"""
    noisy_photo = Image.fromarray(
        np.clip(np.asarray(photo97, dtype=float) + np.random.default_rng(0).normal(0, 15, (75, 97, 3)), 0, 255).astype(
            np.uint8
        )
    )
    assert metrics.vif(photo97, noisy_photo) == pytest.approx(0.46401100, abs=2e-6)
    with pytest.raises(ValueError, match="at least 41 px"):
        metrics.vif(photo97.resize((40, 60)), photo97.resize((40, 60)))


def test_contenders_name_codecs_models_and_params(model_dir):
    runs = contenders("DDCM,PSC", {"DDCM": ["builtin", str(model_dir)]}, {"steps": 3}, {"PSC": {"iterations": 2}})
    assert [(r.label, r.reference) for r in runs] == [
        ("DDCM:builtin", "builtin"),
        ("DDCM:tiny-ddpm", str(model_dir)),
        ("PSC", "builtin"),
    ]
    assert runs[0].params == {"steps": 3} and runs[2].params == {"iterations": 2}  # PSC has no 'steps'
    with pytest.raises(EvaluationError, match="per codec"):
        contenders(["DDCM", "CDC"], "builtin")
    with pytest.raises(EvaluationError, match="does not code"):
        contenders("DDCM", {"CDC": "builtin-cdc"})
    with pytest.raises(Exception, match="Unknown DDCM/CDC parameter 'stepz'"):
        contenders("DDCM,CDC", None, {"stepz": 3})


@pytest.fixture(scope="module")
def multi_run(model_dir, tmp_path_factory):
    """DDCM, PSC (tiny diffusion model) and CDC (tiny CDC folder) on two 64x64 images, with JPEG and WebP."""
    folder = tmp_path_factory.mktemp("multi")
    dataset = folder / "images"
    dataset.mkdir()
    noisy(1).save(dataset / "a.png")
    noisy(2).convert("L").save(dataset / "grey.png")
    cdc = tiny_cdc_folder(folder / "tiny-cdc").resolve()
    options = {
        "codec": ["DDCM", "PSC", "CDC"],
        "model": {"DDCM": str(model_dir), "PSC": str(model_dir), "CDC": str(cdc)},
        "quality": [50],
        "codec_params": {"DDCM": FAST, "PSC": TINY_PSC},
        "baselines": ["jpeg", "webp"],
        "out": folder / "results",
        "progress": False,
        "log": io.StringIO(),
    }
    new: list[Row] = []
    table = evaluate(dataset, on_row=new.append, **options)
    written = write_report(table, options["out"])
    return dataset, options, table, new, written, cdc


def test_several_codecs_make_one_table(multi_run):
    _, options, table, new, _, _ = multi_run
    out = options["out"]
    assert table.failures == []
    assert table.codec_names() == ["DDCM", "PSC", "CDC", "JPEG", "WebP"]
    assert len(new) == len(table.rows) == 2 * 5 and len({r.key for r in table.rows}) == 10
    for image in ("a.png", "grey.png"):
        rows = {r.codec: r for r in table.rows if r.image == image}
        median = statistics.median(rows[c].bpp for c in ("DDCM", "PSC", "CDC"))
        assert rows["JPEG"].target_bpp == rows["WebP"].target_bpp == median  # baselines once, at the median
        for row in rows.values():
            assert row.vif is not None and row.gmsd is not None and row.haarpsi is not None
            assert 0 < row.haarpsi <= 1 and row.gmsd >= 0
            assert (row.model == "") == (row.codec in ("JPEG", "WebP"))
    per_image = (out / "per_image.csv").read_text().splitlines()
    assert len(per_image) == 11 and {line.split(",")[1] for line in per_image[1:]} == {"DDCM", "PSC", "CDC", "JPEG", "WebP"}
    summary = (out / "summary.txt").read_text()
    assert all(f"{codec} " in summary for codec in ("DDCM", "PSC", "CDC", "JPEG", "WebP"))
    assert "VIF" in summary and "GMSD" in summary and "HaarPSI" in summary
    with Image.open(out / "crops" / "grey.png" / "quality_50" / "DDCM.png") as crop:
        assert crop.mode == "L" and crop.size == (64, 64)  # decoded as a user gets it: the source's mode


class _References(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.references += [value for name, value in attrs if name in ("src", "href") and value]


def test_html_report_parses_and_references_only_existing_files(multi_run):
    _, options, table, _, written, _ = multi_run
    out: Path = options["out"]
    page = out / "report.html"
    assert page in written
    parser = _References()
    parser.feed(page.read_text(encoding="utf-8"))
    parser.close()
    assert {"html", "table", "img", "figure", "script", "button"} <= set(parser.tags)
    assert parser.references, "the page shows no image"
    for reference in parser.references:
        assert "://" not in reference and not reference.startswith("/"), reference  # nothing fetched, relative
        assert (out / reference).is_file(), reference
    crops = [r for r in parser.references if r.startswith("crops/")]
    assert len(crops) == len(table.rows) + 2  # every decode, plus each original
    assert "rd_psnr.png" in parser.references and "rd_haarpsi.png" in parser.references
    for reference in crops:
        with Image.open(out / reference) as image:
            assert image.format == "PNG"


def test_rerun_adds_no_rows_and_cli_runs_several_codecs(multi_run, model_dir, capsys):
    dataset, options, table, _, _, cdc = multi_run
    out = options["out"]
    journal = (out / "rows.jsonl").read_text()
    again: list[Row] = []
    rerun = evaluate(dataset, on_row=again.append, **options)
    assert again == [] and (out / "rows.jsonl").read_text() == journal
    assert {r.key: r for r in rerun.rows} == {r.key: r for r in table.rows}

    argv = ["eval", str(dataset), "--codec", "DDCM,PSC,CDC", "--quality", "50", "-o", str(out), "--no-progress"]
    argv += ["--model", f"DDCM={model_dir}", "--model", f"PSC={model_dir}", "--model", f"CDC={cdc}"]
    argv += ["--baselines", "jpeg,webp", "--param", f"steps={FAST['steps']}"]
    argv += ["--param", f"DDCM.codebook_size={FAST['codebook_size']}"]
    argv += [f"--param=PSC.{name}={value}" for name, value in TINY_PSC.items()]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert (out / "rows.jsonl").read_text() == journal  # the CLI's settings match: every row reused
    assert "Traceback" not in printed.err and "report.html" in printed.err
    assert all(f"{codec} " in printed.out for codec in ("DDCM", "PSC", "CDC", "JPEG", "WebP"))

    assert main(["eval", str(dataset), "--codec", "DDCM,CDC", "--model", "builtin", "--bpp", "0.5", "-o", str(out)]) == 2
    assert "CODEC=MODEL" in capsys.readouterr().err
    assert main(["eval", str(dataset)]) == 2
    assert "--suite" in capsys.readouterr().err


def test_suites_find_their_images(tmp_path, capsys):
    quick = SUITES["quick"]
    assert quick.dataset(None) == str(SAMPLE) and SAMPLE.is_dir()
    assert quick.codecs == ["DDCM", "PSC", "CDC", "CORRDIFF", "FLDC"] and len(quick.quality) == 2
    assert SUITES["kodak"].dataset(str(tmp_path)) == str(tmp_path)
    assert main(["eval", str(tmp_path / "none"), "--suite", "kodak", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "No Kodak folder" in err and "Traceback" not in err


def _chromium() -> str | None:
    """A Chromium the machine has (Debian's package, which ``.ci/run`` installs), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def test_html_report_in_a_real_browser(multi_run, tmp_path):
    """report.html opened from disk in headless Chromium (Playwright drives it): every picture loads, nothing is
    fetched from the network, the script runs without errors, the zoom buttons scale every crop and a click on
    a crop zooms its strip alone."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e .[test])")
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's package chromium)")
    _, options, table, _, _, _ = multi_run
    page_path: Path = options["out"] / "report.html"
    flags = ["--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=flags)
        try:
            page = browser.new_page()
            errors: list[str] = []
            remote: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("request", lambda request: None if request.url.startswith("file:") else remote.append(request.url))
            page.goto(page_path.resolve().as_uri(), wait_until="load")

            loaded = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
            assert len(loaded) == len(table.rows) + 2 + 5 and all(loaded)  # crops, originals, 5 RD plots

            def scales() -> list[float]:
                return page.evaluate(
                    "Array.from(document.querySelectorAll('.strip')).map(s => Array.from(s.querySelectorAll('img'))"
                    ".map(i => i.getBoundingClientRect().width / i.naturalWidth))"
                )

            def all_at(strips: list[list[float]], factor: float) -> bool:
                # the 1 px border on each side widens the box a little
                return all(abs(s - factor) < 0.1 for strip in strips for s in strip)

            assert all_at(scales(), 2)  # the page opens at 2x
            page.click(".zoom button[data-z='4']")
            assert all_at(scales(), 4) and page.inner_text(".zoom button.on") == "4x"
            page.click(".zoom button[data-z='1']")
            page.click(".strip >> nth=0 >> img >> nth=1")
            first, *others = scales()
            assert all_at([first], 4) and all_at(others, 1)  # only the clicked strip
            page.click(".strip >> nth=0 >> img >> nth=0")
            assert all_at(scales(), 1)
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            assert errors == [] and remote == []
        finally:
            browser.close()
