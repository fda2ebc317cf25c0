"""Every registered codec keeps the interface its registry entry declares: a payload bound that holds (and is
exact where the entry says so), generation only where declared, progressive decoding only where declared."""

from __future__ import annotations

import io

import pytest
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec.codecs import CODECS, codec_by_name
from pillow_diffcodec.errors import InvalidParameterError
from pillow_diffcodec.models import load_model
from pillow_diffcodec.plugin import IMAGE_FILES

from .conftest import tiny_model
from .test_cdc import tiny_cdc_folder
from .test_corrdiff import tiny_corrdiff_folder
from .test_fldc import tiny_fldc_folder
from .test_psc import TINY

PARAMS = {"DDCM": dict(steps=3, codebook_size=16), "PSC": TINY, "CDC": dict(rate_point=1),
          "CORRDIFF": dict(rate_point=1, steps=3), "FLDC": dict(lam=16.0)}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, object]:
    pixel = tiny_model()
    return {"DDCM": pixel, "PSC": pixel, "CDC": load_model(str(tiny_cdc_folder(tmp_path_factory.mktemp("cdc") / "m"))),
            "CORRDIFF": load_model(str(tiny_corrdiff_folder(tmp_path_factory.mktemp("corrdiff") / "m"))),
            "FLDC": load_model(str(tiny_fldc_folder(tmp_path_factory.mktemp("fldc"))))}


def test_every_codec_has_parameters_and_a_test_model() -> None:
    assert sorted(entry.name for entry in CODECS) == sorted(PARAMS)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_the_payload_bound_holds_and_is_exact_where_declared(name, models, photo) -> None:
    entry = codec_by_name(name)
    image = photo.crop((0, 0, 24, 16))
    result = pdc.encode_images([image], codec=name, model=models[name], **PARAMS[name])[0]
    params = entry.params.from_dict(pdc.info(result.data)["params"])
    bound = pdc.file_size(params, models[name], *image.size)
    if entry.exact_size:
        assert len(result.data) == bound
    else:
        assert len(result.data) <= bound


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_generation_and_progressive_decoding_only_where_declared(name, models) -> None:
    entry = codec_by_name(name)
    runner = entry.load()
    assert hasattr(runner, "generate") == entry.can_generate
    assert any(option.name == "max_measurements" for option in entry.decode_options) == entry.progressive
    if entry.can_generate:
        result = pdc.generate(16, 16, codec=name, model=models[name], **PARAMS[name])
        assert pdc.decode(result.data, model=models[name]).tobytes() == result.reconstruction.tobytes()
    else:
        with pytest.raises(InvalidParameterError, match=f"{name} cannot generate.*codecs that generate: DDCM"):
            pdc.generate(16, 16, codec=name, model=models[name])


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_each_codec_has_its_params_class_and_image_file_class_at_known_names(name, models, photo) -> None:
    entry = codec_by_name(name)
    assert getattr(pdc, entry.params.__name__) is entry.params  # pillow_diffcodec.DDCMParams, ..., CorrDiffParams, FLDCParams
    data = pdc.encode(photo.crop((0, 0, 16, 16)), codec=name, model=models[name], **PARAMS[name])
    with Image.open(io.BytesIO(data)) as image:
        assert type(image) is IMAGE_FILES[name] and type(image).__name__ == f"{name.title()}ImageFile"
        assert image.format == name
