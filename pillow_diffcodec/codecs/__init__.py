"""Codec registry: the single source of truth for codec names and their numeric file ids.

Ids are explicit numbers written into every file and never derived from registration order.
Reserved for the codecs that follow DDCM: 2 PSC, 3 CDC, 4 CorrDiff, 5 foundation-latent-diffusion.
"""

from __future__ import annotations

from types import ModuleType

from ..errors import UnknownCodecError
from . import ddcm

CODECS_BY_NAME: dict[str, ModuleType] = {ddcm.FORMAT_NAME: ddcm}
CODECS_BY_ID: dict[int, ModuleType] = {module.CODEC_ID: module for module in CODECS_BY_NAME.values()}


def codec_by_name(name: str) -> ModuleType:
    """The codec module registered under ``name`` (case-insensitive)."""
    module = CODECS_BY_NAME.get(str(name).upper())
    if module is None:
        raise UnknownCodecError(f"Unknown codec {name!r}; available: {sorted(CODECS_BY_NAME)}")
    return module


def codec_by_id(codec_id: int) -> ModuleType:
    """The codec module whose file id is ``codec_id``."""
    module = CODECS_BY_ID.get(codec_id)
    if module is None:
        from ..errors import UnsupportedVersionError

        known = {m.CODEC_ID: name for name, m in CODECS_BY_NAME.items()}
        raise UnsupportedVersionError(f"Unknown codec id {codec_id} in file; this library knows {known}")
    return module
