"""The interface every codec implements, so that ``api``, ``fileinfo``, the Pillow plugin, the CLI,
archives and Ray jobs dispatch through the registry and never name a codec.

A codec is two modules: a torch-free *format* module holding its parameter class (enough to read a
header, count decoding work and list options), and a *runner* module that imports torch and does the
work. The runner module itself satisfies :class:`Codec` (PEP 544 protocols accept modules).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import numpy as np
    import torch

Progress = Callable[[int, int], None]  # (model calls done, model calls in all)
P = TypeVar("P", bound="CodecParams")


class CodecParams(Protocol):
    """A codec's parameters: a frozen dataclass validated on creation (InvalidParameterError), whose
    fields (with ``metadata["help"]``) are the codec's options and whose defaults are its one family of
    defaults. ``to_dict``/``from_dict`` and ``to_bytes``/``from_bytes`` mirror each other."""

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls: type[P], data: dict[str, Any]) -> P: ...

    def to_bytes(self) -> bytes: ...

    @classmethod
    def from_bytes(cls: type[P], data: bytes) -> P: ...  # raises CorruptFileError

    def decode_model_calls(self, **decode_options: Any) -> int:
        """Model calls a decode makes at most, given the codec's decode options (unknown ones are ignored)."""
        ...


class Codec(Protocol):
    """What a codec's runner module provides. Pixels are uint8 tensors (C, H, W) in the model's image
    channels; ``model`` is of the kind the codec's registry entry names (``model_kind``); ``progress`` is
    called after each model call. What a codec can do beyond this (compressed generation, progressive
    decoding, decode options) is declared on its registry entry, not discovered by catching errors."""

    def choose_params(
        self,
        model: Any,
        given: dict[str, Any],
        bpp: float | None,
        quality: float | None,
        header_size: Callable[[Any], int],
        width: int,
        height: int,
        images: Sequence[torch.Tensor] = (),
    ) -> CodecParams:
        """Rate control: parameters from the user's explicit ones (``given``) and ``bpp=``/``quality=``;
        ``header_size(params)`` is the exact size of everything in the file but the payload (header,
        chunks, CRC) for a choice, for an image of ``width`` x ``height``. ``images`` are the uint8 images
        about to be coded with the result (none for a restoration): a codec whose rate depends on the
        pixels may code them to choose (CDC and CorrDiff measure each rate point's latent); the others
        ignore them."""
        ...

    def payload_bound(self, params: Any, model: Any, width: int, height: int) -> int:
        """The largest payload these parameters can give for this image size (independent of the pixels);
        the exact payload length when the registry entry declares ``exact_size``."""
        ...

    def encode_batch(
        self, model: Any, params: Any, seed: int, pixels: Sequence[torch.Tensor], progress: Progress | None = None,
    ) -> list[tuple[bytes, torch.Tensor]]:
        """Same-size images -> (payload, the pixels the decoder will produce) per image."""
        ...

    def decode(
        self, model: Any, params: Any, seed: int, width: int, height: int, payload: bytes,
        progress: Progress | None = None, **decode_options: Any,
    ) -> torch.Tensor:
        """A payload -> pixels (raises CorruptFileError on a payload that does not fit the parameters);
        ``decode_options`` are the entry's ``decode_options``."""
        ...


class GeneratingCodec(Codec, Protocol):
    """A codec whose registry entry declares ``can_generate``: compressed generation (DDCM Sec. 4)."""

    def generate(
        self, model: Any, params: Any, seed: int, width: int, height: int, rng: np.random.Generator,
    ) -> tuple[bytes, torch.Tensor]:
        """A random sample with the payload that decodes to it."""
        ...


class ConditionalCodec(Protocol):
    """The module of a codec whose registry entry names one in ``conditional``: compressed conditional
    generation (DDCM Sec. 6), where the file holds a restored or guided sample and decodes without the condition."""

    def restore_batch(
        self, model: Any, params: Any, seed: int, task: Any, measurements: Sequence[torch.Tensor], width: int,
        height: int, *, perception: float | None = None, measure: Callable[[torch.Tensor], float] | None = None,
        progress: Progress | None = None,
    ) -> list[tuple[bytes, torch.Tensor]]:
        """Degraded inputs (1, C, h, w) in [-1, 1] -> (payload, pixels of the restored image) per input."""
        ...

    def generate_guided(
        self, model: Any, params: Any, seed: int, width: int, height: int, rng: np.random.Generator, guide: Any,
    ) -> tuple[bytes, torch.Tensor]:
        """A guided sample (text or classifier guidance) with the payload that decodes to it."""
        ...
