"""Read a file's header into a dict without loading a model or importing torch."""

from __future__ import annotations

from typing import Any

from . import container
from .codecs import codec_by_id
from .imagemodes import chunk_info


def info(data: bytes) -> dict[str, Any]:
    """Header fields of a diffcodec file (the CRC and the codec parameters are verified).

    Keys: codec, format_version, width, height, mode, model, fingerprint, seed, params, bytes,
    payload_bytes, bpp (whole file), chunks, plus original_mode / icc_profile / exif / xmp when present.
    """
    header, payload = container.parse(data, max_pixels=None)
    entry = codec_by_id(header.codec_id)
    params = entry.params.from_bytes(header.params)
    return {
        "codec": entry.name,
        "format_version": header.version,
        "width": header.width,
        "height": header.height,
        "mode": header.mode,
        "model": header.model_name,
        "fingerprint": header.fingerprint.hex(),
        "seed": header.seed,
        "params": params.to_dict(),
        "bytes": len(data),
        "payload_bytes": len(payload),
        "bpp": 8 * len(data) / (header.width * header.height),
        "chunks": [tag.decode("latin-1") for tag, _ in header.chunks],
        **chunk_info(header.chunks),
    }
