"""What every trainer's resumable loop shares: CPU-side states, the EMA, the warm-up and the loss plot.

States are saved with every tensor on the CPU, so a state written by a GPU run resumes anywhere. The
EMA decay warms up as ``min(decay, (1 + step) / (10 + step))`` so early random weights fade fast; the
learning rate ramps linearly over the first steps after every start from a state without optimiser.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw


def on_cpu(value: Any) -> Any:
    """``value`` with every tensor inside (dicts, lists, tuples) moved to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {key: on_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(item) for item in value)
    return value


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a resumable state atomically (temp file + rename), every tensor on the CPU."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(on_cpu(state), temporary)
    temporary.replace(path)


def update_ema(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    """One EMA step of ``ema`` towards ``model`` with the warmed-up decay."""
    rate = 1 - min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, rate)


def warm_up(optimiser: torch.optim.Optimizer, learning_rate: float, steps_since_start: int, warmup: int) -> None:
    """Set the learning rate of a linear warm-up over ``warmup`` steps."""
    for group in optimiser.param_groups:
        group["lr"] = learning_rate * min(1.0, (steps_since_start + 1) / warmup)


def plot_loss(losses: Iterable[float], path: Path, label: str = "training loss (MSE") -> None:
    """A small loss-curve PNG (moving average of 100 steps), drawn with Pillow."""
    losses = list(losses)
    width, height, margin = 640, 320, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    values = np.convolve(losses, np.ones(100) / 100, mode="valid") if len(losses) >= 100 else np.asarray(losses)
    if len(values) > 1:
        low, high = float(values.min()), float(values.max())
        points = [
            (margin + i * (width - 2 * margin) / (len(values) - 1),
             height - margin - (v - low) / max(high - low, 1e-9) * (height - 2 * margin))
            for i, v in enumerate(values)
        ]
        draw.line(points, fill="navy", width=2)
        draw.text((margin, 10), f"{label}, 100-step mean): {high:.4f} -> {values[-1]:.4f}", fill="black")
        draw.text((margin, height - 25), f"steps 0 .. {len(losses)}", fill="black")
    draw.rectangle([margin, margin, width - margin, height - margin], outline="gray")
    image.save(path)
