"""Train FLDC's P_phi and hyperprior on a frozen latent diffusion model (CPU by default, resumable, seeded).

Relic et al. 2024, Sec. 4.4, Eq. 6: ``L = bpp + lambda * MSE(x, x_hat)`` with the MSE of images in
[0, 1] and ``x_hat = D_vae(y0_hat)``, where ``y0_hat`` is the frozen UNet's one-pass clean estimate
from ``y_t = sqrt(abar(tau)) T^-1(z_hat)`` at the predicted timestep ``tau = t (N - 1)``: one forward
call instead of backpropagation through the DDIM sampler, and ``abar`` interpolated continuously
(:func:`pillow_diffcodec.codecs.fldc.network.alpha_bar`) so gradients reach the timestep head of P_phi.
Each crop of a batch gets its own lambda, drawn from :data:`LAMBDAS`, so one model covers several rates.
The VAE and UNet of ``--base`` (default ``builtin-latent``; an SD 2.1 folder by path) stay frozen.

Batch b (crops, flips, lambdas) and the training noise come from generators seeded with (seed, b), so
a resumed run draws the batches a single run would. States (``--state-dir``, not in git) hold weights,
EMA, optimiser, step and losses; ``--export-only`` writes the model folder from the current state.

    python -m pillow_diffcodec.training.fldc --minutes 60 --threads 1
    python -m pillow_diffcodec.training.fldc --export-only
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

from ..codecs.fldc.model import FLDC_CONFIG, write_model
from ..codecs.fldc.network import (
    FLDCArchitecture,
    FLDCNetwork,
    alpha_bar,
    inverse_transform,
    pad_latent,
    predict_x0,
    transform,
)
from .data import load_photos, to_unit_range
from .loop import plot_loss, update_ema, warm_up

OUTPUT = Path(__file__).resolve().parents[1] / "models" / "builtin-fldc"
STATE_DIR = Path("training-states")
DATA = (Path("../shared/data/train"), Path("../shared/data/train-unsplash"))
CROP = 128
BATCH = 8
LEARNING_RATE = 3e-4
WARMUP_STEPS = 100
EMA_DECAY = 0.999
LAMBDAS = (4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)  # per MSE of [0, 1] images, per bpp
WINDOW = 8  # latent positions per side of the decoded window (64 px on an f8 VAE)
MAX_SIDE = 1024
TYPICAL_CROP = 256
TYPICAL_IMAGES = 6
ARCHITECTURES = {"small": FLDCArchitecture(), "tiny": FLDCArchitecture(estimator=(8, 8, 8), hyper_width=8, hyper=4)}


def encode_latent(base: Any, x: torch.Tensor) -> torch.Tensor:
    """``scaling_factor * E(x).mean`` of images in [-1, 1] (frozen, no gradient)."""
    with torch.no_grad():
        return base.vae.encode(x).latent_dist.mean * float(base.vae.config.scaling_factor)


def forward(network: FLDCNetwork, base: Any, x: torch.Tensor, lam: torch.Tensor, y: torch.Tensor | None = None,
            window: int | None = None, gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """One training pass: per image bpp, MSE (images in [0, 1]), timestep and mean log-scale.

    ``y``: the latents of ``x`` when cached; ``window``: decode only a random ``window`` x ``window`` latent
    window of the clean estimate (drawn from ``gen``) and compare it with its pixels (the VAE decoder's
    backward pass dominates the cost of a step)."""
    y = pad_latent(encode_latent(base, x) if y is None else y, 4)
    log_scale, shift, t = network.estimator(y, lam)
    z_hat, bits = network.rate(transform(y, log_scale, shift))
    y_hat = inverse_transform(z_hat, log_scale, shift)
    n = base.schedule.alphas_cumprod.shape[0]
    tau = t * (n - 1)
    abar = alpha_bar(base.schedule.alphas_cumprod, tau)
    y0 = predict_x0(base, abar.sqrt().view(-1, 1, 1, 1) * y_hat, tau, abar)
    if window and window < y0.shape[2]:
        f = base.vae_factor
        top = int(torch.randint(y0.shape[2] - window + 1, (1,), generator=gen))
        left = int(torch.randint(y0.shape[3] - window + 1, (1,), generator=gen))
        y0 = y0[:, :, top : top + window, left : left + window]
        x = x[:, :, top * f : (top + window) * f, left * f : (left + window) * f]
    image = base.vae.decode(y0 / float(base.vae.config.scaling_factor)).sample[:, :, : x.shape[2], : x.shape[3]]
    mse = ((image - x) / 2).pow(2).flatten(1).mean(1)
    return {"bpp": bits / (x.shape[2] * x.shape[3]), "mse": mse, "tau": tau, "log_scale": log_scale.mean(1)}


def cache_latents(base: Any, photos: list[torch.Tensor], path: Path) -> list[torch.Tensor]:
    """The frozen encoder's latents of every photo (computed once, in tiles of the VAE, kept in ``path``)."""
    if path.exists():
        return torch.load(path, weights_only=True)
    latents = []
    with torch.no_grad():
        for photo in photos:
            h, w = photo.shape[1:]
            f = base.vae_factor
            x = to_unit_range(photo[None, :, : h // f * f, : w // f * f]).to(base.device)
            latents.append(encode_latent(base, x)[0].cpu())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(latents, path)
    return latents


def latent_crops(photos: list[torch.Tensor], latents: list[torch.Tensor], seed: int, step: int, size: int,
                 crop: int, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``step``: aligned crops of (images in [-1, 1], their cached latents), randomly mirrored (the
    mirrored latent stands for the mirrored image's), a pure function of (seed, step)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    side = crop // factor
    images, ys = [], []
    for _ in range(size):
        index = int(torch.randint(len(photos), (1,), generator=gen))
        latent = latents[index]
        top = int(torch.randint(latent.shape[1] - side + 1, (1,), generator=gen))
        left = int(torch.randint(latent.shape[2] - side + 1, (1,), generator=gen))
        y = latent[:, top : top + side, left : left + side]
        x = to_unit_range(photos[index][:, top * factor : top * factor + crop, left * factor : left * factor + crop])
        if bool(torch.randint(2, (1,), generator=gen)):
            x, y = x.flip(-1), y.flip(-1)
        images.append(x)
        ys.append(y)
    return torch.stack(images), torch.stack(ys)


def batch_lambdas(seed: int, step: int, size: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed * 3_000_017 + step)
    return torch.tensor(LAMBDAS)[torch.randint(len(LAMBDAS), (size,), generator=gen)]


def typical_rates(network: FLDCNetwork, base: Any, photos: list[torch.Tensor]) -> list[float]:
    """Estimated bpp (rounded latents, no side information) per lambda on centre crops of training photos."""
    network.eval()
    rates = []
    with torch.no_grad():
        crops = []
        for photo in photos[:: max(1, len(photos) // TYPICAL_IMAGES)][:TYPICAL_IMAGES]:
            h, w = photo.shape[1:]
            side = min(TYPICAL_CROP, h // 32 * 32, w // 32 * 32)
            top, left = (h - side) // 2, (w - side) // 2
            crops.append(to_unit_range(photo[None, :, top : top + side, left : left + side]))
        for lam in LAMBDAS:
            bits, pixels = 0.0, 0
            for crop in crops:
                from ..codecs.fldc.runner import estimate_bits

                bits += estimate_bits(network, base, crop.to(base.device), lam)
                pixels += crop.shape[2] * crop.shape[3]
            rates.append(bits / pixels)
    return rates


def _shrink(photo: torch.Tensor) -> torch.Tensor:
    """Photos above :data:`MAX_SIDE` px are halved (Lanczos), to the scale of Kodak and the other photos."""
    if max(photo.shape[1:]) <= MAX_SIDE:
        return photo
    from PIL import Image

    image = Image.fromarray(photo.permute(1, 2, 0).numpy())
    image = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous()


def _state_path(args: argparse.Namespace) -> Path:
    return args.state_dir / f"fldc-{args.name}.pt"


def train(args: argparse.Namespace) -> None:
    from ..models import load_model

    torch.manual_seed(args.seed)
    base = load_model(args.base, device=args.device)
    photos = load_photos(*args.data)
    photos = [_shrink(p) for p in photos]
    arch = ARCHITECTURES[args.architecture]
    model = FLDCNetwork(arch).to(base.device)
    ema = copy.deepcopy(model)
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    step, losses, warmed_from, seconds = 0, [], 0, 0.0
    state_path = _state_path(args)
    if state_path.exists():
        state = torch.load(state_path, weights_only=False, map_location=base.device)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        step, losses, seconds = state["step"], state["losses"], state.get("seconds", 0.0)
        if "optimiser" in state:
            optimiser.load_state_dict(state["optimiser"])
        warmed_from = step if "optimiser" not in state else 0
        print(f"resuming {state_path} at step {step}", flush=True)
    if args.export_only:
        _export(args, arch, ema, base, photos, step, losses, seconds)
        return
    latents = cache_latents(base, photos, args.state_dir / f"fldc-latents-{Path(str(args.base)).name}.pt")
    start = time.monotonic()
    end = start + 60 * args.minutes
    model.train()
    while time.monotonic() < end and (args.max_steps is None or step < args.max_steps):
        x, y = latent_crops(photos, latents, args.seed, step, BATCH, args.crop, base.vae_factor)
        lam = batch_lambdas(args.seed, step, BATCH).to(base.device)
        torch.manual_seed(args.seed * 5_000_011 + step)  # the rate's uniform noise
        gen = torch.Generator().manual_seed(args.seed * 7_000_003 + step)
        out = forward(model, base, x.to(base.device), lam, y.to(base.device), args.window, gen)
        loss = (out["bpp"] + lam * out["mse"]).mean()
        warm_up(optimiser, LEARNING_RATE, step - warmed_from, WARMUP_STEPS)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        update_ema(ema, model, step, EMA_DECAY)
        losses.append((float(loss.detach()), float(out["bpp"].detach().mean()), float(out["mse"].detach().mean()),
                       float(out["tau"].detach().mean())))
        step += 1
        if step % args.checkpoint_every == 0:
            recent = np.mean(losses[-args.checkpoint_every:], axis=0)
            elapsed = seconds + time.monotonic() - start
            print(f"step {step} loss {recent[0]:.4f} bpp {recent[1]:.4f} mse {recent[2]:.5f} tau {recent[3]:.1f} "
                  f"({elapsed / 60:.1f} min)", flush=True)
            _save(state_path, model, ema, optimiser, step, losses, elapsed, args)
    seconds += time.monotonic() - start
    _save(state_path, model, ema, optimiser, step, losses, seconds, args)
    _export(args, arch, ema, base, photos, step, losses, seconds)
    print(f"stopped at step {step}", flush=True)


def _save(path: Path, model: FLDCNetwork, ema: FLDCNetwork, optimiser: torch.optim.Optimizer, step: int,
          losses: list, seconds: float, args: argparse.Namespace) -> None:
    from .loop import save_state

    save_state(path, {"model": model.state_dict(), "ema": ema.state_dict(), "optimiser": optimiser.state_dict(),
                      "step": step, "losses": losses, "seconds": seconds, "seed": args.seed, "base": str(args.base)})


def _export(args: argparse.Namespace, arch: FLDCArchitecture, ema: FLDCNetwork, base: Any,
            photos: list[torch.Tensor], step: int, losses: list, seconds: float) -> None:
    network = copy.deepcopy(ema).cpu().eval()
    network.update_tables()
    network = network.to(base.device)
    rates = typical_rates(network, base, photos)
    recent = np.mean(losses[-200:], axis=0).tolist() if losses else [float("nan")] * 4
    training = {"steps": step, "seconds": round(seconds), "seed": args.seed, "crop": args.crop, "batch": BATCH,
                "learning_rate": LEARNING_RATE, "lambdas": list(LAMBDAS), "loss_last_200": recent[0],
                "bpp_last_200": recent[1], "mse_last_200": recent[2], "tau_last_200": recent[3],
                "parameters": sum(p.numel() for p in network.parameters()),
                "data": [str(d) for d in args.data]}
    write_model(args.output, str(args.base), arch, network.cpu(), list(LAMBDAS), rates, {"training": training})
    if losses:
        plot_loss([entry[0] for entry in losses], args.output / "loss.png", "training loss (bpp + lambda MSE")
    print(f"exported {args.output / FLDC_CONFIG}: typical bpp {[round(r, 4) for r in rates]}", flush=True)
    print(json.dumps(training), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, nargs="+", default=list(DATA))
    parser.add_argument("--base", default="builtin-latent", help="frozen latent diffusion model (name or folder)")
    parser.add_argument("--name", default="builtin", help="state file name (fldc-<name>.pt)")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--crop", type=int, default=CROP)
    parser.add_argument("--window", type=int, default=WINDOW, help="decoded latent window per side (0: all)")
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--output", type=Path, default=OUTPUT, help="model folder to write")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default="small")
    parser.add_argument("--export-only", action="store_true", help="write the model folder from the state and stop")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    train(args)


if __name__ == "__main__":
    main()
