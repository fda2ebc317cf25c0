"""Shared fixtures: tiny real diffusers UNets built in the test session, and a real photo crop."""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel
from PIL import Image

from pillow_diffcodec.models import PixelDiffusionModel
from pillow_diffcodec.schedule import NoiseSchedule


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    """Restore torch's thread count after each test: training scripts and determinism tests set their own
    (codecs pin theirs while they run, but training and benchmarks compute at the caller's count)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)

DATA = Path(__file__).parent / "data"


def tiny_unet(seed: int = 0, channels: int = 3, attention: bool = True) -> UNet2DModel:
    """A randomly initialised UNet2DModel of the google/ddpm-* architecture family, ~30k parameters.

    Without ``attention`` its cost stays linear in the image size (for large test images).
    """
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=16,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D" if attention else "DownBlock2D"),
        up_block_types=("AttnUpBlock2D" if attention else "UpBlock2D", "UpBlock2D"),
        add_attention=attention,
        norm_num_groups=4,
    )


def tiny_model(seed: int = 0, name: str = "tiny-test", **schedule: object) -> PixelDiffusionModel:
    config = {"num_train_timesteps": 1000, "beta_schedule": "linear", **schedule}
    return PixelDiffusionModel(tiny_unet(seed), NoiseSchedule.from_config(config), name)


def identity_denoiser() -> PixelDiffusionModel:
    """A real UNet2DModel whose output layer is zeroed: it predicts epsilon = 0, so x0hat = x_t / sqrt(abar_t).

    A stand-in for a trained prior in quality tests: the estimate follows the chain, so the
    codebook choices alone decide how close the result gets to the target.
    """
    unet = tiny_unet(0)
    torch.nn.init.zeros_(unet.conv_out.weight)
    torch.nn.init.zeros_(unet.conv_out.bias)
    config = {"num_train_timesteps": 1000, "beta_schedule": "linear"}
    return PixelDiffusionModel(unet, NoiseSchedule.from_config(config), "identity-denoiser")


@pytest.fixture(scope="session")
def model() -> PixelDiffusionModel:
    return tiny_model()


@pytest.fixture(scope="session")
def photo() -> Image.Image:
    """64x48 RGB crop of Kodak 23 (see tests/data/SOURCE.md)."""
    with Image.open(DATA / "kodim23_crop.png") as image:
        return image.convert("RGB")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """The tiny model saved as a real DDPMPipeline folder, for code paths that load models by reference."""
    from diffusers import DDPMPipeline, DDPMScheduler

    folder = tmp_path_factory.mktemp("models") / "tiny-ddpm"
    unet = tiny_unet(0, attention=False)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(folder)
    return folder.resolve()


FAST = dict(steps=3, codebook_size=16)


def psnr(a: Image.Image, b: Image.Image) -> float:
    """Peak signal-to-noise ratio in dB of two same-size 8-bit images (inf when identical)."""
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


@pytest.fixture()
def options(model_dir) -> dict:
    """Fast encode options with the tiny model loaded by path (as a user would pass it)."""
    return dict(model=str(model_dir), **FAST)


def moto_s3(*buckets: str) -> Iterator[dict]:
    """storage_options for a real S3 API (moto's server on a 127.0.0.1 port) holding empty ``buckets``."""
    import moto.server
    import s3fs

    server = moto.server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # moto keeps its buckets per process, not per server: start from an empty S3 (other modules use it too)
    urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST"))
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": f"http://{host}:{port}"}}
    fs = s3fs.S3FileSystem(**options)
    for bucket in buckets:
        fs.mkdir(bucket)
    yield options
    server.stop()
