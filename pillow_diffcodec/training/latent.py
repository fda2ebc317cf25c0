"""Train ``builtin-latent``: a small autoencoder, then a DDPM on its latents (CPU by default, resumable).

Latent diffusion (Rombach et al., CVPR 2022, Sec. 3): an autoencoder E/D maps an image to a latent 8x
smaller per side with 4 channels, and a DDPM (Ho et al. 2020, Algorithm 1) learns the distribution of
``z = scaling_factor * E(x).mean``. DDCM (Ohayon et al. 2025, Sec. 5) then codes the latent with the same
codebook sampler as pixels, and each model call costs 64x fewer positions than in pixel space.

Two stages, each its own resumable state:

* ``--stage autoencoder``: a diffusers ``AutoencoderKL`` (4 latent channels, blocks (32, 64, 128, 128):
  8x down-sampling, no attention, so it runs at any size) trained on random crops with
  ``L1 + MSE + 1e-6 KL`` (Rombach et al. Sec. 3.1: a slight KL keeps the latent scale tame). At export
  its ``scaling_factor`` is set to 1 / std of the latents of the training crops, as SD's is.
* ``--stage decoder`` (optional, after either): fine-tunes the autoencoder's decoder on ``D(E(x).mean)``
  with ``L1 + MSE`` while the encoder stays frozen, so the latent space, and the DDPM trained on it, stay
  valid (as SD's fine-tuned VAE decoders were made); it raises the ceiling of every latent codec.
* ``--stage diffusion``: the frozen autoencoder encodes every photo (and its mirror image) once; batches
  are random crops of those latents; a diffusers ``UNet2DModel`` (blocks (32, 64, 128), no attention) on
  them learns epsilon with SD's schedule (scaled-linear betas 0.00085..0.012, 1000 steps).

Both stages write the model folder (``models/latent.py`` loads it: ``vae/``, ``unet/``, ``scheduler/``,
no text encoder) and ``training.json``; states keep the weights, their EMA and the optimiser, and are
saved on the CPU, so a GPU run (``--device cuda --batch 64``) resumes anywhere. Batches are a pure
function of (seed, step). Never trains on Kodak.

    python -m pillow_diffcodec.training.latent --stage autoencoder --minutes 60
    python -m pillow_diffcodec.training.latent --stage diffusion --minutes 60
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InvalidParameterError
from ..models.base import resolve_device
from .data import load_photos, random_crops, to_unit_range
from .loop import plot_loss, save_state, update_ema, warm_up

MODELS = Path(__file__).resolve().parents[1] / "models"
OUTPUT = MODELS / "builtin-latent"
STATES = Path("training-states")  # not in the repository: weights are committed once per release, states never
DATA = (Path("../shared/data/train"), Path("../shared/data/train-unsplash"))
STAGES = ("autoencoder", "diffusion", "decoder")
AUTOENCODER = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 128, 128), layers_per_block=1,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=16,
    sample_size=256, mid_block_add_attention=False,
)
# (32, 64, 128) x 2 layers: 3.6M parameters, about 19x cheaper per call on a 768x512 image's latent than the
# pixel model on its pixels (one CPU thread); (64, 128, 256) would be 14.4M parameters and only 6x cheaper.
UNET = dict(
    sample_size=32, in_channels=4, out_channels=4, block_out_channels=(32, 64, 128), layers_per_block=2,
    down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3, norm_num_groups=16,
)
SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                 clip_sample=False, prediction_type="epsilon")
KL_WEIGHT = 1e-6
# per stage: crop side in pixels, batch, learning rate, warm-up steps, EMA decay
SETTINGS = {"autoencoder": (128, 8, 2e-4, 200, 0.999), "diffusion": (256, 16, 2e-4, 200, 0.999),
            "decoder": (128, 8, 1e-4, 100, 0.999)}


def autoencoder_loss(vae: Any, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``L1 + MSE + KL_WEIGHT * KL`` of a batch in [-1, 1]; also returns the batch PSNR (dB) of the round trip."""
    posterior = vae.encode(x).latent_dist
    recon = vae.decode(posterior.sample()).sample
    mse = (recon - x).square().mean()
    loss = (recon - x).abs().mean() + mse + KL_WEIGHT * posterior.kl().mean()
    return loss, float(10 * torch.log10(4 / mse.detach()))


def decoder_loss(vae: Any, x: torch.Tensor) -> torch.Tensor:
    """``L1 + MSE`` of ``D(E(x).mean)`` with the encoder frozen: the latent the codecs code is the mean."""
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
    recon = vae.decode(z).sample
    return (recon - x).abs().mean() + (recon - x).square().mean()


def latent_cache(vae: Any, photos: list[torch.Tensor], device: str) -> list[torch.Tensor]:
    """``scaling_factor * E(photo).mean`` of every photo and of its mirror image (CPU float32 tensors)."""
    cache = []
    scale = float(vae.config.scaling_factor)
    with torch.inference_mode():
        for photo in photos:
            x = to_unit_range(photo)[None].to(device)
            height, width = (x.shape[2] // 8) * 8, (x.shape[3] // 8) * 8
            x = x[:, :, :height, :width]
            for image in (x, x.flip(-1)):
                cache.append((vae.encode(image).latent_dist.mean[0] * scale).cpu())
    return cache


def latent_crops(latents: list[torch.Tensor], seed: int, step: int, size: int, crop: int) -> torch.Tensor:
    """Batch ``step`` of random ``crop`` x ``crop`` latent crops (mirrors are cached), a pure function of (seed, step)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    crops = []
    for _ in range(size):
        z = latents[int(torch.randint(len(latents), (1,), generator=gen))]
        top = int(torch.randint(z.shape[1] - crop + 1, (1,), generator=gen))
        left = int(torch.randint(z.shape[2] - crop + 1, (1,), generator=gen))
        crops.append(z[:, top : top + crop, left : left + crop])
    return torch.stack(crops)


def _networks(stage: str, device: str, output: Path) -> tuple[Any, Any]:
    from diffusers import AutoencoderKL, UNet2DModel

    if stage == "decoder":  # the exported autoencoder, its encoder frozen: the latent space stays the UNet's
        model, ema = _frozen_autoencoder(output, device), _frozen_autoencoder(output, device)
        for part in (model.decoder, model.post_quant_conv):
            part.requires_grad_(True)
        return model.train(), ema

    make = (lambda: AutoencoderKL(**AUTOENCODER)) if stage == "autoencoder" else (lambda: UNet2DModel(**UNET))
    model, ema = make().to(device), make().to(device)
    ema.load_state_dict(model.state_dict())
    return model, ema.requires_grad_(False)


def _frozen_autoencoder(output: Path, device: str) -> Any:
    from diffusers import AutoencoderKL

    if not (output / "vae" / "config.json").is_file():
        raise SystemExit(f"No trained autoencoder in {output / 'vae'}: run --stage autoencoder first")
    vae = AutoencoderKL.from_pretrained(str(output / "vae"), local_files_only=True, low_cpu_mem_usage=False)
    return vae.float().to(device).eval().requires_grad_(False)


def scaling_factor(vae: Any, photos: list[torch.Tensor], seed: int, device: str, count: int = 64) -> float:
    """1 / std of the latent means of ``count`` random 128 px training crops (Rombach et al. Sec. 4.3.2, as SD)."""
    with torch.inference_mode():
        x = random_crops(photos, seed + 1, 0, count, 128).to(device)
        return float(1.0 / vae.encode(x).latent_dist.mean.std())


def export(
    stage: str, ema: Any, photos: list[torch.Tensor], facts: dict[str, Any], losses: list[float], output: Path, device: str
) -> None:
    """Write the stage's part of the model folder: ``vae/`` (with its scaling factor; the decoder stage keeps
    the encoder's) or ``unet/`` + ``scheduler/``, the pipeline index, and the stage's facts in
    ``training.json``. Weights are stored in float16 (half the size; the loader computes in float32 from them)."""
    from diffusers import DDPMScheduler

    output.mkdir(parents=True, exist_ok=True)
    if stage == "autoencoder":
        ema.eval()
        ema.register_to_config(scaling_factor=scaling_factor(ema, photos, facts["seed"], device))
    weights = copy.deepcopy(ema).half()
    if stage == "diffusion":
        weights.save_pretrained(output / "unet", safe_serialization=True)
        DDPMScheduler(**SCHEDULER).save_pretrained(output / "scheduler")
    else:
        weights.save_pretrained(output / "vae", safe_serialization=True)
    (output / "model_index.json").write_text(json.dumps(
        {"_class_name": "DiffcodecLatentPipeline", "unet": ["diffusers", "UNet2DModel"],
         "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "DDPMScheduler"]}, indent=2) + "\n")
    record = output / "training.json"
    known = json.loads(record.read_text()) if record.is_file() else {}
    known[stage] = facts
    record.write_text(json.dumps(known, indent=2) + "\n")
    label = {"autoencoder": "autoencoder loss (L1 + MSE + KL", "decoder": "decoder fine-tune loss (L1 + MSE",
             "diffusion": "latent DDPM loss (MSE"}[stage]
    plot_loss(losses, output / f"loss_{stage}.png", label=label)


def train(
    stage: str, data: tuple[Path, ...], minutes: float, seed: int = 0, max_steps: int | None = None,
    output: Path = OUTPUT, state_path: Path | None = None, device: str = "cpu", batch_size: int | None = None,
    checkpoint_every: int = 200,
) -> None:
    """Train ``stage`` until ``minutes`` or ``max_steps`` have passed, resuming from ``state_path`` if it exists."""
    crop, default_batch, learning_rate, warmup, decay = SETTINGS[stage]
    batch_size = batch_size or default_batch
    state_path = state_path or STATES / f"latent-{stage}.pt"
    torch.manual_seed(seed)
    photos = load_photos(*data)
    model, ema = _networks(stage, device, output)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate,
                                  weight_decay=0.0)
    step, losses, started = 0, [], 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False, map_location=device)
        if state["stage"] != stage:
            raise SystemExit(f"{state_path} holds the {state['stage']!r} stage, not {stage!r}")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimiser.load_state_dict(state["optimiser"])
        step, losses, started = state["step"], state["losses"], state["step"]
        print(f"resuming {stage} at step {step}", flush=True)
    if stage == "diffusion":
        vae = _frozen_autoencoder(output, device)
        latents = latent_cache(vae, photos, device)
        latent_crop = crop // 8
        betas = torch.linspace(SCHEDULER["beta_start"] ** 0.5, SCHEDULER["beta_end"] ** 0.5, 1000, dtype=torch.float64) ** 2
        abar = torch.cumprod(1 - betas, 0).float().to(device)
    end = time.monotonic() + 60 * minutes
    model.train()

    def checkpoint() -> None:
        save_state(state_path, {"stage": stage, "model": model.state_dict(), "ema": ema.state_dict(),
                                "optimiser": optimiser.state_dict(), "step": step, "losses": losses})
        facts = {"steps": step, "seed": seed, "batch": batch_size, "crop": crop, "learning_rate": learning_rate,
                 "ema_decay": decay, "mean_loss_last_200": float(np.mean(losses[-200:])) if losses else None,
                 "parameters": sum(p.numel() for p in ema.parameters()), "data": [str(d) for d in data]}
        export(stage, ema, photos, facts, losses, output, device)

    while time.monotonic() < end and (max_steps is None or step < max_steps):
        if stage == "autoencoder":
            x = random_crops(photos, seed, step, batch_size, crop).to(device)
            loss, _ = autoencoder_loss(model, x)
        elif stage == "decoder":
            loss = decoder_loss(model, random_crops(photos, seed + 2, step, batch_size, crop).to(device))
        else:
            z0 = latent_crops(latents, seed, step, batch_size, latent_crop)
            gen = torch.Generator().manual_seed(seed * 7_000_003 + step)
            t = torch.randint(0, 1000, (batch_size,), generator=gen)
            eps = torch.randn(z0.shape, generator=gen)
            z0, t, eps = z0.to(device), t.to(device), eps.to(device)
            a = abar[t].view(-1, 1, 1, 1)
            loss = (model(a.sqrt() * z0 + (1 - a).sqrt() * eps, t).sample - eps).square().mean()
        warm_up(optimiser, learning_rate, step - started, warmup)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        update_ema(ema, model, step, decay)
        losses.append(float(loss.detach()))
        step += 1
        if step % checkpoint_every == 0:
            print(f"{stage} step {step} loss {np.mean(losses[-checkpoint_every:]):.4f}", flush=True)
            checkpoint()
    checkpoint()
    print(f"{stage} stopped at step {step}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=STAGES, required=True)
    parser.add_argument("--data", type=Path, nargs="+", default=list(DATA), help="folders of training photos")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where the networks train, e.g. cuda")
    parser.add_argument("--batch", type=int, help="crops per step (default: the stage's own)")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="model folder to write")
    parser.add_argument("--state", type=Path, help="resumable state (default: training-states/latent-STAGE.pt)")
    args = parser.parse_args()
    try:
        device = str(resolve_device(args.device))
    except InvalidParameterError as exc:
        raise SystemExit(f"training.latent: {exc}") from None
    torch.set_num_threads(args.threads)
    train(args.stage, tuple(args.data), args.minutes, args.seed, args.max_steps, args.output, args.state, device,
          args.batch)


if __name__ == "__main__":
    main()
