"""Latent DDCM on Stable Diffusion pipelines: tiny randomly initialised SD-architecture folders built here
(UNet2DConditionModel, AutoencoderKL, CLIPTextModel with a tiny BPE vocabulary, DDIM scheduler config),
saved with StableDiffusionPipeline.save_pretrained and loaded by path, on CPU in float32. No download.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec import container
from pillow_diffcodec.codecs.ddcm import runner as ddcm
from pillow_diffcodec.conditioning import CHUNK_TAG, TextConditioning
from pillow_diffcodec.errors import (
    CorruptFileError,
    DecompressionBombError,
    InvalidParameterError,
    ModelMismatchError,
    ModelNotFoundError,
)
from pillow_diffcodec.models import LAYOUTS, LatentDiffusionModel, clear_model_cache, load_model
from pillow_diffcodec.models import latent as latent_module

from .conftest import psnr

TEXT_LENGTH = 24
FAST = dict(steps=4, codebook_size=16, tile=0)


def tiny_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer folder (vocab.json, merges.txt, tokenizer_config.json) over single letters."""
    from transformers import CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {token: i for i, token in enumerate([*letters, *(c + "</w>" for c in letters)])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=TEXT_LENGTH)
    tokenizer.save_pretrained(str(folder))


def build_pipeline(folder: Path, *, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """A Stable Diffusion pipeline folder of the SD 1.x/2.x architecture family with ~50k parameters."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4,
        sample_size=32,
    )
    tiny_tokenizer(folder / "tokenizer-source")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer-source"))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=TEXT_LENGTH, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipeline.save_pretrained(str(folder / "pipeline"))
    return (folder / "pipeline").resolve()


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory) -> Path:
    return build_pipeline(tmp_path_factory.mktemp("sd"))


@pytest.fixture(scope="module")
def sd_v_dir(tmp_path_factory) -> Path:
    return build_pipeline(tmp_path_factory.mktemp("sd-v"), prediction_type="v_prediction", seed=1)


@pytest.fixture(scope="module")
def sd(sd_dir) -> LatentDiffusionModel:
    return load_model(str(sd_dir))


def test_pipeline_folder_loads_as_a_latent_model(sd, sd_dir) -> None:
    sd_layout = next(layout for layout in LAYOUTS if layout.kind == "Stable Diffusion pipeline")
    assert sd_layout.recognises(sd_dir) and isinstance(sd, LatentDiffusionModel)
    assert sd.name == str(sd_dir) and sd.device == torch.device("cpu") and sd.dtype == torch.float32
    assert (sd.image_channels, sd.sample_channels, sd.size_multiple) == (3, 4, 4)
    assert sd.sample_shape(64, 48) == (4, 24, 32) and sd.sample_shape(37, 29) == (4, 16, 20)
    assert not sd.schedule.clip_sample and sd.schedule.prediction_type == "epsilon"
    latent = sd.to_model_space(torch.zeros(3, 29, 37, dtype=torch.uint8))
    assert latent.shape == (4, 16, 20) and latent.dtype == torch.float32
    assert sd.to_pixels(latent, 37, 29).shape == (3, 29, 37)


def test_round_trip_decodes_bit_exact(sd, photo) -> None:
    result = pdc.encode_images([photo], model=sd, **FAST)[0]
    assert pdc.info(result.data)["model"] == sd.name and "prompt" not in pdc.info(result.data)
    decoded = pdc.decode(result.data)  # loads the model again by the path stored in the file
    assert decoded.tobytes() == result.reconstruction.tobytes()
    assert decoded.size == photo.size


def test_odd_image_sizes_are_padded_and_cropped(sd, photo) -> None:
    image = photo.crop((3, 5, 40, 34))  # 37 x 29
    result = pdc.encode_images([image], model=sd, steps=3, codebook_size=8, atoms=2, coef_levels=2, selection="mp")[0]
    assert result.reconstruction.size == (37, 29)
    assert pdc.decode(result.data, model=sd).tobytes() == result.reconstruction.tobytes()


def test_codebook_choices_move_towards_the_target(sd, photo) -> None:
    """With more bits the reconstruction approaches the VAE's own round trip (the encoder-decoder bound)."""
    target = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1)
    bound = Image.fromarray(sd.autoencoder_bound(target).permute(1, 2, 0).numpy())
    low = pdc.encode_images([photo], model=sd, steps=8, codebook_size=2, tile=0)[0].reconstruction
    high = pdc.encode_images([photo], model=sd, steps=8, codebook_size=64, atoms=4, tile=4)[0].reconstruction
    assert psnr(high, bound) > psnr(low, bound)


def test_prompt_is_stored_and_reused(sd, sd_dir, photo) -> None:
    plain = pdc.encode(photo, model=str(sd_dir), **FAST)
    prompted = pdc.encode(photo, model=str(sd_dir), prompt="a photo of a parrot", guidance=3.0, **FAST)
    info = pdc.info(prompted)
    assert (info["prompt"], info["guidance"]) == ("a photo of a parrot", 3.0)
    assert "Cond" in info["chunks"] and info["fingerprint"] != pdc.info(plain)["fingerprint"]
    reopened = Image.open(io.BytesIO(prompted))
    assert reopened.info["prompt"] == "a photo of a parrot"
    expected = pdc.encode_images([photo], model=sd, prompt="a photo of a parrot", guidance=3.0, **FAST)[0]
    assert expected.data == prompted
    assert reopened.convert("RGB").tobytes() == expected.reconstruction.tobytes()
    # the conditioning is part of the fingerprint: the same payload under another prompt is refused
    header, payload = container.parse(prompted)
    other = TextConditioning("a photo of a dog", 3.0).chunk()
    forged = container.pack(header.__class__(**{**header.__dict__, "chunks": (other,)}), payload)
    with pytest.raises(ModelMismatchError):
        pdc.decode(forged)
    # guidance 1: the conditional model alone, one UNet call per step, its own fingerprint
    single = pdc.info(pdc.encode(photo, model=sd, prompt="a photo of a parrot", **FAST))
    assert single["guidance"] == 1.0 and single["fingerprint"] not in (info["fingerprint"], pdc.info(plain)["fingerprint"])


def test_prompt_errors(sd, model, photo) -> None:
    with pytest.raises(InvalidParameterError, match="takes no text prompt"):
        pdc.encode(photo, model=model, prompt="a cat", **FAST)
    with pytest.raises(InvalidParameterError, match="tokens long"):
        pdc.encode(photo, model=sd, prompt="a red cat and a blue dog and a parrot", **FAST)
    with pytest.raises(InvalidParameterError, match="needs a prompt"):
        pdc.encode(photo, model=sd, guidance=7.5, **FAST)
    with pytest.raises(InvalidParameterError, match="guidance"):
        pdc.encode(photo, model=sd, prompt="a cat", guidance=float("nan"), **FAST)
    for body in (b"\x00" * 8, b"\x00" * 8 + b"\xff", TextConditioning("a").to_bytes()[:8].replace(b"\x00", b"\x7f")):
        with pytest.raises(CorruptFileError):
            TextConditioning.from_bytes(body)


def test_guidance_doubles_the_counted_decode_work(sd, photo) -> None:
    data = pdc.encode(photo, model=sd, prompt="a cat", guidance=2.0, **FAST)
    work = FAST["steps"] * photo.width * photo.height // sd.vae_factor**2  # counted in latent positions
    with pytest.raises(DecompressionBombError):
        pdc.decode(data, max_work=2 * work - 1)
    pdc.decode(data, max_work=2 * work)


def test_window_steps_outside_carry_no_bits(sd, photo) -> None:
    """The paper's adapted window (K > 1 only for timesteps 899..400), here on a 10-step schedule."""
    params = ddcm.DDCMParams(steps=10, codebook_size=256, tile=0, window=(899, 400))
    timesteps = sd.schedule.timesteps(10)
    assert params.step_sizes(timesteps) == [1, 256, 256, 256, 256, 256, 1, 1, 1]  # 888..444
    windowed = pdc.encode_images([photo], model=sd, **params.to_dict())[0]
    full = ddcm.payload_bound(replace(params, window=None), sd, *photo.size)
    assert pdc.info(windowed.data)["payload_bytes"] == ddcm.payload_bound(params, sd, *photo.size) < full
    assert pdc.decode(windowed.data).tobytes() == windowed.reconstruction.tobytes()


def test_v_prediction_pipeline(sd_v_dir, photo) -> None:
    model = load_model(str(sd_v_dir))
    assert model.schedule.prediction_type == "v_prediction"
    result = pdc.encode_images([photo], model=model, **FAST)[0]
    assert pdc.decode(result.data).tobytes() == result.reconstruction.tobytes()


def test_fingerprint_is_the_same_whatever_the_dtype(sd_dir) -> None:
    """The weights are hashed as float32 before conversion, so a bfloat16 encoder's file names the same model."""
    clear_model_cache()
    fp32 = load_model(str(sd_dir))
    bf16 = load_model(str(sd_dir), dtype="bfloat16")
    assert bf16.unet.dtype == torch.bfloat16 and bf16.vae.dtype == torch.float32
    assert bf16.fingerprint == fp32.fingerprint
    x = torch.randn(fp32.sample_shape(16, 16))
    assert bf16.predict_x0(x, 500).dtype == torch.float32


def test_large_images_go_through_the_vae_in_tiles(sd, photo, monkeypatch) -> None:
    monkeypatch.setattr(latent_module, "VAE_TILING_PIXELS", 32 * 32)  # the tiny VAE's tiles are 32 x 32
    tiles = []
    monkeypatch.setattr(sd.vae, "_tiled_encode", lambda x, _f=sd.vae._tiled_encode: tiles.append(x.shape) or _f(x))
    result = pdc.encode_images([photo], model=sd, **FAST)[0]
    assert tiles
    assert pdc.decode(result.data, model=sd).tobytes() == result.reconstruction.tobytes()


def test_sd_model_names_resolve_through_the_hugging_face_cache(tmp_path, monkeypatch, sd_dir, photo) -> None:
    import shutil

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="SD 2.1 base"):
        load_model("sd21-base")
    repo = tmp_path / "hub" / "models--stabilityai--stable-diffusion-2-1-base"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(sd_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    data = pdc.encode(photo, model="sd21-base", **FAST)
    assert pdc.info(data)["model"] == "stabilityai/stable-diffusion-2-1-base"
    rows = {row["name"]: row for row in pdc.models.available_models()}
    assert rows["stabilityai/stable-diffusion-2-1-base"]["available"]
    assert rows["stabilityai/stable-diffusion-2-1-base"]["alias"] == "sd21-base"


def test_fp16_only_weights_load(tmp_path, sd_dir) -> None:
    import shutil

    folder = tmp_path / "fp16"
    shutil.copytree(sd_dir, folder)
    for part, stem in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                       ("text_encoder", "model")):
        (folder / part / f"{stem}.safetensors").rename(folder / part / f"{stem}.fp16.safetensors")
    assert load_model(str(folder)).fingerprint == load_model(str(sd_dir)).fingerprint


def test_a_critical_cond_chunk_is_known() -> None:
    assert CHUNK_TAG in container.KNOWN_CHUNK_TAGS and CHUNK_TAG[:1].isupper()
