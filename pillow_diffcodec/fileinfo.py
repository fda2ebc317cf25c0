"""Read a file's header once: parse, find the codec, read its parameters (no model, no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import conditioning, container
from .codecs import CodecEntry, CodecParams, codec_by_id
from .imagemodes import chunk_info


@dataclass(frozen=True)
class ParsedFile:
    """A verified file: header, payload, its codec and parameters."""

    header: container.Header
    payload: bytes
    codec: CodecEntry
    params: CodecParams
    size: int  # whole-file bytes

    @property
    def bpp(self) -> float:
        return container.bits_per_pixel(self.size, self.header.width, self.header.height)

    def info(self) -> dict[str, Any]:
        """Header fields as :func:`info` returns them."""
        header = self.header
        return {
            "codec": self.codec.name,
            "format_version": header.version,
            "width": header.width,
            "height": header.height,
            "mode": header.mode,
            "model": header.model_name,
            "fingerprint": header.fingerprint.hex(),
            "seed": header.seed,
            "params": self.params.to_dict(),
            "bytes": self.size,
            "payload_bytes": len(self.payload),
            "bpp": self.bpp,
            "chunks": [tag.decode("latin-1") for tag, _ in header.chunks],
            **chunk_info(header.chunks),
            **self.conditioning_info(),
        }

    @property
    def conditioning(self) -> conditioning.TextConditioning | None:
        """The text prompt and guidance the file was coded with (None: unconditional)."""
        return conditioning.from_chunks(self.header.chunks)

    def conditioning_info(self) -> dict[str, Any]:
        cond = self.conditioning
        return {} if cond is None else {"prompt": cond.prompt, "guidance": cond.guidance}

    def decode_model_calls(self, **decode_options: Any) -> int:
        """Denoiser evaluations a decode with these codec decode options makes: the codec's model calls, twice
        with classifier-free guidance."""
        cond = self.conditioning
        return self.params.decode_model_calls(**decode_options) * (1 if cond is None else cond.unet_calls_per_step)


def read_file(data: bytes | memoryview, *, max_pixels: int | None = None) -> ParsedFile:
    """Parse and verify ``data`` (CRC, codec id, codec parameters); raises CorruptFileError and kin."""
    header, payload = container.parse(data, max_pixels=max_pixels)
    entry = codec_by_id(header.codec_id)
    parsed = ParsedFile(header, payload, entry, entry.params.from_bytes(header.params), len(data))
    _ = parsed.conditioning  # a damaged Cond chunk is refused with the header, before any model is loaded
    return parsed


def info(data: bytes) -> dict[str, Any]:
    """Header fields of a diffcodec file (the CRC and the codec parameters are verified).

    Keys: codec, format_version, width, height, mode, model, fingerprint, seed, params, bytes,
    payload_bytes, bpp (whole file), chunks, plus original_mode / icc_profile / exif / xmp / prompt / guidance
    when present.
    """
    return read_file(data).info()
