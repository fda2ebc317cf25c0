"""Compressed conditional generation (DDCM Sec. 6, App. C.5-C.6): restoring while compressing, guided generation.

The restoration tests run the shipped built-in model on a 64x64 crop of Kodak 23 (tests/data) degraded by the
task; properties are compared against a random DDCM sample (compressed generation) of the same size and rate,
which knows nothing of the input, so they hold with wide margins on any machine.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec.cli import main as cli_main
from pillow_diffcodec.errors import InvalidParameterError
from pillow_diffcodec.evaluation.niqe import grey, niqe
from pillow_diffcodec.restoration import Degradation

from .conftest import psnr
from .test_latent import build_pipeline

RATE = dict(quality=50)


@pytest.fixture(scope="module")
def crop(photo) -> Image.Image:
    """64x48 RGB (the shared photo fixture), padded by the model to 64x64 where needed."""
    return photo


@pytest.fixture(scope="module")
def sr(crop) -> tuple[Image.Image, pdc.EncodeResult]:
    low = crop.resize((16, 12), Image.Resampling.BICUBIC)
    return low, pdc.encode_images([low], restore="sr4", **RATE)[0]


@pytest.fixture(scope="module")
def unconditioned(crop) -> pdc.EncodeResult:
    """A random DDCM sample of the restored size with the sr4 file's parameters: the no-information baseline."""
    return pdc.generate(*crop.size, rng_seed=1, steps=20, codebook_size=64, tile=32)


def test_super_resolution_output_fits_the_low_resolution_input(sr, unconditioned) -> None:
    low, result = sr
    assert result.reconstruction.size == (64, 48) and pdc.info(result.data)["codec"] == "DDCM"
    fit = psnr(result.reconstruction.resize(low.size, Image.Resampling.BICUBIC), low)
    chance = psnr(unconditioned.reconstruction.resize(low.size, Image.Resampling.BICUBIC), low)
    assert fit > chance + 10, (fit, chance)  # measured: 28.0 vs 10.9 dB
    assert result.bpp <= 0.4 + 1e-9


def test_restored_file_decodes_without_the_input_to_the_encoders_image(sr, tmp_path) -> None:
    _, result = sr
    path = tmp_path / "restored.ddcm"
    path.write_bytes(result.data)
    with Image.open(path) as reopened:
        assert reopened.size == (64, 48)
        assert reopened.tobytes() == result.reconstruction.tobytes()


def test_colorization_keeps_the_input_luminance(crop, unconditioned) -> None:
    grey_input = crop.convert("L")
    result = pdc.encode_images([grey_input], restore="colorize", record_task=True, **RATE)[0]
    assert result.reconstruction.mode == "RGB" and pdc.info(result.data)["mode"] == "RGB"
    assert pdc.info(result.data)["restored_by"] == "colorize"
    fit = psnr(result.reconstruction.convert("L"), grey_input)
    chance = psnr(unconditioned.reconstruction.convert("L"), grey_input)
    assert fit > chance + 3, (fit, chance)  # measured: 16.3 vs 11.2 dB (plain DDCM of the grey image: 16.8)
    channels = np.asarray(result.reconstruction, dtype=np.float64)
    assert np.abs(channels[..., 0] - channels[..., 2]).mean() > 2  # colour, not three copies of the grey
    assert pdc.decode(result.data).tobytes() == result.reconstruction.tobytes()


def test_perception_weight_trades_distortion_for_a_lower_niqe(sr) -> None:
    low = sr[0]
    results = {weight: pdc.encode_images([low], restore="sr4", perception=weight, **RATE)[0] for weight in (0.0, 1.0)}
    scores = {weight: niqe(grey(r.reconstruction)) for weight, r in results.items()}
    estimate = low.resize((64, 48), Image.Resampling.BICUBIC)
    distortion = {weight: psnr(r.reconstruction, estimate) for weight, r in results.items()}
    assert scores[1.0] < scores[0.0], scores  # measured on a 64x64 crop: 3.7 vs 4.2
    assert distortion[1.0] < distortion[0.0], distortion
    for result in results.values():
        assert pdc.decode(result.data).tobytes() == result.reconstruction.tobytes()


def test_a_user_measure_replaces_niqe(sr) -> None:
    calls = []

    def darkness(image: torch.Tensor) -> float:  # lower is "better": prefers bright images
        calls.append(image.shape)
        return -float(image.mean())

    low = sr[0]
    bright = pdc.encode_images([low], restore="sr4", perception=5.0, nr_measure=darkness, **RATE)[0]
    plain = pdc.encode_images([low], restore="sr4", perception=0.0, nr_measure=darkness, **RATE)[0]
    assert calls and all(shape[0] == 3 for shape in calls)
    assert np.asarray(bright.reconstruction).mean() > np.asarray(plain.reconstruction).mean() + 5


class BoxDownsample(Degradation):
    """A user's own operator: 2x2 averaging (and its nearest-neighbour upscale as the estimate)."""

    name = "box2"

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return size[0] * 2, size[1] * 2

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 2)

    def estimate(self, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(y, scale_factor=2, mode="nearest")


def test_a_user_operator_restores_through_the_same_api(crop) -> None:
    low = crop.resize((32, 24), Image.Resampling.BOX)
    data = pdc.restore(low, task=BoxDownsample(), **RATE)
    restored = pdc.decode(data)
    assert restored.size == (64, 48)
    fit = psnr(restored.reduce(2), low)
    assert fit > 15, fit  # measured 18.1 dB; a random sample of the model scores about 11


def test_save_cli_and_alpha(crop, tmp_path) -> None:
    low = crop.resize((16, 12)).convert("RGBA")
    low.putalpha(Image.linear_gradient("L").resize((16, 12)))
    buffer = io.BytesIO()
    low.save(buffer, format="DDCM", restore="sr4", quality=25)
    with Image.open(io.BytesIO(buffer.getvalue())) as restored:
        assert restored.mode == "RGBA" and restored.size == (64, 48)
        alpha = np.asarray(restored.getchannel("A"), dtype=np.float64)
        assert alpha[0].mean() < alpha[-1].mean()  # the gradient survives the bicubic upscale
    source = tmp_path / "small.png"
    crop.resize((16, 12)).save(source)
    target = tmp_path / "small.ddcm"
    assert cli_main(["encode", str(source), "-o", str(target), "--restore", "sr4", "--quality", "25"]) == 0
    assert pdc.decode(target.read_bytes()).size == (64, 48)


@pytest.mark.parametrize("options, message", [
    (dict(perception=1.0), "need restore"),
    (dict(restore="sr4", codec="PSC"), "cannot restore"),
    (dict(restore="deblur"), "Unknown restoration task"),
    (dict(restore="sr4", perception=-1.0), "weight >= 0"),
])
def test_inconsistent_restoration_options_are_refused(crop, options, message) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        pdc.encode(crop, **options)


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    return build_pipeline(tmp_path_factory.mktemp("sd"))


def test_latent_models_restore_through_their_decoder(crop) -> None:
    """builtin-latent: the loss is measured on the VAE's decoded image and its gradient flows back to the latent."""
    low = crop.resize((16, 12), Image.Resampling.BICUBIC)
    options = dict(model="builtin-latent", steps=10, codebook_size=256, tile=0)
    result = pdc.encode_images([low], restore="sr4", **options)[0]
    sample = pdc.generate(64, 48, rng_seed=0, **options)
    fit = psnr(result.reconstruction.resize(low.size, Image.Resampling.BICUBIC), low)
    chance = psnr(sample.reconstruction.resize(low.size, Image.Resampling.BICUBIC), low)
    assert fit > chance + 5, (fit, chance)
    assert pdc.decode(result.data).tobytes() == result.reconstruction.tobytes()


def test_text_guidance_needs_no_prompt_to_decode(sd_dir, model) -> None:
    options = dict(model=str(sd_dir), steps=4, codebook_size=16, tile=0, rng_seed=3)
    guided = pdc.generate(32, 32, guide=pdc.TextGuidance("a red barn", candidates=4), **options)
    plain = pdc.generate(32, 32, **options)
    assert "prompt" not in pdc.info(guided.data)
    assert pdc.decode(guided.data).tobytes() == guided.reconstruction.tobytes()
    assert guided.data != plain.data
    with pytest.raises(InvalidParameterError, match="text-conditioned"):
        pdc.generate(32, 32, model=model, guide=pdc.TextGuidance("a red barn"), steps=3, codebook_size=8)


def test_classifier_guidance_steers_generation(model) -> None:
    def redness(x: torch.Tensor, t: int) -> torch.Tensor:
        return x[:, 0].mean(dim=(1, 2)) - x[:, 1:].mean(dim=(1, 2, 3))

    options = dict(model=model, steps=10, codebook_size=64, tile=0)
    scores = []
    for seed in range(2):
        guided = pdc.generate(32, 32, rng_seed=seed, guide=pdc.ClassifierGuidance(redness, candidates=8), **options)
        plain = pdc.generate(32, 32, rng_seed=seed, **options)
        assert pdc.decode(guided.data, model=model).tobytes() == guided.reconstruction.tobytes()
        scores.append([float(redness(torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1)[None], 0))
                       for im in (guided.reconstruction, plain.reconstruction)])
    assert all(g > p + 5 for g, p in scores), scores  # measured: 13.0 vs 5.6 and 15.3 vs 6.5
    with pytest.raises(InvalidParameterError, match="one codeword"):
        pdc.generate(32, 32, model=model, steps=3, codebook_size=8, atoms=2, guide=pdc.ClassifierGuidance(redness))


def test_niqe_prefers_sharp_natural_images(crop) -> None:
    sharp = niqe(grey(crop))
    blurred = niqe(grey(crop.resize((16, 12)).resize(crop.size, Image.Resampling.BILINEAR)))
    rng = np.random.default_rng(0)
    noisy = np.clip(np.asarray(crop, dtype=np.float64) + rng.normal(0, 25, (48, 64, 3)), 0, 255).astype(np.uint8)
    assert sharp < blurred and sharp < niqe(grey(Image.fromarray(noisy)))
    assert math.isfinite(niqe(np.full((40, 40), 128.0)))  # a flat image: finite, not a crash
