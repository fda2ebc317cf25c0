"""The built-in latent model ``builtin-latent``: shipped, offline, and used by every latent path (DDCM through
Pillow with rate control in latent positions, PSC)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec.models import BUILTIN_MODELS, load_model

from .conftest import psnr
from .test_psc import TINY

SAMPLE = Path(__file__).resolve().parents[1] / "ray_jobs" / "sample" / "nature" / "tiger.png"


@pytest.fixture(scope="module")
def tiger() -> Image.Image:
    with Image.open(SAMPLE) as image:
        return image.convert("RGB")


def test_builtin_latent_is_shipped_small_and_loads_offline() -> None:
    folder = BUILTIN_MODELS["builtin-latent"]
    for part in ("vae", "unet"):
        assert (folder / part / "diffusion_pytorch_model.safetensors").stat().st_size <= 8 * 2**20  # float16
    assert (folder / "MODEL_CARD.md").is_file() and (folder / "training.json").is_file()
    script = ("import pillow_diffcodec.models as m; x = m.load_model('builtin-latent'); "
              "print(x.name, type(x).__name__, x.vae_factor, x.size_multiple, x.text_encoder is None)")
    env = {"HF_HUB_OFFLINE": "1", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["builtin-latent", "LatentDiffusionModel", "8", "32", "True"]


def test_a_preset_through_pillow_lands_on_its_rate_and_decodes_bit_exactly(tiger) -> None:
    """quality=50 aims at 0.4 bpp; rate control counts the 12 x 8 latent positions of this 96 x 64 image."""
    buffer = io.BytesIO()
    tiger.save(buffer, format="DDCM", model="builtin-latent", quality=50)
    data = buffer.getvalue()
    assert 0.3 < pdc.info(data)["bpp"] <= 0.4
    expected = pdc.encode_images([tiger], model="builtin-latent", quality=50)[0]
    assert expected.data == data
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "DDCM" and image.size == tiger.size
        assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(expected.reconstruction))
    sample = pdc.generate(*tiger.size, model="builtin-latent", steps=20, codebook_size=64, rng_seed=0)
    assert psnr(tiger, expected.reconstruction) > psnr(tiger, sample.reconstruction) + 2


def test_psc_codes_on_the_latent_model(tiger) -> None:
    crop = tiger.crop((0, 0, 32, 32))
    result = pdc.encode_images([crop], codec="PSC", model="builtin-latent", **TINY)[0]
    assert pdc.info(result.data)["model"] == "builtin-latent"
    assert np.array_equal(np.asarray(pdc.decode(result.data)), np.asarray(result.reconstruction))


def test_a_prompt_is_refused_with_a_clear_error(tiger) -> None:
    with pytest.raises(pdc.InvalidParameterError, match="takes no text prompt"):
        pdc.encode(tiger, model=load_model("builtin-latent"), prompt="a tiger")
