"""Text conditioning stored in a file: the prompt and guidance scale a latent model was run with (torch-free).

DDCM App. B.6 compresses with a text-conditioned Stable Diffusion: the prompt steers the denoiser,
so the decoder needs the same prompt. It travels in the critical ``Cond`` chunk (docs/FORMAT.md):
a reader that does not know the chunk must refuse the file rather than decode it unconditioned.
A file without the chunk was coded unconditionally (the empty prompt, no guidance).

Classifier-free guidance (Ho & Salimans 2022): the denoiser output is
``out = out(empty) + w (out(prompt) - out(empty))``; ``w = 1`` is the plain conditional model (one
UNet call per step), any other ``w`` costs two.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from .errors import CorruptFileError, InvalidParameterError

CHUNK_TAG = b"Cond"
MAX_PROMPT_BYTES = 1024
MAX_GUIDANCE = 100.0
DEFAULT_GUIDANCE = 1.0
_GUIDANCE = struct.Struct("<d")


@dataclass(frozen=True)
class TextConditioning:
    """A non-empty prompt (at most 1024 UTF-8 bytes) and a guidance scale ``w`` in [0, 100]."""

    prompt: str
    guidance: float = DEFAULT_GUIDANCE

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt:
            raise InvalidParameterError(f"Expected prompt as a non-empty string, got {self.prompt!r}")
        size = len(self.prompt.encode("utf-8"))
        if size > MAX_PROMPT_BYTES:
            raise InvalidParameterError(f"Expected a prompt of at most {MAX_PROMPT_BYTES} UTF-8 bytes, got {size}")
        guidance = self.guidance
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance) \
                or not 0.0 <= guidance <= MAX_GUIDANCE:
            raise InvalidParameterError(f"Expected guidance in [0, {MAX_GUIDANCE:g}], got {guidance!r}")
        object.__setattr__(self, "guidance", float(guidance))

    @property
    def unet_calls_per_step(self) -> int:
        """Denoiser evaluations per sampler step: 1 for ``w = 1``, 2 with classifier-free guidance."""
        return 1 if self.guidance == 1.0 else 2

    def to_bytes(self) -> bytes:
        """Chunk body: float64 little-endian guidance, then the prompt in UTF-8."""
        return _GUIDANCE.pack(self.guidance) + self.prompt.encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> TextConditioning:
        if len(data) <= _GUIDANCE.size:
            raise CorruptFileError(f"Cond chunk has {len(data)} bytes; it needs a guidance scale and a prompt")
        (guidance,) = _GUIDANCE.unpack_from(data)
        try:
            return cls(data[_GUIDANCE.size :].decode("utf-8"), guidance)
        except UnicodeDecodeError:
            raise CorruptFileError("Cond chunk: the prompt is not valid UTF-8") from None
        except InvalidParameterError as exc:
            raise CorruptFileError(f"Cond chunk: {exc}") from None

    def chunk(self) -> tuple[bytes, bytes]:
        return CHUNK_TAG, self.to_bytes()


def from_options(prompt: str | None, guidance: float | None) -> TextConditioning | None:
    """The conditioning the ``prompt=`` / ``guidance=`` options ask for (None: unconditional)."""
    if prompt is None or prompt == "":
        if guidance is not None and guidance != DEFAULT_GUIDANCE:
            raise InvalidParameterError(f"guidance={guidance!r} needs a prompt= to guide towards")
        return None
    return TextConditioning(prompt, DEFAULT_GUIDANCE if guidance is None else guidance)


def from_chunks(chunks: tuple[tuple[bytes, bytes], ...]) -> TextConditioning | None:
    """The conditioning a file was coded with, from its chunks (None: unconditional)."""
    bodies = [data for tag, data in chunks if tag == CHUNK_TAG]
    if len(bodies) > 1:
        raise CorruptFileError(f"File has {len(bodies)} Cond chunks; at most one is allowed")
    return TextConditioning.from_bytes(bodies[0]) if bodies else None
