"""Train a CDC rate point on random crops of a folder of photos (CPU by default, resumable, seeded).

The loss is the paper's (Yang & Mandt, NeurIPS 2023, eq. 7 without the optional perceptual term):
``E_t || x0 - X_theta(x_t, t, y_hat) ||^2 + lambda * bpp``, with t ~ U(0, 1) under the cosine schedule,
x0-prediction, uniform noise on the latents for the rate and straight-through rounding for the
decoder's input (:mod:`pillow_diffcodec.learned_transform`). Images are in [-1, 1].

Batch b (crops and flips) and its noise come from generators seeded with (seed, b), so a resumed run
draws the batches a single run would. The state (``--state``) holds weights, EMA weights, optimiser,
step and losses; ``--lean-copy`` drops the optimiser (a resumed lean state warms AdamW up again).
``--init-from`` starts a new rate point from another's state (fine-tuning to another lambda).
The EMA weights and their integer entropy tables are exported as rate point ``--name`` of the model
folder ``--output`` (see :mod:`pillow_diffcodec.codecs.cdc.model`), with its typical bpp measured on the first training photos.

    python -m pillow_diffcodec.training.cdc --name high --lam 0.01 --minutes 30 --threads 1

``--ray N`` runs the same loop in N Ray Train workers (``TorchTrainer``, DDP; GPUs when
``--gpu``); the first worker writes the state and the export.
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
import torch.nn.functional as F

from ..codecs.cdc.decoder import alpha_bar
from ..codecs.cdc.model import CDCArchitecture, CDCNetwork, RatePoint, write_rate_point
from .data import load_photos, random_crops, to_unit_range

OUTPUT = Path(__file__).resolve().parents[1] / "models" / "builtin-cdc"
STATE_DIR = Path("training-states")  # not in the repository: weights are committed once per release, states never
CROP = 128
BATCH = 8
LEARNING_RATE = 3e-4
WARMUP_STEPS = 100
EMA_DECAY = 0.999
TYPICAL_CROP = 256
TYPICAL_IMAGES = 8
# Named architectures: "small" is the shipped one; "tiny" is for tests and smoke runs.
ARCHITECTURES = {"small": CDCArchitecture(), "tiny": CDCArchitecture(width=16, latent=8, hyper=8, unet=(8, 16, 16))}


def loss_terms(network: CDCNetwork, x0: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0-prediction MSE, bits per pixel) of one batch; ``gen`` draws t, the diffusion noise and the latent noise."""
    out = network.transform(x0)
    t = torch.rand(x0.shape[0], generator=gen)
    a = alpha_bar(t).view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=gen)
    mse = F.mse_loss(network.unet(x_t, t, out.y_hat), x0)
    bpp = out.bits.mean() / (x0.shape[2] * x0.shape[3])
    return mse, bpp


def typical_bpp(network: CDCNetwork, photos: list[torch.Tensor]) -> float:
    """Mean estimated bpp (rounded latents) on centre crops of the first training photos."""
    network.eval()
    bits, pixels = 0.0, 0
    with torch.no_grad():
        for photo in photos[:TYPICAL_IMAGES]:
            h, w = photo.shape[1:]
            side = min(TYPICAL_CROP, h // 64 * 64, w // 64 * 64)
            top, left = (h - side) // 2, (w - side) // 2
            out = network.transform(to_unit_range(photo[None, :, top : top + side, left : left + side]))
            bits, pixels = bits + float(out.bits.sum()), pixels + side * side
    return bits / pixels


def _state_path(state_dir: Path, name: str) -> Path:
    return state_dir / f"cdc-{name}.pt"


def train(args: argparse.Namespace, report: Any = None) -> None:
    """The training loop (one process; under Ray each worker runs it on its share of the batch)."""
    torch.manual_seed(args.seed)
    photos = load_photos(args.data)
    arch = ARCHITECTURES[args.architecture]
    model, ema = CDCNetwork(arch), CDCNetwork(arch)
    ema.load_state_dict(model.state_dict())
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    step, losses, warmed_from = 0, [], 0
    state_path = _state_path(args.state_dir, args.name)
    source = state_path if state_path.exists() else args.init_from
    if source is not None:
        state = torch.load(source, weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        if source == state_path:
            step, losses = state["step"], state["losses"]
            if "optimiser" in state:
                optimiser.load_state_dict(state["optimiser"])
            else:
                warmed_from = step
        print(f"starting from {source} at step {step}", flush=True)
    trained = model
    if report is not None:  # Ray Train: wrap in DDP, move to the worker's device
        import ray.train.torch

        trained = ray.train.torch.prepare_model(model)
    device = next(model.parameters()).device
    end = time.monotonic() + 60 * args.minutes
    model.train()
    while time.monotonic() < end and (args.max_steps is None or step < args.max_steps):
        x0 = random_crops(photos, args.seed, step, BATCH, CROP).to(device)
        gen = torch.Generator().manual_seed(args.seed * 7_000_003 + step)
        torch.manual_seed(args.seed * 5_000_011 + step)  # the latents' uniform noise
        mse, bpp = loss_terms(trained.module if hasattr(trained, "module") else trained, x0, gen)
        loss = mse + args.lam * bpp
        for group in optimiser.param_groups:
            group["lr"] = LEARNING_RATE * min(1.0, (step + 1 - warmed_from) / WARMUP_STEPS)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        decay = min(EMA_DECAY, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p.to(e.device), 1 - decay)
        losses.append((float(mse.detach()), float(bpp.detach())))
        step += 1
        if step % args.checkpoint_every == 0:
            recent = np.mean(losses[-args.checkpoint_every:], axis=0)
            print(f"step {step} mse {recent[0]:.5f} bpp {recent[1]:.4f}", flush=True)
            if report is None or report():
                _save(args, state_path, model, ema, optimiser, step, losses)
    if report is None or report():
        _save(args, state_path, model, ema, optimiser, step, losses)
        _export(args, arch, ema, photos, step, losses)
    print(f"stopped at step {step}", flush=True)


def _save(args: argparse.Namespace, path: Path, model: CDCNetwork, ema: CDCNetwork, optimiser: torch.optim.Optimizer,
          step: int, losses: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "optimiser": optimiser.state_dict(),
                "step": step, "losses": losses, "lam": args.lam, "seed": args.seed}, path)


def _export(args: argparse.Namespace, arch: CDCArchitecture, ema: CDCNetwork, photos: list[torch.Tensor], step: int,
            losses: list) -> None:
    network = copy.deepcopy(ema).cpu().eval()
    network.update_tables()
    bpp = typical_bpp(network, photos)
    write_rate_point(args.output, arch, RatePoint(args.name, args.lam, round(bpp, 4), f"{args.name}.safetensors"),
                     network)
    recent = np.mean(losses[-200:], axis=0).tolist() if losses else [float("nan")] * 2
    log = args.output / "training.json"
    record = json.loads(log.read_text()) if log.exists() else {}
    record[args.name] = {"lambda": args.lam, "steps": step, "seed": args.seed, "crop": CROP, "batch": BATCH,
                         "mse_last_200": recent[0], "bpp_last_200": recent[1], "typical_bpp": bpp,
                         "parameters": sum(p.numel() for p in network.parameters()),
                         "init_from": str(args.init_from) if args.init_from else None}
    log.write_text(json.dumps(record, indent=2) + "\n")


def lean_copy(state_path: Path, destination: Path) -> None:
    """Write a state without its optimiser (the small, resumable form)."""
    state = torch.load(state_path, weights_only=False)
    state.pop("optimiser", None)
    destination.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, destination)


def train_with_ray(args: argparse.Namespace) -> None:
    """Run :func:`train` in ``args.ray`` Ray Train workers (TorchTrainer); the rank-0 worker writes."""
    import ray.train
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    def worker(config: dict[str, Any]) -> None:
        torch.set_num_threads(config["args"].threads)
        train(config["args"], report=lambda: ray.train.get_context().get_world_rank() == 0)

    trainer = TorchTrainer(worker, train_loop_config={"args": args},
                           scaling_config=ScalingConfig(num_workers=args.ray, use_gpu=args.gpu))
    trainer.fit()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    parser.add_argument("--name", default="high", help="rate point name (its weights file and cdc.json entry)")
    parser.add_argument("--lam", type=float, default=0.01, help="rate weight lambda (per bpp, MSE in [-1, 1] units)")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--output", type=Path, default=OUTPUT, help="model folder to add the rate point to")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR, help="where cdc-<name>.pt is kept")
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default="small")
    parser.add_argument("--init-from", type=Path, help="start from another rate point's state (fine-tuning)")
    parser.add_argument("--lean-copy", type=Path, metavar="DEST", help="only write the state without its optimiser")
    parser.add_argument("--ray", type=int, default=0, metavar="WORKERS", help="train in Ray Train workers")
    parser.add_argument("--gpu", action="store_true", help="with --ray: one GPU per worker")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.lean_copy:
        lean_copy(_state_path(args.state_dir, args.name), args.lean_copy)
        return
    torch.set_num_threads(args.threads)
    if args.ray:
        train_with_ray(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
