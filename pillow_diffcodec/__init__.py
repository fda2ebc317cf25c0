"""pillow-diffcodec: diffusion-model image codecs as Pillow file formats.

Importing the package registers every codec with Pillow (``Image.open`` / ``Image.save(...,
format="DDCM")``). Reading a header needs neither a model nor torch; the encoder and decoder
(``encode``, ``decode``, ...) import torch on first use.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from . import limits
from .codecs.cdc.format import CDCParams
from .codecs.corrdiff.format import CorrDiffParams
from .codecs.ddcm.format import DDCMParams
from .codecs.fldc.format import FLDCParams
from .codecs.psc.format import PSCParams
from .errors import (
    ComputeMismatchError,
    CorruptFileError,
    DecompressionBombError,
    DiffCodecError,
    DivergenceError,
    EncodingError,
    InvalidParameterError,
    ModelMismatchError,
    ModelNotFoundError,
    NotDiffCodecFileError,
    RateFallbackWarning,
    ResourceExhaustedError,
    UnknownCodecError,
    UnsupportedImageError,
    UnsupportedVersionError,
)
from .fileinfo import info
from .plugin import register_diffcodec_opener

__version__ = "0.1.0"

_LAZY = {
    "EncodeResult": "api",
    "decode": "api",
    "encode": "api",
    "encode_batch": "api",
    "encode_images": "api",
    "file_size": "api",
    "generate": "api",
    "decode_file": "api",
    "restore": "api",
    "load_model": "models",
    "SuperResolution": "restoration",
    "Colorization": "restoration",
    "Degradation": "restoration",
    "TextGuidance": "codecs.ddcm.conditional",
    "ClassifierGuidance": "codecs.ddcm.conditional",
}

__all__ = [
    "CDCParams",
    "ComputeMismatchError",
    "CorrDiffParams",
    "FLDCParams",
    "CorruptFileError",
    "DDCMParams",
    "DivergenceError",
    "PSCParams",
    "DecompressionBombError",
    "DiffCodecError",
    "RateFallbackWarning",
    "ResourceExhaustedError",
    "EncodingError",
    "InvalidParameterError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "NotDiffCodecFileError",
    "UnknownCodecError",
    "UnsupportedImageError",
    "UnsupportedVersionError",
    "clear_model_cache",
    "info",
    "limits",
    "register_diffcodec_opener",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    """Import the torch-based parts on first use (PEP 562)."""
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def clear_model_cache() -> None:
    """Free every model loaded by this process (they are cached by reference, device and dtype)."""
    models = sys.modules.get(f"{__name__}.models")
    if models is not None:
        models.clear_model_cache()


register_diffcodec_opener()
