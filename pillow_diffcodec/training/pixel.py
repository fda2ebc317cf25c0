"""Train the built-in pixel diffusion model on random crops of a folder of photos (CPU, resumable).

DDPM training (Ho et al. 2020, Algorithm 1): sample x0 (a random crop), t ~ U{0..N-1} and
eps ~ N(0, I), regress the network's output at ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` onto eps
(MSE), or with ``--prediction v_prediction`` onto ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0``
(Salimans & Ho 2022, Sec. 4), which weights the clean-image error by (SNR + 1) and so keeps the x0
estimate usable at high noise, where an epsilon model's ``(x_t - sqrt(1 - abar) eps) / sqrt(abar)``
amplifies every error (DDCM's codeword choice compares against that estimate at every step).
``--init STATE`` starts a new run from another run's EMA weights (e.g. an epsilon model fine-tuned
to v-prediction).
The network is a diffusers UNet2DModel that sees pixel-unshuffled images (architecture "f2": 2x2,
12 channels at half the resolution; "v1": 4x4, 48 channels at a quarter), which keeps a model call on a
768x512 image at about a second on two CPU cores while the diffusion itself stays in pixel space.
``--device cuda`` trains the network on a GPU (batches and noise are still drawn on the CPU).

Reproducible and resumable: batch b is drawn from a generator seeded with (seed, b), and the
checkpoint holds the weights, their EMA, the optimiser state and the step, so stopping and resuming
gives the same weights as one long run. The repository keeps lean states (``--lean-copy``: step and
losses, no weights and no optimiser): their EMA weights are the model folder's own export of that step
(checked against its training.json), so the weights are stored once; resuming from one starts from
them with a fresh AdamW and its own warm-up.

    python -m pillow_diffcodec.training.pixel --data ../shared/data/train --minutes 40
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InvalidParameterError
from ..models.base import resolve_device
from .data import load_photos, random_crops
from .loop import plot_loss, save_state, update_ema, warm_up

MODELS = Path(__file__).resolve().parents[1] / "models"
OUTPUT = MODELS / "builtin"
STATE = Path(__file__).resolve().parent / "states" / "f2.pt"  # a lean state (step, losses), committed
# Named architectures: (pixel-unshuffle factor, UNet block widths). "f2" is the built-in model since issue 11
# (2x2 unshuffle: no 4-pixel grid; about 5x the compute per pixel of "v1", the first one, now "builtin-v1").
ARCHITECTURES = {"v1": (4, (48, 96, 96)), "f2": (2, (32, 64, 128))}
DEFAULT_ARCHITECTURE = "f2"
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
                        clip_sample=True)
PREDICTIONS = ("epsilon", "v_prediction")
CROP = 64
BATCH = 32
LEARNING_RATE = 2e-4
WARMUP_STEPS = 200
EMA_DECAY = 0.999


def unet_config(architecture: str) -> dict[str, Any]:
    """diffusers UNet2DModel arguments of a named architecture (no attention: linear cost in image size)."""
    factor, blocks = ARCHITECTURES[architecture]
    channels = 3 * factor * factor
    return dict(
        sample_size=16, in_channels=channels, out_channels=channels, block_out_channels=blocks, layers_per_block=1,
        down_block_types=("DownBlock2D",) * len(blocks), up_block_types=("UpBlock2D",) * len(blocks),
        norm_num_groups=16,
    )


def export(
    ema: torch.nn.Module, losses: list[float], step: int, seed: int, output: Path = OUTPUT,
    architecture: str = DEFAULT_ARCHITECTURE, prediction: str = "epsilon", batch_size: int = BATCH,
) -> None:
    """Write the model folder (diffusers layout + diffcodec.json + training.json + loss curve).

    ``training.json`` holds what this run knows of itself (step, loss, seed, batch); the model card,
    which adds history and measurements, is written by hand and left alone.
    """
    from diffusers import DDPMScheduler

    ema.save_pretrained(output / "unet", safe_serialization=True)
    DDPMScheduler(**SCHEDULER_CONFIG, prediction_type=prediction).save_pretrained(output / "scheduler")
    (output / "model_index.json").write_text(json.dumps(
        {"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "DDPMScheduler"]},
        indent=2) + "\n")
    factor = ARCHITECTURES[architecture][0]
    adapter = {"pixel_unshuffle": factor, "equalize_subpixel_means": factor > 1}  # see models.pixel, issue 27
    (output / "diffcodec.json").write_text(json.dumps(adapter, indent=2) + "\n")
    plot_loss(losses, output / "loss.png")
    facts = {
        "architecture": architecture, "prediction": prediction, "steps": step, "seed": seed, "batch": batch_size,
        "crop": CROP, "learning_rate": LEARNING_RATE, "ema_decay": EMA_DECAY,
        "mean_loss_last_500": float(np.mean(losses[-500:])) if losses else None,
        "parameters": sum(p.numel() for p in ema.parameters()),
    }
    (output / "training.json").write_text(json.dumps(facts, indent=2) + "\n")


def _save_state(path: Path, model: torch.nn.Module, ema: torch.nn.Module, optimiser: torch.optim.Optimizer,
                step: int, losses: list[float], architecture: str, prediction: str) -> None:
    """Save a resumable state (tensors on the CPU, so a state written on a GPU resumes anywhere)."""
    save_state(path, {"model": model.state_dict(), "ema": ema.state_dict(), "optimiser": optimiser.state_dict(),
                      "step": step, "losses": losses, "architecture": architecture, "prediction": prediction})


def train(
    data: Path, minutes: float, seed: int, max_steps: int | None, output: Path = OUTPUT, state_path: Path = STATE,
    checkpoint_every: int = 200, architecture: str = DEFAULT_ARCHITECTURE, prediction: str = "epsilon",
    init: Path | None = None, device: str = "cpu", batch_size: int = BATCH,
) -> None:
    """Train until ``minutes`` or ``max_steps``; batches and noise are drawn on the CPU (the same numbers
    on every device), the network runs on ``device``."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    photos = load_photos(data)
    model = UNet2DModel(**unet_config(architecture)).to(device)
    ema = UNet2DModel(**unet_config(architecture)).to(device)
    ema.load_state_dict(model.state_dict())
    optimiser = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    step, losses, warmed_from = 0, [], 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False, map_location=device)
        if state.get("architecture", "v1") != architecture:
            raise SystemExit(f"{state_path} trains architecture {state.get('architecture', 'v1')!r}, not {architecture!r}")
        if state.get("prediction", "epsilon") != prediction:
            raise SystemExit(f"{state_path} trains {state.get('prediction', 'epsilon')!r} prediction, not {prediction!r}")
        weights = _ema_weights(state, output, state_path)
        model.load_state_dict(state.get("model", weights))  # a lean state: the raw weights start from the EMA
        ema.load_state_dict(weights)
        step, losses = state["step"], state["losses"]
        if "optimiser" in state:
            optimiser.load_state_dict(state["optimiser"])
        else:  # a lean state: AdamW starts afresh and warms up again
            warmed_from = step
        print(f"resuming at step {step}")
    elif init is not None:
        start = torch.load(init, weights_only=False, map_location=device)
        if start.get("architecture", "v1") != architecture:
            raise SystemExit(f"{init} holds architecture {start.get('architecture', 'v1')!r}, not {architecture!r}")
        if "ema" not in start:
            raise SystemExit(f"{init} is a lean state without weights; pass a full state to --init")
        model.load_state_dict(start["ema"])
        ema.load_state_dict(start["ema"])
        print(f"starting from the EMA weights of {init} (step {start['step']})")
    betas = torch.linspace(SCHEDULER_CONFIG["beta_start"], SCHEDULER_CONFIG["beta_end"], 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0).float().to(device)
    unshuffle, end = torch.nn.PixelUnshuffle(ARCHITECTURES[architecture][0]), time.monotonic() + 60 * minutes
    model.train()
    while time.monotonic() < end and (max_steps is None or step < max_steps):
        x0 = random_crops(photos, seed, step, batch_size, CROP)
        gen = torch.Generator().manual_seed(seed * 7_000_003 + step)
        t = torch.randint(0, 1000, (batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        x0, t, eps = x0.to(device), t.to(device), eps.to(device)
        a = abar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        target = eps if prediction == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0
        loss = (model(unshuffle(x_t), t).sample - unshuffle(target)).square().mean()
        warm_up(optimiser, LEARNING_RATE, step - warmed_from, WARMUP_STEPS)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        update_ema(ema, model, step, EMA_DECAY)
        losses.append(float(loss.detach()))
        step += 1
        if step % checkpoint_every == 0:
            print(f"step {step} loss {np.mean(losses[-checkpoint_every:]):.4f}", flush=True)
            _save_state(state_path, model, ema, optimiser, step, losses, architecture, prediction)
            export(ema, losses, step, seed, output, architecture, prediction, batch_size)
    _save_state(state_path, model, ema, optimiser, step, losses, architecture, prediction)
    export(ema, losses, step, seed, output, architecture, prediction, batch_size)
    print(f"stopped at step {step}")


def _ema_weights(state: dict[str, Any], output: Path, state_path: Path) -> dict[str, torch.Tensor]:
    """The EMA weights a state resumes from: its own, or for a lean state the model folder's export,
    which must be of the state's step."""
    if "ema" in state:
        return state["ema"]
    facts = output / "training.json"
    if not facts.is_file() or json.loads(facts.read_text()).get("steps") != state["step"]:
        raise SystemExit(f"{state_path} is a lean state (no weights) at step {state['step']}: its weights are the "
                         f"export of that step in the model folder, but {output} holds no such export")
    from safetensors.torch import load_file

    return load_file(str(output / "unet" / "diffusion_pytorch_model.safetensors"))


def lean_copy(state_path: Path, destination: Path) -> None:
    """Write ``state_path`` without weights and optimiser state (the model folder holds the EMA weights):
    what the repository keeps between sessions."""
    state = torch.load(state_path, weights_only=False, map_location="cpu")
    for key in ("optimiser", "model", "ema"):
        state.pop(key, None)
    destination.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, destination)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where the network trains, e.g. cuda (batches are drawn on the CPU)")
    parser.add_argument("--batch", type=int, default=BATCH, help="crops per step")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="model folder to write")
    parser.add_argument("--state", type=Path, default=STATE, help="resumable training state")
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default=DEFAULT_ARCHITECTURE)
    parser.add_argument("--prediction", choices=PREDICTIONS, default="epsilon", help="what the network predicts")
    parser.add_argument("--init", type=Path, metavar="STATE", help="start a new run from the EMA weights of STATE")
    parser.add_argument("--lean-copy", type=Path, metavar="DEST",
                        help="only write --state without weights and optimiser to DEST (for the repository; the "
                        "model folder holds the weights), then exit")
    args = parser.parse_args()
    if args.lean_copy:
        lean_copy(args.state, args.lean_copy)
        return
    try:
        device = str(resolve_device(args.device))
    except InvalidParameterError as exc:
        raise SystemExit(f"training.pixel: {exc}") from None
    torch.set_num_threads(args.threads)
    train(args.data, args.minutes, args.seed, args.max_steps, args.output, args.state, architecture=args.architecture,
          prediction=args.prediction, init=args.init, device=device, batch_size=args.batch)


if __name__ == "__main__":
    main()
