"""Model references: resolve a name or a local directory to a loaded model, once per process.

A file stores the reference it was encoded with (``model_name``) plus the weight fingerprint.
References resolve, in order, to: a model object passed in directly, or a local directory in
diffusers layout (see :mod:`.pixel`). Loaded models are kept in an LRU cache keyed by reference,
device and dtype; :func:`clear_model_cache` frees them.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

from ..errors import ModelNotFoundError
from .pixel import PixelDiffusionModel

DiffusionModel = PixelDiffusionModel
MODEL_CACHE_SIZE = 4
_cache: OrderedDict[tuple[str, str, str], DiffusionModel] = OrderedDict()

__all__ = ["DiffusionModel", "PixelDiffusionModel", "clear_model_cache", "load_model"]


def clear_model_cache() -> None:
    """Forget every cached model (their memory is freed once no caller holds them)."""
    _cache.clear()


def load_model(
    reference: str | Path | DiffusionModel,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> DiffusionModel:
    """Resolve ``reference`` (model object or local directory) to a loaded model, using the cache."""
    if isinstance(reference, PixelDiffusionModel):
        return reference
    device = torch.device(device or "cpu")
    key = (str(reference), str(device), str(dtype))
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    path = Path(reference).expanduser()
    if not path.is_dir():
        raise ModelNotFoundError(
            f"Model {str(reference)!r} not found: it is not a local directory. Pass model= a folder written by "
            "DDPMPipeline.save_pretrained or a downloaded google/ddpm-* checkpoint folder"
        )
    model = PixelDiffusionModel.from_directory(path, device=device, dtype=dtype)
    _cache[key] = model
    while len(_cache) > MODEL_CACHE_SIZE:
        _cache.popitem(last=False)
    return model
