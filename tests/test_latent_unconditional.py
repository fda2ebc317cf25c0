"""Unconditional latent pipelines (the layout of ``builtin-latent``): a tiny UNet2DModel + AutoencoderKL folder
written by the same export code as the trainer, loaded by path through the registry and Pillow."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec import limits
from pillow_diffcodec.errors import DecompressionBombError, InvalidParameterError, ModelMismatchError
from pillow_diffcodec.models import LAYOUTS, LatentDiffusionModel, clear_model_cache, load_model, pixels_per_position
from pillow_diffcodec.training import latent as trainer

from .test_limits import header_only

FAST = dict(steps=4, codebook_size=16, tile=0)
TINY_AUTOENCODER = dict(
    trainer.AUTOENCODER, block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, sample_size=32,
)
TINY_UNET = dict(trainer.UNET, sample_size=8, block_out_channels=(8, 16), down_block_types=("DownBlock2D",) * 2,
                 up_block_types=("UpBlock2D",) * 2, norm_num_groups=4, layers_per_block=1)


def build_folder(folder: Path, seed: int = 0) -> Path:
    """A tiny unconditional latent pipeline (VAE factor 2, UNet factor 2) exported as the trainer exports one."""
    from diffusers import AutoencoderKL, UNet2DModel

    torch.manual_seed(seed)
    vae, unet = AutoencoderKL(**TINY_AUTOENCODER), UNet2DModel(**TINY_UNET)
    photos = [torch.full((3, 160, 160), 128, dtype=torch.uint8)]
    trainer.export("autoencoder", vae, photos, {"seed": seed}, [1.0, 0.5], folder, "cpu")
    trainer.export("diffusion", unet, photos, {"seed": seed}, [1.0, 0.5], folder, "cpu")
    return folder.resolve()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return build_folder(tmp_path_factory.mktemp("latent") / "pipeline")


def test_the_folder_loads_through_the_registry_as_an_unconditional_latent_model(folder) -> None:
    layout = next(layout for layout in LAYOUTS if layout.recognises(folder))
    assert layout.kind == "unconditional latent pipeline"
    model = load_model(str(folder))
    assert isinstance(model, LatentDiffusionModel) and model.text_encoder is None
    assert (model.sample_channels, model.vae_factor, model.size_multiple) == (4, 2, 4)
    assert model.sample_shape(64, 48) == (4, 24, 32)
    assert pixels_per_position(str(folder)) == 4 and pixels_per_position(model) == 4


def test_pillow_round_trip_is_bit_exact_and_a_prompt_is_refused(folder, photo) -> None:
    model = load_model(str(folder))
    result = pdc.encode_images([photo], model=model, **FAST)[0]
    buffer = io.BytesIO()
    photo.save(buffer, format="DDCM", model=str(folder), **FAST)
    assert buffer.getvalue() == result.data
    with Image.open(io.BytesIO(result.data)) as image:
        assert image.format == "DDCM" and image.size == photo.size
        assert image.convert("RGB").tobytes() == result.reconstruction.tobytes()
    with pytest.raises(InvalidParameterError, match="takes no text prompt"):
        pdc.encode(photo, model=model, prompt="a cat", **FAST)


def test_the_fingerprint_covers_the_unet_and_the_vae_decoder(tmp_path, folder) -> None:
    clear_model_cache()
    base = load_model(str(folder)).fingerprint
    assert load_model(str(folder), dtype="bfloat16").fingerprint == base
    for part, parameter in (("unet", "conv_out.bias"), ("vae", "decoder.conv_out.bias")):
        other = build_folder(tmp_path / part)
        model = load_model(str(other))
        assert model.fingerprint == base  # same seed, same weights, another folder: the same model
        component = model.unet if part == "unet" else model.vae
        with torch.no_grad():
            dict(component.named_parameters())[parameter].add_(0.01)
        component.save_pretrained(other / part)
        clear_model_cache()
        assert load_model(str(other)).fingerprint != base, part


def test_the_decode_work_limit_counts_latent_positions(folder, monkeypatch) -> None:
    """64 x 64 pixels are 32 x 32 = 1024 latent positions for this VAE (factor 2): 10 steps cost 10240 units."""
    monkeypatch.setattr(limits, "MAX_DECODE_WORK", 10 * 1024)
    with pytest.raises(ModelMismatchError):  # within the limit: refused only because the header names no real weights
        pdc.decode(header_only(64, 64, 10, model=str(folder)))
    with pytest.raises(DecompressionBombError, match=r"11 model calls on 64x64 pixels \(1024 latent positions\)"):
        pdc.decode(header_only(64, 64, 11, model=str(folder)))
    with pytest.raises(DecompressionBombError, match="10 model calls on 64x64 pixels ="):  # a pixel model: pixels
        pdc.decode(header_only(64, 64, 10))


def test_the_decoder_stage_keeps_the_latent_space(tmp_path, folder, photo) -> None:
    """Fine-tuning the decoder changes only the decoder: the encoder (and so the latent space the UNet was
    trained on) and the scaling factor stay as they were, and the folder still loads."""
    import shutil

    from diffusers import AutoencoderKL

    pipeline = Path(shutil.copytree(folder, tmp_path / "pipeline"))
    data = tmp_path / "photos"
    data.mkdir()
    for number in range(2):
        photo.resize((160, 160)).rotate(90 * number).save(data / f"p{number}.png")
    before = AutoencoderKL.from_pretrained(str(pipeline / "vae"), low_cpu_mem_usage=False).float()
    trainer.train("decoder", (data,), minutes=5, max_steps=3, output=pipeline, state_path=tmp_path / "state.pt")
    after = AutoencoderKL.from_pretrained(str(pipeline / "vae"), low_cpu_mem_usage=False).float()
    assert not all(torch.equal(t, after.state_dict()[n]) for n, t in before.state_dict().items() if n.startswith("decoder."))
    assert all(torch.equal(t, after.state_dict()[n]) for n, t in before.state_dict().items() if n.startswith("encoder."))
    assert after.config.scaling_factor == before.config.scaling_factor
    clear_model_cache()
    assert isinstance(load_model(str(pipeline)), LatentDiffusionModel)
