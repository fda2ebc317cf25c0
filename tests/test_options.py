"""One option definition: encode(), Image.save, the CLI, --help and the README agree, with one family of defaults."""

from __future__ import annotations

import inspect
import io
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec import api, plugin
from pillow_diffcodec.codecs import CODECS, codec_by_name
from pillow_diffcodec.codecs.ddcm.format import DDCMParams
from pillow_diffcodec.codecs.ddcm.runner import PIXEL_LADDER_CODEBOOK
from pillow_diffcodec.options import DECODE_OPTIONS, ENCODE_OPTIONS, names

from .test_cli import run

README = Path(__file__).parent.parent / "README.md"
# A value other than the default for every DDCM parameter.
EVERY_DDCM_PARAMETER = dict(
    steps=3, codebook_size=8, atoms=2, coef_levels=2, selection="mp", window=(900, 100), tile=16
)


def test_the_example_covers_every_ddcm_parameter() -> None:
    assert set(EVERY_DDCM_PARAMETER) == names(codec_by_name("DDCM").options)
    defaults = DDCMParams().to_dict()
    assert all(defaults[key] != value for key, value in EVERY_DDCM_PARAMETER.items())


def test_every_parameter_is_accepted_by_encode_image_save_and_the_cli(tmp_path, photo, model_dir) -> None:
    options = dict(model=str(model_dir), **EVERY_DDCM_PARAMETER)
    data = pdc.encode(photo, **options)
    assert pdc.info(data)["params"] == {**EVERY_DDCM_PARAMETER, "window": [900, 100]}
    buffer = io.BytesIO()
    photo.save(buffer, format="DDCM", **options)
    assert buffer.getvalue() == data
    photo.save(tmp_path / "in.png")
    flags = ["--steps", "3", "--codebook-size", "8", "--atoms", "2", "--coef-levels", "2", "--selection", "mp",
             "--window", "900", "100", "--tile", "16"]
    run("encode", str(tmp_path / "in.png"), "-o", str(tmp_path / "cli.ddcm"), "--model", str(model_dir), *flags)
    assert (tmp_path / "cli.ddcm").read_bytes() == data


def test_entry_points_derive_their_options_from_one_definition() -> None:
    keywords = {name for name, p in inspect.signature(api.encode_images).parameters.items()
                if p.kind == inspect.Parameter.KEYWORD_ONLY}
    assert keywords == names(ENCODE_OPTIONS) | {"codec"}
    decode_keywords = {name for name, p in inspect.signature(api.decode).parameters.items()
                       if p.kind == inspect.Parameter.KEYWORD_ONLY}
    assert decode_keywords == names(DECODE_OPTIONS)
    for entry in CODECS:
        assert plugin.save_options(entry) == names(ENCODE_OPTIONS) | names(entry.options)


def test_help_and_readme_document_every_option_with_its_default() -> None:
    help_text = "".join(run("encode", "--help").stdout.split())  # argparse wraps lines (also at hyphens)
    readme = README.read_text(encoding="utf-8")
    for option in [*ENCODE_OPTIONS, *codec_by_name("DDCM").options]:
        assert f"`{option.name}`" in readme, option.name
        if option.cli:
            assert option.flag in help_text, option.flag
            assert "".join(option.describe().split()) in help_text, option.describe()
    assert run("--version").stdout.strip() == f"diffcodec {pdc.__version__}"


def test_one_family_of_defaults(model, photo) -> None:
    explicit = pdc.info(pdc.encode(photo, model=model, steps=3))["params"]
    assert explicit == DDCMParams(steps=3).to_dict()
    searched = pdc.info(pdc.encode(photo, model=model, bpp=2, steps=3))["params"]
    assert {k: searched[k] for k in ("steps", "selection", "window")} == {
        k: explicit[k] for k in ("steps", "selection", "window")}
    # rate control searches tiles from half the default up, and K from PIXEL_LADDER_CODEBOOK up (pixel model)
    assert searched["tile"] in (16, 32, 64, 128, 256)
    assert searched["codebook_size"] >= PIXEL_LADDER_CODEBOOK
    given = pdc.info(pdc.encode(photo, model=model, bpp=2, steps=3, tile=24, codebook_size=40))["params"]
    assert given["tile"] == 24 and given["codebook_size"] >= 40


NOISY_ALPHA = Image.merge("RGBA", [*Image.new("RGB", (64, 48), "teal").split(), Image.effect_noise((64, 48), 90)])


@pytest.mark.parametrize("image", [Image.new("RGB", (1, 1), "red"), NOISY_ALPHA], ids=["1x1", "64x48-alpha"])
def test_the_default_quality_writes_the_smallest_file_when_it_cannot_be_met(image) -> None:
    """With the built-in model, as a new user would (its 16-pixel padding and the alpha chunk cost bits)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = pdc.encode(image)
    assert [w.category for w in caught] == [pdc.RateFallbackWarning]
    assert "writing the smallest file instead" in str(caught[0].message)
    assert pdc.decode(data).size == image.size
    with pytest.raises(pdc.InvalidParameterError, match="below the minimum"):
        pdc.encode(image, bpp=0.01)  # an explicit rate is a promise: never exceeded


def test_the_core_never_imports_storage_zarr_or_ray() -> None:
    script = ("import sys, pillow_diffcodec, pillow_diffcodec.api, pillow_diffcodec.cli; "
              "print(sorted(m for m in ('storage', 'zarr', 'ray', 'ray_jobs') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert "archive" in run("--help").stdout  # contributed by storage through the diffcodec.commands entry point


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"bpp": 100.0}, r"Expected bpp in \(0, 64\], got 100.0"),
        ({"quality": 101}, r"Expected quality in \[0, 100\], got 101"),
        ({"seed": -1}, r"Expected seed in \[0, 4294967295\], got -1"),
        ({"bpp": 0.2, "quality": 40}, "Give bpp= or quality=, not both"),
        ({"params": {"stepz": 4}}, "stepz"),
    ],
)
def test_every_entry_point_refuses_the_same_settings_alike(tmp_path, settings, message):
    """The API, bulk jobs and the zarr codec validate encode settings with one rule set and one message
    (the bulk job refuses before it starts Ray or reads the source)."""
    from ray_jobs import bulk_compress
    from storage.zarr_codec import DiffCodecImageCodec

    image = Image.new("RGB", (16, 16))
    params = settings.get("params", {})
    rate = {key: value for key, value in settings.items() if key != "params"}
    with pytest.raises(pdc.InvalidParameterError, match=message):
        pdc.encode(image, **rate, **params)
    with pytest.raises(pdc.InvalidParameterError, match=message):
        bulk_compress(str(tmp_path / "missing"), str(tmp_path / "out.zarr"), **rate, **params)
    with pytest.raises(pdc.InvalidParameterError, match=message):
        DiffCodecImageCodec(**rate, params=params)
