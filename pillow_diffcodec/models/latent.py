"""Latent diffusion models: a diffusers Stable Diffusion pipeline folder as a :class:`~.base.DiffusionModel`.

Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models" (CVPR 2022): a DDPM
runs on the latents of an autoencoder. DDCM (Ohayon et al. 2025, Sec. 5 and App. B) codes Stable
Diffusion 2.1 this way: the target is the VAE encoding ``x0 = scaling_factor * E(image).mean``, the
sampler and codebooks work on the (4, H/8, W/8) latent, and the decoder's last clean estimate goes
through the VAE decoder ``D(x0 / scaling_factor)``.

The folder layout is the one ``StableDiffusionPipeline.save_pretrained`` writes and the Hugging Face
repos of SD 1.4/1.5 and 2.1 (base: epsilon, 768: v-prediction) ship: ``unet/`` (UNet2DConditionModel),
``vae/`` (AutoencoderKL), ``text_encoder/`` + ``tokenizer/`` (CLIP) and
``scheduler/scheduler_config.json``. Only the fp16 variant of the weights may be present. An
*unconditional* latent pipeline (the built-in ``builtin-latent``, :mod:`pillow_diffcodec.training.latent`)
has the same folders without ``text_encoder/`` and ``tokenizer/``, and its ``unet/`` is a plain
``UNet2DModel``; it takes no prompt.

Conditioning (text pipelines): unconditional by default (the empty prompt's CLIP embedding, computed once per model);
:meth:`LatentDiffusionModel.with_conditioning` gives a view with a text prompt and classifier-free
guidance (DDCM App. B.6; see :mod:`pillow_diffcodec.conditioning`). The UNet runs in the model
dtype; the VAE and text encoder always run in float32 (the fp16 SD VAE overflows on some images),
and everything the codec computes from the outputs (estimates, residuals, codebook search) is float32.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import struct
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..conditioning import TextConditioning
from ..errors import InvalidParameterError, ModelNotFoundError, UnsupportedImageError
from ..schedule import NoiseSchedule
from .base import DEFAULT_DTYPE, place, resolve_device

COMPONENTS = ("unet", "vae", "text_encoder")
STANDARD_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "model.safetensors",
                    "pytorch_model.bin")
VAE_TILING_PIXELS = 1 << 20  # padded images above 1 MP go through the VAE in tiles of its sample_size
VAE_DECODER_PREFIXES = ("decoder.", "post_quant_conv.")


def find_latent_layout(directory: Path) -> bool:
    """Whether ``directory`` holds a Stable Diffusion pipeline (unet, vae, text encoder, tokenizer, scheduler)."""
    return (
        all((directory / part / "config.json").is_file() for part in COMPONENTS)
        and (directory / "tokenizer").is_dir()
        and (directory / "scheduler" / "scheduler_config.json").is_file()
    )


def find_unconditional_latent_layout(directory: Path) -> bool:
    """Whether ``directory`` holds an unconditional latent pipeline: ``unet/`` and ``vae/`` (each with config.json)
    and ``scheduler/scheduler_config.json``, no text encoder."""
    return (
        all((directory / part / "config.json").is_file() for part in ("unet", "vae"))
        and not (directory / "text_encoder").exists()
        and (directory / "scheduler" / "scheduler_config.json").is_file()
    )


def vae_factor_of(directory: Path) -> int:
    """The VAE's down-sampling factor per side read from ``vae/config.json`` (no weights are loaded); 1 when
    ``directory`` holds no latent pipeline, so that callers can count model positions before loading."""
    config = directory / "vae" / "config.json"
    if not (find_latent_layout(directory) or find_unconditional_latent_layout(directory)):
        return 1
    try:
        blocks = json.loads(config.read_text(encoding="utf-8"))["block_out_channels"]
        return 2 ** (len(blocks) - 1)
    except (OSError, ValueError, KeyError, TypeError):
        return 1  # an unreadable config: counted as pixels (the stricter limit); loading will say what is wrong


def _variant(folder: Path) -> str | None:
    """``"fp16"`` when a component folder holds only the fp16 variant of its weights (``*.fp16.safetensors``)."""
    names = {path.name for path in folder.iterdir()}
    if names.intersection(STANDARD_WEIGHTS) or any(name.endswith(".index.json") for name in names):
        return None
    return "fp16" if any(".fp16." in name for name in names) else None


def _hash_tensors(digest: Any, named: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Feed ``f"{name}:{shape}"`` and the float32 little-endian bytes of each tensor, in sorted-name order."""
    for key, tensor in sorted(named, key=lambda item: item[0]):
        values = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous()
        digest.update(f"{key}:{tuple(values.shape)}".encode())
        digest.update(values.numpy().data)


def weights_digest(unet: Any, vae: Any, text_encoder: Any | None, schedule: NoiseSchedule) -> bytes:
    """BLAKE2b-256 of what decoding depends on apart from the prompt (docs/FORMAT.md, "Model fingerprint").

    The schedule, the VAE scaling factor, the UNet, the VAE decoder (``decoder.*``, ``post_quant_conv.*``)
    and the text encoder (none in an unconditional pipeline), each weight as float32, so the digest does
    not depend on the device or dtype the model later runs in.
    """
    digest = hashlib.blake2b(digest_size=32)
    digest.update(b"latent|" + schedule.canonical_bytes())
    digest.update(f"|scaling_factor={float(vae.config.scaling_factor)!r}".encode())
    _hash_tensors(digest, (("unet." + k, v) for k, v in unet.state_dict().items()))
    _hash_tensors(digest, (("vae." + k, v) for k, v in vae.state_dict().items() if k.startswith(VAE_DECODER_PREFIXES)))
    if text_encoder is not None:
        _hash_tensors(digest, (("text_encoder." + k, v) for k, v in text_encoder.state_dict().items()))
    return digest.digest()


class LatentDiffusionModel:
    """A UNet on VAE latents, with its text conditioning when it has a text encoder (a :class:`~.base.DiffusionModel`).

    ``fingerprint`` covers the weights (:func:`weights_digest`) and the conditioning actually used:
    the token ids fed to the text encoder and, with classifier-free guidance, the scale. Without a text
    encoder (``text_encoder=None``, ``tokenizer=None``) the UNet is called without text and a prompt is refused.
    """

    def __init__(
        self,
        unet: Any,
        vae: Any,
        text_encoder: Any | None,
        tokenizer: Any | None,
        schedule: NoiseSchedule,
        name: str,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = DEFAULT_DTYPE,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = dtype
        # latents are unbounded: x0hat is never clipped, whatever the scheduler config says
        self.schedule = replace(schedule, clip_sample=False)
        self.name = name
        self.weights_digest = weights_digest(unet, vae, text_encoder, self.schedule)  # before any dtype change
        self.unet = place(unet, self.device, dtype).eval().requires_grad_(False)
        self.vae = place(vae, self.device, torch.float32).eval().requires_grad_(False)
        if text_encoder is not None:
            text_encoder = text_encoder.to(device=self.device, dtype=torch.float32).eval().requires_grad_(False)
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.unet_factor = 2 ** (len(unet.config.block_out_channels) - 1)
        self._set_conditioning(None)

    @classmethod
    def from_directory(
        cls,
        directory: str | Path,
        *,
        name: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = DEFAULT_DTYPE,
    ) -> LatentDiffusionModel:
        """Load a local Stable Diffusion pipeline folder, or an unconditional latent pipeline (nothing is downloaded)."""
        from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel
        from transformers import CLIPTextModel, CLIPTokenizer

        directory = Path(directory).expanduser().resolve()
        text = find_latent_layout(directory)
        if not text and not find_unconditional_latent_layout(directory):
            raise ModelNotFoundError(
                f"No latent diffusion pipeline in {str(directory)!r}: expected unet/ and vae/ (each with config.json "
                "and weights), scheduler/scheduler_config.json and, for a text-conditioned one, text_encoder/ and "
                "tokenizer/"
            )
        text_encoder = tokenizer = None
        try:
            # low_cpu_mem_usage=False: no `accelerate` needed; float32 first, so the fingerprint sees exact weights
            unet, vae = (
                kind.from_pretrained(str(directory / part), local_files_only=True, low_cpu_mem_usage=False,
                                     variant=_variant(directory / part)).float()
                for kind, part in ((UNet2DConditionModel if text else UNet2DModel, "unet"), (AutoencoderKL, "vae"))
            )
            if text:
                text_encoder = CLIPTextModel.from_pretrained(
                    str(directory / "text_encoder"), local_files_only=True, variant=_variant(directory / "text_encoder")
                ).float()
                tokenizer = CLIPTokenizer.from_pretrained(str(directory / "tokenizer"), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelNotFoundError(f"Cannot load the latent diffusion pipeline in {str(directory)!r}: {exc}") from None
        with (directory / "scheduler" / "scheduler_config.json").open(encoding="utf-8") as handle:
            schedule = NoiseSchedule.from_config(json.load(handle))
        return cls(unet, vae, text_encoder, tokenizer, schedule, name or str(directory), device=device, dtype=dtype)

    # -- conditioning ---------------------------------------------------------------------------------------

    def with_conditioning(self, conditioning: TextConditioning | None) -> LatentDiffusionModel:
        """A view of this model (sharing its weights) conditioned on a prompt; None: unconditional."""
        if conditioning == self.conditioning:
            return self
        view = copy.copy(self)
        view._set_conditioning(conditioning)
        return view

    def token_ids(self, prompt: str) -> list[int]:
        """CLIP token ids of ``prompt`` padded to the text encoder's length; too long a prompt is refused."""
        length = int(self.tokenizer.model_max_length)
        ids = list(self.tokenizer(prompt, padding="max_length", max_length=length, truncation=False).input_ids)
        if len(ids) > length:
            raise InvalidParameterError(
                f"The prompt is {len(ids)} tokens long; model {self.name!r} reads at most {length} (shorten it)"
            )
        return ids

    def _set_conditioning(self, conditioning: TextConditioning | None) -> None:
        """Fix the prompts fed to the text encoder (empty, prompt, or both for guidance) and the fingerprint."""
        if self.text_encoder is None:
            if conditioning is not None:
                raise InvalidParameterError(
                    f"Model {self.name!r} is an unconditional latent model and takes no text prompt"
                )
            self.conditioning, self._embeddings = None, None
            self._fingerprint = hashlib.blake2b(self.weights_digest, digest_size=4).digest()
            return
        self.conditioning = conditioning
        if conditioning is None:
            prompts = [""]
        elif conditioning.unet_calls_per_step == 1:
            prompts = [conditioning.prompt]
        else:
            prompts = ["", conditioning.prompt]
        ids = [self.token_ids(prompt) for prompt in prompts]
        digest = hashlib.blake2b(self.weights_digest, digest_size=4)
        for sequence in ids:
            digest.update(b"|tokens:" + struct.pack(f"<{len(sequence)}i", *sequence))
        if len(ids) == 2:
            digest.update(b"|guidance:" + struct.pack("<d", conditioning.guidance))
        self._fingerprint = digest.digest()
        with torch.inference_mode():
            tokens = torch.tensor(ids, dtype=torch.long, device=self.device)
            self._embeddings = self.text_encoder(tokens)[0].to(self.dtype)

    @property
    def fingerprint(self) -> bytes:
        return self._fingerprint

    # -- the DiffusionModel interface -----------------------------------------------------------------------

    @property
    def image_channels(self) -> int:
        return int(self.vae.config.in_channels)

    @property
    def sample_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def size_multiple(self) -> int:
        """Image sides are padded to a multiple of this: the VAE's down-sampling times the UNet's."""
        return self.vae_factor * self.unet_factor

    def sample_shape(self, width: int, height: int) -> tuple[int, int, int]:
        """Latent shape (C, H', W') for an image of this size, padded to :attr:`size_multiple`."""
        m = self.size_multiple
        return self.sample_channels, math.ceil(height / m) * m // self.vae_factor, math.ceil(width / m) * m // self.vae_factor

    def _vae(self, height: int, width: int) -> Any:
        """The VAE, set to work in tiles (diffusers' tiled encode/decode) for padded images above
        :data:`VAE_TILING_PIXELS`, so memory stays bounded; the choice depends on the size alone."""
        (self.vae.enable_tiling if height * width > VAE_TILING_PIXELS else self.vae.disable_tiling)()
        return self.vae

    @torch.inference_mode()
    def to_model_space(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (3, H, W) -> float32 latent ``scaling_factor * E(x).mean`` of :meth:`sample_shape`."""
        if pixels.shape[0] != self.image_channels:
            raise UnsupportedImageError(
                f"Model {self.name!r} codes {self.image_channels}-channel images, got {pixels.shape[0]}"
            )
        x = pixels.to(device=self.device, dtype=torch.float32) / 127.5 - 1.0
        m = self.size_multiple
        pad_h, pad_w = -pixels.shape[1] % m, -pixels.shape[2] % m
        if pad_h or pad_w:
            mode = "reflect" if pad_h < x.shape[1] and pad_w < x.shape[2] else "replicate"
            x = torch.nn.functional.pad(x[None], (0, pad_w, 0, pad_h), mode=mode)[0]
        latent = self._vae(*x.shape[1:]).encode(x[None]).latent_dist.mean * float(self.vae.config.scaling_factor)
        return latent[0].to(torch.float32)

    @torch.inference_mode()
    def to_pixels(self, sample: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """float32 latent -> uint8 pixels (3, height, width): ``D(x0 / scaling_factor)``, cropped."""
        z = sample[None].to(device=self.device, dtype=torch.float32) / float(self.vae.config.scaling_factor)
        vae = self._vae(z.shape[2] * self.vae_factor, z.shape[3] * self.vae_factor)
        x = vae.decode(z).sample[0, :, :height, :width]
        return ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)

    def to_image_space(self, samples: torch.Tensor) -> torch.Tensor:
        """Latents (N, C, H', W') -> decoded images (N, 3, H' f, W' f) in about [-1, 1], differentiable."""
        z = samples.to(device=self.device, dtype=torch.float32) / float(self.vae.config.scaling_factor)
        return self._vae(z.shape[2] * self.vae_factor, z.shape[3] * self.vae_factor).decode(z).sample

    def autoencoder_bound(self, pixels: torch.Tensor) -> torch.Tensor:
        """``D(E(x))``: the VAE's own round trip of uint8 pixels (3, H, W), the best any latent codec can do
        with this model (the paper's encoder-decoder bound)."""
        return self.to_pixels(self.to_model_space(pixels), pixels.shape[2], pixels.shape[1])

    def predict_x0(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """Clean latent estimate (float32) for one noisy latent (C, H, W) at training timestep t."""
        return self.predict_x0_batch(x_t[None], t)[0]

    @torch.inference_mode()
    def predict_x0_batch(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """Clean latent estimates (float32) for a batch (B, C, H, W) at training timestep t, in one UNet call,
        with classifier-free guidance when set.

        With guidance ``w``: ``out = out(empty) + w (out(prompt) - out(empty))`` (Ho & Salimans 2022,
        eq. 6, on the epsilon or v output), then DDPM eq. 15 / v-prediction for ``x0hat``.
        """
        embeddings = self._embeddings
        batch = x_t.shape[0]
        n = 1 if embeddings is None else embeddings.shape[0]
        x = x_t.to(self.dtype).repeat(n, 1, 1, 1)  # [empty x B, prompt x B] with guidance
        timesteps = torch.full((n * batch,), t, device=self.device)
        text = {} if embeddings is None else {"encoder_hidden_states": embeddings.repeat_interleave(batch, dim=0)}
        output = self.unet(x, timesteps, **text).sample.to(torch.float32)
        if n == 2:
            output = output[:batch] + self.conditioning.guidance * (output[batch:] - output[:batch])
        return self.schedule.predict_x0(output, x_t, t)
