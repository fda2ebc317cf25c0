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

    from ..models import DiffusionModel

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
    channels; ``progress`` is called after each model call."""

    def choose_params(
        self,
        model: DiffusionModel,
        given: dict[str, Any],
        bpp: float | None,
        quality: float | None,
        file_size: Callable[[Any], int],
        pixels: int,
    ) -> CodecParams:
        """Rate control: parameters from the user's explicit ones (``given``) and ``bpp=``/``quality=``;
        ``file_size(params)`` is the exact whole-file size a choice would give for an image of ``pixels``."""
        ...

    def payload_bytes(self, params: Any, model: DiffusionModel, width: int, height: int) -> int:
        """Exact payload length for these parameters and image size (independent of the pixels)."""
        ...

    def encode_batch(
        self, model: DiffusionModel, params: Any, seed: int, pixels: Sequence[torch.Tensor],
        progress: Progress | None = None,
    ) -> list[tuple[bytes, torch.Tensor]]:
        """Same-size images -> (payload, the pixels the decoder will produce) per image."""
        ...

    def decode(
        self, model: DiffusionModel, params: Any, seed: int, width: int, height: int, payload: bytes,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """A payload -> pixels (raises CorruptFileError on a payload that does not fit the parameters)."""
        ...

    def generate(
        self, model: DiffusionModel, params: Any, seed: int, width: int, height: int, rng: np.random.Generator,
    ) -> tuple[bytes, torch.Tensor]:
        """Compressed generation: a random sample with the payload that decodes to it (or
        InvalidParameterError for codecs that cannot generate)."""
        ...
