"""Loading real diffusers checkpoints from local folders, fingerprints, and missing models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from diffusers import DDPMPipeline, DDPMScheduler

import pillow_diffcodec as pdc
from pillow_diffcodec.errors import ModelNotFoundError
from pillow_diffcodec.models import PixelDiffusionModel, available_models, clear_model_cache, load_model

from .conftest import tiny_unet


def test_pipeline_folder_round_trip_without_passing_the_model(tmp_path, photo) -> None:
    DDPMPipeline(unet=tiny_unet(3), scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(tmp_path / "ddpm")
    data = pdc.encode(photo, model=str(tmp_path / "ddpm"), steps=3, codebook_size=16)
    assert pdc.info(data)["model"] == str((tmp_path / "ddpm").resolve())
    clear_model_cache()
    decoded = pdc.decode(data)  # resolves the directory recorded in the file
    assert decoded.size == photo.size


def test_google_ddpm_flat_layout(tmp_path) -> None:
    """google/ddpm-* repos keep config.json, weights and scheduler_config.json side by side."""
    unet = tiny_unet(4)
    unet.save_pretrained(tmp_path)
    DDPMScheduler(num_train_timesteps=1000, prediction_type="epsilon").save_pretrained(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    model = PixelDiffusionModel.from_directory(tmp_path)
    assert model.image_channels == model.sample_channels == 3 and model.size_multiple == 2
    assert model.fingerprint == PixelDiffusionModel(unet, model.schedule, "x").fingerprint


def test_fingerprint_covers_weights_and_schedule() -> None:
    base = PixelDiffusionModel(tiny_unet(0), pdc_schedule(), "a")
    assert base.fingerprint == PixelDiffusionModel(tiny_unet(0), pdc_schedule(), "b").fingerprint
    assert base.fingerprint != PixelDiffusionModel(tiny_unet(1), pdc_schedule(), "a").fingerprint
    assert base.fingerprint != PixelDiffusionModel(tiny_unet(0), pdc_schedule(beta_end=0.03), "a").fingerprint


def pdc_schedule(**config):
    from pillow_diffcodec.schedule import NoiseSchedule

    return NoiseSchedule.from_config({"num_train_timesteps": 1000, **config})


def test_models_are_cached_per_reference(tmp_path) -> None:
    DDPMPipeline(unet=tiny_unet(5), scheduler=DDPMScheduler()).save_pretrained(tmp_path)
    clear_model_cache()
    assert load_model(str(tmp_path)) is load_model(str(tmp_path))
    first = load_model(str(tmp_path))
    clear_model_cache()
    assert load_model(str(tmp_path)) is not first


def test_missing_model_says_what_and_how(tmp_path, photo, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError, match=r"Looked for a built-in model.*a local directory.*Hugging Face.*model="):
        pdc.encode(photo, model=str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError, match=r"'google/ddpm-cifar10-32' \(32x32.*nothing is downloaded"):
        load_model("google/ddpm-cifar10-32")
    with pytest.raises(ModelNotFoundError, match="No model in .* pillow-diffcodec can load: expected .*; or a pixel DDPM"):
        pdc.encode(photo, model=str(tmp_path))
    with pytest.raises(KeyError):  # also a KeyError, like a missing registry entry
        load_model(str(tmp_path / "nope"))


def test_decoding_a_file_whose_model_is_gone(tmp_path, photo) -> None:
    DDPMPipeline(unet=tiny_unet(6), scheduler=DDPMScheduler()).save_pretrained(tmp_path / "m")
    data = pdc.encode(photo, model=str(tmp_path / "m"), steps=2, codebook_size=4)
    clear_model_cache()
    (tmp_path / "m").rename(tmp_path / "moved")
    with pytest.raises(ModelNotFoundError, match=str(tmp_path / "m")):
        pdc.decode(data)
    assert np.asarray(pdc.decode(data, model=str(tmp_path / "moved"))).shape == (48, 64, 3)


def fake_hub_cache(cache: Path, repo_id: str, unet) -> Path:
    """Lay out a model as the Hugging Face hub cache stores it: refs/main -> snapshots/<commit>/."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    unet.save_pretrained(snapshot)
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_hugging_face_cache_is_searched_offline(tmp_path, monkeypatch, photo) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = fake_hub_cache(tmp_path / "hub", "google/ddpm-cifar10-32", tiny_unet(7, attention=False))
    model = load_model("google/ddpm-cifar10-32")
    assert model.name == "google/ddpm-cifar10-32"  # path-independent name in files
    data = pdc.encode(photo, model="google/ddpm-cifar10-32", steps=2, codebook_size=4)
    assert pdc.info(data)["model"] == "google/ddpm-cifar10-32"
    rows = {row["name"]: row for row in available_models()}
    assert rows["google/ddpm-cifar10-32"]["available"] and rows["google/ddpm-cifar10-32"]["location"] == str(snapshot)
    assert not rows["google/ddpm-celebahq-256"]["available"]


def test_resolution_order_prefers_local_directory_over_hub(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    fake_hub_cache(tmp_path / "hub", "org/model", tiny_unet(8, attention=False))
    monkeypatch.chdir(tmp_path)
    DDPMPipeline(unet=tiny_unet(9, attention=False), scheduler=DDPMScheduler()).save_pretrained(tmp_path / "org" / "model")
    assert load_model("org/model").name == str((tmp_path / "org" / "model").resolve())
