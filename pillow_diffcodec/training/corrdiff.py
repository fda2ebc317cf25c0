"""Train a CorrDiff rate point on random crops of folders of photos (CPU by default, resumable, seeded).

Ma, Yang & Liu (ICML 2024), Sec. 3.4: phase 1 trains the encoder E (with the hyperprior) and the
end-to-end decoder D for rate + MSE, then the score network ``mu_theta`` with E frozen (Eq. 23, the
MSE term; the optional perceptual term M_mu is left out); phase 2 fine-tunes everything jointly
(Eq. 24: Eq. 23 + ||D(y_hat) - x0||^2 + lambda_r R(y_hat), again without M_e). ``--phase`` picks one
stage:

* ``e2e``     E + hyperprior + D:  ``MSE(D(y_hat), x0) + lambda * bpp``
* ``score``   mu_theta with E frozen:  ``E_t MSE(mu_theta(x_t, y_hat, t), x0)`` (CDC's loss, cosine schedule)
* ``joint``   everything:  ``MSE(mu_theta) + MSE(D) + lambda * bpp`` (Eq. 24)
* ``decoder`` D only, with E, hyperprior and mu_theta frozen:  ``MSE(D(y_hat), x0)``

``--init-cdc FOLDER`` starts from a trained CDC model's rate point of the same ``--name`` (its E,
hyperprior and conditional U-Net); with ``--phase decoder`` the export then stores only D and names the
CDC weights file for the rest (``--share-base``, the built-in model's route: see its MODEL_CARD.md).

Batch b (crops and flips) and its noise come from generators seeded with (seed, b), so a resumed run
draws the batches a single run would. The state (``--state-dir``/corrdiff-<name>.pt) holds weights, EMA
weights, optimiser, step and losses and is never committed; the EMA weights are exported.

    python -m pillow_diffcodec.training.corrdiff --name high --phase decoder \\
        --init-cdc pillow_diffcodec/models/builtin-cdc --share-base --minutes 30 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..codecs.corrdiff.model import CorrDiffArchitecture, CorrDiffNetwork, write_rate_point
from ..conditional_unet import alpha_bar
from .cdc import typical_bpp
from .data import load_photos, random_crops

OUTPUT = Path(__file__).resolve().parents[1] / "models" / "builtin-corrdiff"
STATE_DIR = Path("training-states")
CROP = 128
BATCH = 8
WARMUP_STEPS = 100
PHASES = ("e2e", "score", "joint", "decoder")
ARCHITECTURES = {"small": CorrDiffArchitecture(),
                 "tiny": CorrDiffArchitecture(width=16, latent=8, hyper=8, unet=(8, 16, 16), e2e_width=8)}


def trained_parameters(network: CorrDiffNetwork, phase: str) -> list[torch.nn.Parameter]:
    """The parameters a phase trains (the others are frozen)."""
    parts = {"e2e": [network.transform, network.e2e], "score": [network.unet],
             "joint": [network], "decoder": [network.e2e]}[phase]
    return [p for part in parts for p in part.parameters()]


def loss_terms(network: CorrDiffNetwork, x0: torch.Tensor, phase: str, gen: torch.Generator
               ) -> dict[str, torch.Tensor]:
    """The loss terms of a phase (``mse_d``: D's MSE, ``mse_mu``: the score network's, ``bpp``)."""
    frozen_transform = phase in ("score", "decoder")
    network.transform.train(not frozen_transform)
    with torch.set_grad_enabled(not frozen_transform):
        out = network.transform(x0)
    y_hat = out.y_hat.detach() if frozen_transform else out.y_hat
    terms = {"bpp": out.bits.mean() / (x0.shape[2] * x0.shape[3])}
    if phase != "score":
        terms["mse_d"] = F.mse_loss(network.e2e(y_hat), x0)
    if phase in ("score", "joint"):
        t = torch.rand(x0.shape[0], generator=gen).to(x0.device)
        a = alpha_bar(t).view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=gen).to(x0.device)
        terms["mse_mu"] = F.mse_loss(network.unet(x_t, t, y_hat), x0)
    return terms


def total_loss(terms: dict[str, torch.Tensor], phase: str, lam: float) -> torch.Tensor:
    loss = terms.get("mse_d", 0.0) + terms.get("mse_mu", 0.0)
    return loss + lam * terms["bpp"] if phase in ("e2e", "joint") else loss


def _init_from_cdc(network: CorrDiffNetwork, folder: Path, name: str) -> Path:
    """Load E, hyperprior, U-Net and tables from CDC folder ``folder``'s rate point ``name``; its weights file."""
    from safetensors.torch import load_file

    from ..codecs.cdc.model import read_config

    points = {p.name: p for p in read_config(folder)[1]}
    if name not in points:
        raise SystemExit(f"CDC model {folder} has no rate point {name!r} (it has {sorted(points)})")
    path = folder / points[name].weights
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    missing, unexpected = network.load_state_dict({k: v for k, v in state.items() if not k.startswith("tables.")},
                                                  strict=False)
    if unexpected or any(not k.startswith("e2e.") for k in missing):
        raise SystemExit(f"{path} does not fit the architecture (missing {missing}, unexpected {unexpected})")
    from ..learned_transform import EntropyTables

    network.tables = EntropyTables.from_tensors({k[7:]: v for k, v in state.items() if k.startswith("tables.")})
    return path


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    photos = load_photos(*args.data)
    arch = ARCHITECTURES[args.architecture]
    model = CorrDiffNetwork(arch)
    base = _init_from_cdc(model, args.init_cdc, args.name) if args.init_cdc else None
    device = torch.device(args.device)
    model.to(device)
    ema = copy.deepcopy(model)
    params = trained_parameters(model, args.phase)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimiser = torch.optim.Adam(params, lr=args.lr)
    step, losses, warmed_from = 0, [], 0
    state_path = args.state_dir / f"corrdiff-{args.name}.pt"
    if state_path.exists():
        state = torch.load(state_path, weights_only=False, map_location=device)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        step, losses = state["step"], state["losses"]
        optimiser.load_state_dict(state["optimiser"])
        print(f"resuming {state_path} at step {step}", flush=True)
    end = time.monotonic() + 60 * args.minutes
    model.train()
    while time.monotonic() < end and (args.max_steps is None or step < args.max_steps):
        x0 = random_crops(photos, args.seed, step, BATCH, CROP).to(device)
        gen = torch.Generator().manual_seed(args.seed * 7_000_003 + step)
        torch.manual_seed(args.seed * 5_000_011 + step)  # the latents' uniform noise
        terms = loss_terms(model, x0, args.phase, gen)
        loss = total_loss(terms, args.phase, args.lam)
        for group in optimiser.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1 - warmed_from) / WARMUP_STEPS)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - decay)
        losses.append({k: float(v.detach()) for k, v in terms.items()})
        step += 1
        if step % args.checkpoint_every == 0:
            recent = {k: np.mean([row[k] for row in losses[-args.checkpoint_every:]]) for k in losses[-1]}
            print(f"step {step} " + " ".join(f"{k} {v:.5f}" for k, v in recent.items()), flush=True)
            _save(state_path, model, ema, optimiser, step, losses, args)
    _save(state_path, model, ema, optimiser, step, losses, args)
    _export(args, arch, ema, photos, step, losses, base)
    print(f"stopped at step {step}", flush=True)


def _save(path: Path, model: CorrDiffNetwork, ema: CorrDiffNetwork, optimiser: torch.optim.Optimizer, step: int,
          losses: list, args: argparse.Namespace) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "optimiser": optimiser.state_dict(),
                "step": step, "losses": losses, "lam": args.lam, "seed": args.seed, "phase": args.phase}, tmp)
    tmp.replace(path)


def _export(args: argparse.Namespace, arch: CorrDiffArchitecture, ema: CorrDiffNetwork, photos: list[torch.Tensor],
            step: int, losses: list, base: Path | None) -> None:
    network = copy.deepcopy(ema).cpu().eval()
    share = args.share_base and base is not None and args.phase == "decoder"
    if share:
        network.tables = ema.tables  # the CDC file's tables (the prior is frozen)
    else:
        network.update_tables()
    bpp = typical_bpp(network, photos)
    write_rate_point(args.output, arch, args.name, args.lam, round(bpp, 4), network, base if share else None)
    recent = {k: float(np.mean([row[k] for row in losses[-200:]])) for k in losses[-1]} if losses else {}
    log = args.output / "training.json"
    record = json.loads(log.read_text()) if log.exists() else {}
    record[args.name] = {"phase": args.phase, "lambda": args.lam, "steps": step, "seed": args.seed, "crop": CROP,
                         "batch": BATCH, "lr": args.lr, "ema": args.ema, "last_200": recent, "typical_bpp": bpp,
                         "data": [str(d) for d in args.data],
                         "init_cdc": str(args.init_cdc) if args.init_cdc else None,
                         "e2e_parameters": sum(p.numel() for p in network.e2e.parameters()),
                         "parameters": sum(p.numel() for p in network.parameters())}
    log.write_text(json.dumps(record, indent=2) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, nargs="+",
                        default=[Path("../shared/data/train"), Path("../shared/data/train-unsplash")])
    parser.add_argument("--name", default="high", help="rate point name")
    parser.add_argument("--phase", choices=PHASES, default="joint")
    parser.add_argument("--lam", type=float, default=0.01, help="rate weight lambda_r (phases e2e and joint)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--output", type=Path, default=OUTPUT, help="model folder to add the rate point to")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default="small")
    parser.add_argument("--init-cdc", type=Path, help="CDC model folder whose rate point --name initialises E, "
                        "hyperprior and mu_theta")
    parser.add_argument("--share-base", action="store_true", help="with --init-cdc and --phase decoder: export D "
                        "only and name the CDC weights file for the rest")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    train(args)


if __name__ == "__main__":
    main()
