"""pillow-diffcodec: diffusion-model image codecs as Pillow file formats.

>>> import pillow_diffcodec
>>> data = pillow_diffcodec.encode(image, model="path/to/ddpm", bpp=0.1)
>>> restored = pillow_diffcodec.decode(data)
"""

from __future__ import annotations

from .api import EncodeResult, decode, encode, encode_batch, encode_images, file_size, generate, info, params_for_bpp
from .codecs.ddcm import DDCMParams
from .errors import (
    CorruptFileError,
    DecompressionBombError,
    DiffCodecError,
    EncodingError,
    InvalidParameterError,
    ModelMismatchError,
    ModelNotFoundError,
    NotDiffCodecFileError,
    UnknownCodecError,
    UnsupportedImageError,
    UnsupportedVersionError,
)
from .models import clear_model_cache, load_model

__version__ = "0.1.0"

__all__ = [
    "CorruptFileError",
    "DDCMParams",
    "DecompressionBombError",
    "DiffCodecError",
    "EncodeResult",
    "EncodingError",
    "InvalidParameterError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "NotDiffCodecFileError",
    "UnknownCodecError",
    "UnsupportedImageError",
    "UnsupportedVersionError",
    "clear_model_cache",
    "decode",
    "encode",
    "encode_batch",
    "encode_images",
    "file_size",
    "generate",
    "info",
    "load_model",
    "params_for_bpp",
]
