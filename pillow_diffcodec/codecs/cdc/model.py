"""CDC models: the learned transform and the conditional diffusion decoder, and their model folders.

A CDC model is not a :class:`~.base.DiffusionModel` (it has an encoder, an entropy model and a
conditional decoder, and no unconditional prior), so the model registry loads it through its own
layout (:data:`CDC_CONFIG`) and the codecs check the kind they get (:func:`pillow_diffcodec.models.kind_of`).

A folder holds one architecture and one or more *rate points* (networks trained with different
lambdas), each with its weights and the integer entropy tables exported with them::

    cdc.json              {"architecture": {...}, "rate_points": [{"name", "lambda", "typical_bpp", "weights"}, ...]}
    <name>.safetensors    network weights (EMA, float16) and tables.z_low / z_freq / y_half / y_freq (int32)

Rate control picks a rate point (its index is stored in the file); the fingerprint covers every file
of the folder that decoding reads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import InvalidParameterError, ModelNotFoundError
from ...learned_transform import EntropyTables, LearnedTransform, export_with_tables, load_with_tables
from .decoder import ConditionalUNet

CDC_CONFIG = "cdc.json"


@dataclass(frozen=True)
class CDCArchitecture:
    """Widths of a CDC network (analysis/hyper width, latent channels, hyper-latent channels, U-Net widths)."""

    width: int = 64
    latent: int = 64
    hyper: int = 32
    unet: tuple[int, int, int] = (32, 64, 96)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CDCArchitecture:
        return cls(int(data["width"]), int(data["latent"]), int(data["hyper"]), tuple(int(w) for w in data["unet"]))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "unet": list(self.unet)}


class CDCNetwork(nn.Module):
    """Encoder side (analysis transform + hyperprior) and decoder (conditional U-Net) of one rate point."""

    def __init__(self, arch: CDCArchitecture) -> None:
        super().__init__()
        self.arch = arch
        self.transform = LearnedTransform(arch.width, arch.latent, arch.hyper)
        self.unet = ConditionalUNet(arch.latent, arch.unet)
        self.tables: EntropyTables | None = None

    def update_tables(self) -> EntropyTables:
        """Compute the integer entropy tables from the current prior (what an export stores)."""
        self.tables = EntropyTables.from_prior(self.transform.hyperprior.prior)
        return self.tables

    def entropy_tables(self) -> EntropyTables:
        """The tables this network codes with (exported ones, or computed now for a network built in code)."""
        return self.tables or self.update_tables()

    def export_state(self) -> dict[str, torch.Tensor]:
        """Float16 weights and the integer tables, flat (:func:`~pillow_diffcodec.learned_transform.export_with_tables`)."""
        return export_with_tables(self, self.entropy_tables())

    def load_export(self, state: dict[str, torch.Tensor]) -> None:
        self.tables = load_with_tables(self, state)


@dataclass(frozen=True)
class RatePoint:
    """One trained network of a CDC model folder."""

    name: str
    lam: float
    typical_bpp: float
    weights: str


def read_config(directory: Path) -> tuple[CDCArchitecture, list[RatePoint]]:
    """Parse ``cdc.json`` (ModelNotFoundError when it is missing or malformed)."""
    path = directory / CDC_CONFIG
    try:
        config = json.loads(path.read_text())
        arch = CDCArchitecture.from_dict(config["architecture"])
        points = [RatePoint(str(p["name"]), float(p["lambda"]), float(p["typical_bpp"]), str(p["weights"]))
                  for p in config["rate_points"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelNotFoundError(f"No usable CDC model in {str(directory)!r}: {CDC_CONFIG} unreadable ({exc})") from None
    if not points:
        raise ModelNotFoundError(f"CDC model {str(directory)!r} lists no rate points in {CDC_CONFIG}")
    return arch, points


def write_rate_point(directory: Path, arch: CDCArchitecture, point: RatePoint, network: CDCNetwork) -> None:
    """Add or replace one rate point of a model folder (weights + tables, and its entry in cdc.json)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file(network.export_state(), str(directory / point.weights))
    path = directory / CDC_CONFIG
    points = read_config(directory)[1] if path.exists() else []
    points = sorted([p for p in points if p.name != point.name] + [point], key=lambda p: p.typical_bpp)
    config = {"architecture": arch.to_dict(),
              "rate_points": [{"name": p.name, "lambda": p.lam, "typical_bpp": p.typical_bpp, "weights": p.weights}
                              for p in points]}
    path.write_text(json.dumps(config, indent=2) + "\n")


def is_cdc_folder(directory: Path) -> bool:
    return (directory / CDC_CONFIG).is_file()


class CDCModel:
    """A loaded CDC model folder: rate points sorted by typical bpp, each with its network (all loaded)."""

    image_channels = 3

    def __init__(self, name: str, arch: CDCArchitecture, points: list[RatePoint], networks: list[CDCNetwork],
                 fingerprint: bytes, device: torch.device, dtype: torch.dtype) -> None:
        self.name, self.arch, self.rate_points, self.networks = name, arch, points, networks
        self._fingerprint, self.device, self.dtype = fingerprint, device, dtype

    @property
    def fingerprint(self) -> bytes:
        """BLAKE2b (4 bytes) of cdc.json and every weights file, in the order cdc.json lists them."""
        return self._fingerprint

    def network(self, index: int) -> CDCNetwork:
        if not 0 <= index < len(self.networks):
            raise InvalidParameterError(
                f"CDC model {self.name!r} has {len(self.networks)} rate point(s); rate_point {index} does not exist")
        return self.networks[index]

    @classmethod
    def from_directory(cls, directory: Path, *, name: str, device: torch.device, dtype: torch.dtype) -> CDCModel:
        from safetensors.torch import load_file

        if dtype != torch.float32:
            raise InvalidParameterError(f"CDC models run in float32 (their entropy model needs it), got dtype {dtype}")
        arch, points = read_config(directory)
        digest = hashlib.blake2b((directory / CDC_CONFIG).read_bytes(), digest_size=4)
        networks = []
        for point in points:
            path = directory / point.weights
            try:
                digest.update(path.read_bytes())
                network = CDCNetwork(arch)
                network.load_export(load_file(str(path)))
            except (OSError, RuntimeError, KeyError) as exc:
                raise ModelNotFoundError(f"CDC rate point {point.name!r}: cannot load {str(path)!r} ({exc})") from None
            networks.append(network.to(device).eval())
        return cls(name, arch, points, networks, digest.digest(), device, dtype)
