"""The built-in model: shipped, offline, the default, and trained by a reproducible, resumable script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec.evaluation.metrics import stripe_ratios
from pillow_diffcodec.models import BUILTIN_MODELS, load_model
from pillow_diffcodec.models.pixel import equalize_subpixel_means
from pillow_diffcodec.training import pixel as train_builtin

from .conftest import DATA, psnr
from .golden import assert_pixels_close

SAMPLE = Path(__file__).resolve().parents[1] / "ray_jobs" / "sample"


def test_builtin_is_shipped_small_and_loads_offline() -> None:
    folder = BUILTIN_MODELS["builtin"]
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size <= 10 * 2**20
    assert (folder / "MODEL_CARD.md").is_file() and (folder / "loss.png").is_file()
    script = "import pillow_diffcodec.models as m; model = m.load_model(); print(model.name, model.size_multiple)"
    env = {"HF_HUB_OFFLINE": "1", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["builtin", "8"]  # architecture "f2": 2x2 unshuffle, two down-sampling blocks


@pytest.mark.slow
def test_builtin_is_the_default_and_round_trips_a_photo(photo) -> None:
    result = pdc.encode_images([photo], quality=75, steps=12)[0]
    meta = pdc.info(result.data)
    assert meta["model"] == "builtin" and meta["fingerprint"] == load_model().fingerprint.hex()
    decoded = pdc.decode(result.data)
    assert np.array_equal(np.asarray(decoded), np.asarray(result.reconstruction))
    generated = pdc.generate(*photo.size, steps=12, codebook_size=64, tile=32, rng_seed=0)
    assert psnr(photo, decoded) > psnr(photo, generated.reconstruction) + 2


def test_training_is_reproducible_and_resumable(tmp_path) -> None:
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(3):
        Image.effect_noise((96, 80), 30 + 10 * i).convert("RGB").save(data / f"p{i}.png")
    torch.set_num_threads(2)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_builtin.train(data, 10.0, 0, 4, straight / "model", straight / "state.pt", checkpoint_every=100)
    train_builtin.train(data, 10.0, 0, 2, resumed / "model", resumed / "state.pt", checkpoint_every=100)
    train_builtin.train(data, 10.0, 0, 4, resumed / "model", resumed / "state.pt", checkpoint_every=100)
    a = torch.load(straight / "state.pt", weights_only=False)
    b = torch.load(resumed / "state.pt", weights_only=False)
    assert a["step"] == b["step"] == 4 and a["losses"] == b["losses"]
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    model = pdc.load_model(str(straight / "model"))
    assert model.pixel_unshuffle == 2 and (straight / "model" / "loss.png").is_file()  # "f2", the default
    assert json.loads((straight / "model" / "training.json").read_text())["steps"] == 4


@pytest.fixture
def one_photo(tmp_path):
    """A folder with one noise 'photo' to train on (two threads, as the reproducibility test uses)."""
    data = tmp_path / "photos"
    data.mkdir()
    Image.effect_noise((96, 80), 40).convert("RGB").save(data / "p.png")
    torch.set_num_threads(2)
    return data


def test_training_resumes_from_a_lean_state(one_photo, tmp_path) -> None:
    """The repository keeps states without weights (the model folder holds the EMA weights of that step);
    training goes on from those with a fresh AdamW, and a model folder of another step is refused."""
    from safetensors.torch import load_file

    data = one_photo
    full, lean = tmp_path / "full.pt", tmp_path / "lean.pt"
    train_builtin.train(data, 10.0, 0, 2, tmp_path / "model", full, checkpoint_every=100)
    train_builtin.lean_copy(full, lean)
    saved = torch.load(lean, weights_only=False)
    assert not {"optimiser", "model", "ema"} & set(saved) and saved["step"] == 2
    assert lean.stat().st_size < full.stat().st_size / 100
    exported = load_file(str(tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(exported[k], torch.load(full, weights_only=False)["ema"][k]) for k in exported)
    with pytest.raises(SystemExit, match="lean state"):
        train_builtin.train(data, 10.0, 0, 3, tmp_path / "elsewhere", lean)
    train_builtin.train(data, 10.0, 0, 3, tmp_path / "model", lean, checkpoint_every=100)
    resumed = torch.load(lean, weights_only=False)
    assert resumed["step"] == 3 and len(resumed["losses"]) == 3 and "optimiser" in resumed
    assert any(not torch.equal(resumed["ema"][k], exported[k]) for k in exported)


@pytest.mark.parametrize(
    "stem, fingerprint, folder",
    [("first_builtin", "d8e48de3", "builtin-v1"), ("second_builtin", "36ced4e6", "builtin-v2")],
)
def test_files_of_retired_builtin_models_still_decode(stem: str, fingerprint: str, folder: str) -> None:
    """Files that store the name "builtin" with a retired model's fingerprint decode through the folder that
    now holds it, to the pixels their release decoded (within float rounding, tests/golden.py), by the API
    and by Pillow. first_builtin: the first default model, written by commit d125f93; second_builtin: the
    f2 weights before the sub-pixel correction of issue 27 (the 64x48 kodim23 crop at quality 50)."""
    data = (DATA / "golden" / f"{stem}.ddcm").read_bytes()
    assert pdc.info(data)["model"] == "builtin" and pdc.info(data)["fingerprint"] == fingerprint
    assert load_model().fingerprint.hex() != fingerprint
    assert load_model(folder).fingerprint.hex() == fingerprint
    with Image.open(DATA / "golden" / f"{stem}.png") as expected:
        want = np.asarray(expected.convert("RGB"))
    assert_pixels_close(np.asarray(pdc.decode(data).convert("RGB")), want)
    with Image.open(DATA / "golden" / f"{stem}.ddcm") as opened:
        assert_pixels_close(np.asarray(opened.convert("RGB")), want)
    with pytest.raises(pdc.ModelMismatchError, match=fingerprint):
        pdc.decode(data, model="builtin")  # an explicit model is never swapped


def _stripe_crop() -> Image.Image:
    """A 96x64 shipped sample photo whose decodes by the uncorrected f2 model carried a strong stripe (250x
    along rows at quality 0, 15x at quality 50)."""
    with Image.open(SAMPLE / "nature" / "tiger.png") as image:
        return image.convert("RGB")


@pytest.mark.parametrize("quality", [0, 50])
def test_the_default_models_decodes_carry_no_one_pixel_stripe(quality: int) -> None:
    """Issue 27: the alternating-column/row energy of a decode stays within 3x the original's
    (the uncorrected model, builtin-v2, gave up to 158x on Kodak crops at 0.1 bpp)."""
    image = _stripe_crop()
    result = pdc.encode_images([image], quality=quality)[0]
    ratios = stripe_ratios(image, result.reconstruction)
    assert max(ratios.values()) < 3, f"stripe ratios {ratios} at quality {quality}"


def test_the_uncorrected_model_shows_the_stripe_the_test_looks_for() -> None:
    """The stripe test is not vacuous: the same crop through builtin-v2 (no sub-pixel correction) has it."""
    image = _stripe_crop()
    decoded = pdc.encode_images([image], quality=0, model="builtin-v2")[0].reconstruction
    assert max(stripe_ratios(image, decoded).values()) > 3


def test_subpixel_mean_equalisation_keeps_detail_and_removes_offsets() -> None:
    """The correction moves only the per-position means: a pattern with an offset between even and odd
    columns loses the offset and keeps everything else; it is part of the model's fingerprint."""
    torch.manual_seed(0)
    cells = torch.randn(3, 4, 8 * 12)  # (channel, sub-pixel position, cell) of a 16x24 image
    cells = cells - cells.mean(dim=2, keepdim=True)  # every sub-pixel position has mean 0
    detail = torch.nn.functional.pixel_shuffle(cells.reshape(1, 12, 8, 12), 2)[0]
    offset = torch.zeros(3, 16, 24)
    offset[:, :, 0::2] = 0.3
    corrected = equalize_subpixel_means(detail + offset, 2)
    assert torch.allclose(corrected, detail + 0.15, atol=1e-5)
    plain = load_model("builtin-v2")
    assert load_model().equalize_subpixel_means and not plain.equalize_subpixel_means
    assert load_model().fingerprint != plain.fingerprint


def test_the_earlier_builtin_models_are_shipped_and_load_offline() -> None:
    """builtin-v1 (4x4 unshuffle) and builtin-v2 (today's weights without the sub-pixel correction) stay
    loadable; the 3600-step preview builtin-f2, which no default ever used, is no longer shipped."""
    assert "builtin-f2" not in BUILTIN_MODELS
    for name, factor, multiple in (("builtin-v1", 4, 16), ("builtin-v2", 2, 8)):
        folder = BUILTIN_MODELS[name]
        assert (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size <= 11 * 2**20
        assert (folder / "MODEL_CARD.md").is_file()
        model = load_model(name)
        assert model.name == name and model.pixel_unshuffle == factor and model.size_multiple == multiple
        assert model.fingerprint != load_model().fingerprint


def test_a_v_prediction_run_starts_from_an_epsilon_runs_weights(one_photo, tmp_path) -> None:
    """``--init`` + ``--prediction v_prediction``: the fine-tuned model loads as a v-prediction model, and
    a state of the other prediction type is refused instead of silently resumed."""
    data = one_photo
    epsilon, v = tmp_path / "eps.pt", tmp_path / "v.pt"
    train_builtin.train(data, 10.0, 0, 2, tmp_path / "eps", epsilon, checkpoint_every=100)
    train_builtin.train(data, 10.0, 0, 0, tmp_path / "v", v, checkpoint_every=100, prediction="v_prediction",
                        init=epsilon)
    start, fine_tuned = torch.load(epsilon, weights_only=False), torch.load(v, weights_only=False)
    assert fine_tuned["step"] == 0 and fine_tuned["prediction"] == "v_prediction"
    assert all(torch.equal(start["ema"][k], fine_tuned["ema"][k]) for k in start["ema"])
    model = pdc.load_model(str(tmp_path / "v"))
    assert model.schedule.prediction_type == "v_prediction"
    assert model.fingerprint != pdc.load_model(str(tmp_path / "eps")).fingerprint
    with pytest.raises(SystemExit, match="prediction"):
        train_builtin.train(data, 10.0, 0, 3, tmp_path / "v", v, prediction="epsilon")
