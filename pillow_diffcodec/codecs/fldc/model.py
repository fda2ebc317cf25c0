"""FLDC model folders: the trained P_phi + hyperprior, and the frozen latent diffusion model they run on.

A folder (e.g. the built-in ``builtin-fldc``) holds::

    fldc.json          {"base_model": "builtin-latent", "architecture": {...}, "lambdas": [...],
                        "typical_bpp": [...], "weights": "fldc.safetensors"}
    fldc.safetensors   P_phi and hyperprior weights (float16) and tables.z_low / z_freq / y_half / y_freq (int32)

``base_model`` is a model reference the registry resolves (a built-in name, an SD 2.1 folder, a
Hugging Face repo in the local cache); its VAE and UNet are frozen (Relic et al. 2024, Sec. 4.1). The
fingerprint (4 bytes) is BLAKE2b over fldc.json, the weights file and the base model's own fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ...errors import InvalidParameterError, ModelNotFoundError
from .network import FLDCArchitecture, FLDCNetwork

FLDC_CONFIG = "fldc.json"
WEIGHTS = "fldc.safetensors"


def is_fldc_folder(directory: Path) -> bool:
    return (directory / FLDC_CONFIG).is_file()


def read_config(directory: Path) -> dict[str, Any]:
    """Parse ``fldc.json`` (ModelNotFoundError when missing or malformed)."""
    try:
        config = json.loads((directory / FLDC_CONFIG).read_text(encoding="utf-8"))
        FLDCArchitecture.from_dict(config["architecture"])
        lambdas = [float(v) for v in config["lambdas"]]
        str(config["base_model"]), str(config["weights"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelNotFoundError(f"No usable FLDC model in {str(directory)!r}: {FLDC_CONFIG} unreadable ({exc})") from None
    if not lambdas or min(lambdas) <= 0:
        raise ModelNotFoundError(f"FLDC model {str(directory)!r} lists no positive lambdas in {FLDC_CONFIG}")
    return config


def base_reference(directory: Path) -> str:
    """The base model reference an FLDC folder names (a relative path is taken relative to the folder)."""
    base = str(read_config(directory)["base_model"])
    if base.startswith(("./", "../")):
        return str((directory / base).resolve())
    return base


def write_model(directory: Path, base_model: str, arch: FLDCArchitecture, network: FLDCNetwork,
                lambdas: list[float], typical_bpp: list[float], extra: dict[str, Any] | None = None) -> None:
    """Write an FLDC folder (weights + tables and fldc.json)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file(network.export_state(), str(directory / WEIGHTS))
    config = {"base_model": base_model, "architecture": arch.to_dict(), "lambdas": [float(v) for v in lambdas],
              "typical_bpp": [round(float(v), 5) for v in typical_bpp], "weights": WEIGHTS, **(extra or {})}
    (directory / FLDC_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


class FLDCModel:
    """A loaded FLDC folder: ``network`` (P_phi + hyperprior, float32) and ``base`` (the frozen latent model)."""

    def __init__(self, name: str, base: Any, network: FLDCNetwork, lambdas: list[float], typical_bpp: list[float],
                 fingerprint: bytes, device: torch.device, dtype: torch.dtype) -> None:
        self.name, self.base, self.network = name, base, network
        self.lambdas, self.typical_bpp = sorted(lambdas), list(typical_bpp)
        self._fingerprint, self.device, self.dtype = fingerprint, device, dtype

    @property
    def fingerprint(self) -> bytes:
        return self._fingerprint

    @property
    def image_channels(self) -> int:
        return int(self.base.image_channels)

    @property
    def vae_factor(self) -> int:
        """Image pixels per latent position per side (what the decode-work limit counts)."""
        return int(self.base.vae_factor)

    @property
    def lambda_range(self) -> tuple[float, float]:
        return self.lambdas[0], self.lambdas[-1]

    @classmethod
    def build(cls, name: str, base: Any, network: FLDCNetwork, lambdas: list[float],
              typical_bpp: list[float] | None = None, config_bytes: bytes = b"", weights_bytes: bytes = b"") -> FLDCModel:
        """A model from objects in memory (tests, training exports); the fingerprint covers the weights and base."""
        digest = hashlib.blake2b(config_bytes, digest_size=4)
        if not weights_bytes:
            for key, value in sorted(network.state_dict().items()):
                digest.update(key.encode() + value.detach().cpu().float().contiguous().numpy().tobytes())
        digest.update(weights_bytes)
        digest.update(b"|base:" + bytes(base.fingerprint))
        network = network.to(base.device).eval()
        network.entropy_tables()
        return cls(name, base, network, lambdas, typical_bpp or [], digest.digest(), base.device, base.dtype)

    @classmethod
    def from_directory(cls, directory: Path, *, name: str, device: torch.device, dtype: torch.dtype) -> FLDCModel:
        from safetensors.torch import load_file

        from ...models import load_model

        config = read_config(directory)
        arch = FLDCArchitecture.from_dict(config["architecture"])
        base = load_model(base_reference(directory), device=device, dtype=dtype)
        if not hasattr(base, "vae") or not hasattr(base, "unet"):
            raise ModelNotFoundError(
                f"FLDC model {name!r} names base model {config['base_model']!r}, which is not a latent diffusion model")
        if int(base.sample_channels) != arch.latent:
            raise InvalidParameterError(
                f"FLDC model {name!r} is for {arch.latent}-channel latents; base model {base.name!r} has "
                f"{base.sample_channels}")
        path = directory / str(config["weights"])
        try:
            weights = path.read_bytes()
            network = FLDCNetwork(arch)
            network.load_export(load_file(str(path)))
        except (OSError, RuntimeError, KeyError) as exc:
            raise ModelNotFoundError(f"FLDC model {name!r}: cannot load {str(path)!r} ({exc})") from None
        model = cls.build(name, base, network, [float(v) for v in config["lambdas"]],
                          [float(v) for v in config.get("typical_bpp", [])],
                          (directory / FLDC_CONFIG).read_bytes(), weights)
        return model
