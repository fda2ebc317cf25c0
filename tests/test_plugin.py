"""Pillow integration: open/save through every kind of file object, modes, metadata, bad files."""

from __future__ import annotations

import io
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import pillow_diffcodec as pdc
from pillow_diffcodec.models import _cache



def save_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="DDCM", **options)
    return buffer.getvalue()


def test_round_trip_through_path_bytesio_and_open_file(tmp_path, photo, options) -> None:
    path = tmp_path / "photo.ddcm"
    photo.save(path, **options)  # format from the extension
    with Image.open(path) as from_path:
        assert from_path.format == "DDCM" and from_path.size == photo.size and from_path.mode == "RGB"
        pixels = np.asarray(from_path)
    with Image.open(io.BytesIO(path.read_bytes())) as from_bytes:
        assert np.array_equal(np.asarray(from_bytes), pixels)
    with path.open("rb") as handle, Image.open(handle) as from_handle:
        assert np.array_equal(np.asarray(from_handle), pixels)
    with (tmp_path / "again.ddcm").open("wb") as handle:
        photo.save(handle, format="DDCM", **options)
    assert (tmp_path / "again.ddcm").read_bytes() == path.read_bytes()


def test_identified_by_magic_not_extension(tmp_path, photo, options) -> None:
    path = tmp_path / "misleading.png"
    photo.save(path, format="DDCM", **options)
    with Image.open(path) as image:
        assert image.format == "DDCM"
    assert Image.registered_extensions()[".ddcm"] == "DDCM"
    assert Image.MIME["DDCM"] == "image/x-ddcm"


def test_open_reads_the_header_without_torch(tmp_path, photo, options) -> None:
    path = tmp_path / "photo.ddcm"
    photo.save(path, bpp=None, **options)
    script = f"""
import sys
sys.modules["torch"] = None  # any import of torch now fails: no model can be loaded
from PIL import Image
import pillow_diffcodec
with Image.open({str(path)!r}) as im:
    print(im.size, im.mode, im.info["codec"], im.info["params"]["steps"], round(im.info["bpp"], 3))
    try:
        im.load()
    except ImportError:
        print("load needs torch")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    bpp = 8 * path.stat().st_size / (64 * 48)
    assert out.split("\n")[:2] == [f"(64, 48) RGB DDCM 3 {round(bpp, 3)}", "load needs torch"]


def test_models_are_loaded_once_for_many_files(model_dir, photo, options) -> None:
    files = [save_bytes(photo.rotate(angle), **options) for angle in (0, 90, 180)]
    pdc.clear_model_cache()
    for data in files * 3:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    assert [key[0] for key in _cache] == [str(model_dir)]
    pdc.clear_model_cache()
    assert not _cache


@pytest.mark.parametrize(
    "mode, reopened, original",
    [("RGB", "RGB", None), ("L", "L", None), ("LA", "LA", None), ("RGBA", "RGBA", None),
     ("P", "RGB", "P"), ("PA", "RGBA", "PA"), ("1", "L", "1"), ("CMYK", "RGB", "CMYK")],
)
def test_modes(photo, options, mode: str, reopened: str, original: str | None) -> None:
    image = photo.convert("RGBA") if mode in ("LA", "RGBA", "PA") else photo
    if mode in ("RGBA", "LA", "PA"):
        alpha = Image.linear_gradient("L").resize(photo.size)
        image.putalpha(alpha)
    image = image.convert(mode)
    with Image.open(io.BytesIO(save_bytes(image, **options))) as back:
        assert back.mode == reopened and back.size == image.size
        assert back.info.get("original_mode") == original
        if "A" in mode:
            assert np.array_equal(np.asarray(back.getchannel("A")), np.asarray(image.convert(reopened).getchannel("A")))


def test_palette_with_transparency_keeps_alpha(photo, options) -> None:
    image = photo.convert("P")
    image.info["transparency"] = 0
    with Image.open(io.BytesIO(save_bytes(image, **options))) as back:
        assert back.mode == "RGBA" and back.info["original_mode"] == "P"


def test_alpha_can_be_dropped(photo, options) -> None:
    image = photo.convert("RGBA")
    kept, dropped = save_bytes(image, **options), save_bytes(image, keep_alpha=False, **options)
    assert len(dropped) < len(kept)
    with Image.open(io.BytesIO(dropped)) as back:
        assert back.mode == "RGB"


@pytest.mark.parametrize("mode", ["HSV", "LAB", "YCbCr"])
def test_unsupported_modes_list_the_supported_ones(options, mode: str) -> None:
    with pytest.raises(ValueError, match=r"Mode .* is not supported; supported modes: \['RGB', 'RGBA', 'L'"):
        save_bytes(Image.new(mode, (8, 8)), **options)


def test_exif_icc_and_xmp_round_trip(photo, options) -> None:
    exif = Image.Exif()
    exif[0x010F] = "pillow-diffcodec camera"
    icc = b"\x00\x00\x02\x0cfake icc profile bytes"
    xmp = b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>hello</x:xmpmeta>"
    with Image.open(io.BytesIO(save_bytes(photo, exif=exif, icc_profile=icc, xmp=xmp, **options))) as back:
        assert back.info["icc_profile"] == icc and back.info["xmp"] == xmp
        assert back.getexif()[0x010F] == "pillow-diffcodec camera"
    source = photo.copy()
    source.info["icc_profile"] = icc
    with Image.open(io.BytesIO(save_bytes(source, **options))) as back:
        assert back.info["icc_profile"] == icc  # taken from im.info when not given


@pytest.mark.parametrize("size", [(1, 1), (641, 479), (5, 3)])
def test_odd_sizes_reopen_exactly(options, size) -> None:
    image = Image.effect_noise(size, 40).convert("RGB")
    result = pdc.encode_images([image], **{**options, "steps": 2})[0]
    with Image.open(io.BytesIO(result.data)) as back:
        assert back.size == size
        assert np.array_equal(np.asarray(back), np.asarray(result.reconstruction))


@pytest.mark.parametrize(
    "options_update, message",
    [({"bpp": -1}, r"bpp in \(0, 64\]"), ({"quality": 200}, r"quality in \[0, 100\]"),
     ({"codebook_size": 0}, "codebook_size"), ({"optimize": True}, r"Unknown DDCM save option\(s\) \['optimize'\]"),
     ({"dtype": "int8"}, "dtype")],
)
def test_bad_save_options_name_the_option(photo, options, options_update, message) -> None:
    with pytest.raises(ValueError, match=message):
        save_bytes(photo, **{**options, **options_update})


def test_damaged_files_give_clear_errors(tmp_path, photo, options) -> None:
    good = save_bytes(photo, **options)
    damaged = {
        "truncated": good[: len(good) // 2],
        "header-only": good[:12],
        "bit-flip": good[:20] + bytes([good[20] ^ 4]) + good[21:],
        "bad-crc": good[:-1] + bytes([good[-1] ^ 1]),
    }
    for name, data in damaged.items():
        (tmp_path / f"{name}.ddcm").write_bytes(data)
        for source in (data, io.BytesIO(data), tmp_path / f"{name}.ddcm"):
            with pytest.raises(pdc.CorruptFileError):
                if isinstance(source, bytes):
                    pdc.decode(source)
                else:
                    Image.open(source).load()
    for foreign in (b"", b"hello world", zlib.compress(b"x" * 100)):
        with pytest.raises(UnidentifiedImageError):
            Image.open(io.BytesIO(foreign))
        with pytest.raises(pdc.NotDiffCodecFileError):
            pdc.decode(foreign)


def test_register_with_default_options(photo, model_dir) -> None:
    try:
        pdc.register_diffcodec_opener(model=str(model_dir), steps=2, codebook_size=8)
        data = save_bytes(photo)
        assert pdc.info(data)["params"]["codebook_size"] == 8
        with pytest.raises(ValueError, match="Unknown default option"):
            pdc.register_diffcodec_opener(colour="red")
    finally:
        pdc.register_diffcodec_opener()


def test_plugin_module_registers_on_import() -> None:
    script = "from PIL import Image; import pillow_diffcodec.DdcmImagePlugin; print('DDCM' in Image.OPEN, 'DDCM' in Image.SAVE)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True True"
