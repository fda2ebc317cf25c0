"""CorrDiff models: CDC's network (learned transform, hyperprior, conditional U-Net ``mu_theta``) plus an
end-to-end decoder ``D`` (:class:`~pillow_diffcodec.learned_transform.SynthesisTransform`) on the same
quantised latent, per rate point.

A folder holds one architecture and one or more rate points::

    corrdiff.json   {"architecture": {...}, "rate_points": [{"name", "lambda", "typical_bpp", "weights": [...]}, ...]}

``weights`` lists one or more safetensors files (paths relative to the folder) whose tensors together
make the rate point's network and integer entropy tables (as CDC's, ``tables.*``). A rate point trained
from a CDC model with its encoder and U-Net frozen lists that CDC weights file first and a file with
only ``e2e.*`` (D) second, so the shared weights are stored once (``builtin-corrdiff`` does this with
``builtin-cdc``). The fingerprint covers ``corrdiff.json`` and every listed file, in order.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ...errors import InvalidParameterError, ModelNotFoundError
from ...learned_transform import SynthesisTransform
from ..cdc.model import CDCArchitecture, CDCModel, CDCNetwork

CORRDIFF_CONFIG = "corrdiff.json"
E2E_PREFIX = "e2e."


@dataclass(frozen=True)
class CorrDiffArchitecture:
    """CDC's widths plus the end-to-end decoder's width."""

    width: int = 64
    latent: int = 64
    hyper: int = 32
    unet: tuple[int, int, int] = (32, 64, 96)
    e2e_width: int = 64

    @property
    def cdc(self) -> CDCArchitecture:
        return CDCArchitecture(self.width, self.latent, self.hyper, self.unet)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CorrDiffArchitecture:
        return cls(int(data["width"]), int(data["latent"]), int(data["hyper"]), tuple(int(w) for w in data["unet"]),
                   int(data["e2e_width"]))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "unet": list(self.unet)}


class CorrDiffNetwork(CDCNetwork):
    """One rate point: ``transform`` (E + hyperprior), ``unet`` (mu_theta) and ``e2e`` (D)."""

    def __init__(self, arch: CorrDiffArchitecture) -> None:
        super().__init__(arch.cdc)
        self.arch = arch  # type: ignore[assignment]
        self.e2e = SynthesisTransform(arch.e2e_width, arch.latent)


@dataclass(frozen=True)
class RatePoint:
    """One rate point of a CorrDiff folder; ``weights``: its files, relative to the folder."""

    name: str
    lam: float
    typical_bpp: float
    weights: tuple[str, ...]


def read_config(directory: Path) -> tuple[CorrDiffArchitecture, list[RatePoint]]:
    """Parse ``corrdiff.json`` (ModelNotFoundError when it is missing or malformed)."""
    path = directory / CORRDIFF_CONFIG
    try:
        config = json.loads(path.read_text())
        arch = CorrDiffArchitecture.from_dict(config["architecture"])
        points = [RatePoint(str(p["name"]), float(p["lambda"]), float(p["typical_bpp"]),
                            tuple(str(w) for w in p["weights"])) for p in config["rate_points"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelNotFoundError(
            f"No usable CorrDiff model in {str(directory)!r}: {CORRDIFF_CONFIG} unreadable ({exc})") from None
    if not points or any(not p.weights for p in points):
        raise ModelNotFoundError(f"CorrDiff model {str(directory)!r} lists no rate points (or one without weights)")
    return arch, points


def write_rate_point(directory: Path, arch: CorrDiffArchitecture, point_name: str, lam: float, typical_bpp: float,
                     network: CorrDiffNetwork, base: Path | None = None) -> RatePoint:
    """Add or replace one rate point. With ``base`` (a CDC weights file holding this network's transform, U-Net
    and tables, unchanged), only D is written (``<name>-e2e.safetensors``) and the rate point lists both files;
    else everything goes to ``<name>.safetensors``."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = network.export_state()
    if base is not None:
        own = f"{point_name}-e2e.safetensors"
        save_file({k: v for k, v in state.items() if k.startswith(E2E_PREFIX)}, str(directory / own))
        files: tuple[str, ...] = (Path(os.path.relpath(base, directory)).as_posix(), own)
    else:
        own = f"{point_name}.safetensors"
        save_file(state, str(directory / own))
        files = (own,)
    point = RatePoint(point_name, lam, typical_bpp, files)
    path = directory / CORRDIFF_CONFIG
    points = read_config(directory)[1] if path.exists() else []
    points = sorted([p for p in points if p.name != point.name] + [point], key=lambda p: p.typical_bpp)
    config = {"architecture": arch.to_dict(),
              "rate_points": [{"name": p.name, "lambda": p.lam, "typical_bpp": p.typical_bpp, "weights": list(p.weights)}
                              for p in points]}
    path.write_text(json.dumps(config, indent=2) + "\n")
    return point


def is_corrdiff_folder(directory: Path) -> bool:
    return (directory / CORRDIFF_CONFIG).is_file()


class CorrDiffModel(CDCModel):
    """A loaded CorrDiff folder: rate points sorted by typical bpp, each a :class:`CorrDiffNetwork` (all loaded)."""

    @classmethod
    def from_directory(cls, directory: Path, *, name: str, device: torch.device, dtype: torch.dtype) -> CorrDiffModel:
        from safetensors.torch import load_file

        if dtype != torch.float32:
            raise InvalidParameterError(
                f"CorrDiff models run in float32 (their entropy model needs it), got dtype {dtype}")
        arch, points = read_config(directory)
        digest = hashlib.blake2b((directory / CORRDIFF_CONFIG).read_bytes(), digest_size=4)
        networks = []
        for point in points:
            state: dict[str, torch.Tensor] = {}
            try:
                for file in point.weights:
                    path = directory / file
                    digest.update(path.read_bytes())
                    state.update(load_file(str(path)))
                network = CorrDiffNetwork(arch)
                network.load_export(state)
            except (OSError, RuntimeError, KeyError) as exc:
                raise ModelNotFoundError(
                    f"CorrDiff rate point {point.name!r}: cannot load {list(point.weights)} ({exc})") from None
            networks.append(network.to(device).eval())
        return cls(name, arch, points, networks, digest.digest(), device, dtype)  # type: ignore[arg-type]


__all__ = ["CORRDIFF_CONFIG", "CorrDiffArchitecture", "CorrDiffModel", "CorrDiffNetwork", "RatePoint",
           "is_corrdiff_folder", "read_config", "write_rate_point"]
