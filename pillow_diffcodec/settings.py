"""One validated set of encode settings, shared by every entry point.

The API (and through it the Pillow plugin, the CLI and ``diffcodec eval``), bulk jobs and the zarr codec
build an :class:`EncodeSettings` from what the user gave, so they accept and refuse the same values with
the same messages: a registered codec, the codec's own parameters (names and values), a rate as ``bpp``
in (0, 64] or ``quality`` in [0, 100] (not both), a seed in [0, 2**32 - 1] and a known dtype name.
Torch-free: bulk jobs validate on the driver before any worker starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .codecs import DEFAULT_CODEC, CodecEntry, codec_by_name
from .container import MAX_SEED
from .errors import InvalidParameterError
from .options import DTYPE_NAMES, ENCODE_OPTIONS, check_known, rate_target


def check_seed(seed: object) -> int:
    """``seed`` if it is an int in [0, MAX_SEED] (the header's 32 bits), else InvalidParameterError."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InvalidParameterError(f"Expected seed in [0, {MAX_SEED}], got {seed!r}")
    return seed


@dataclass(frozen=True)
class EncodeSettings:
    """What an encode needs besides the image: validated on creation (InvalidParameterError or
    UnknownCodecError). ``model`` is a reference or a model object (None: the codec's default); ``device``
    is resolved where the model is loaded; ``params`` are the codec's own parameters."""

    codec: str = DEFAULT_CODEC
    model: Any = None
    bpp: float | None = None
    quality: float | None = None
    seed: int = 0
    device: Any = None
    dtype: Any = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        entry = codec_by_name(self.codec)  # UnknownCodecError lists the registered codecs
        object.__setattr__(self, "codec", entry.name)
        if not isinstance(self.params, Mapping):
            raise InvalidParameterError(f"Expected the codec parameters as a mapping, got {self.params!r}")
        check_known(self.params, entry.options, entry.name)
        entry.params.from_dict(dict(self.params))  # every given value is checked by the codec's parameter class
        rate_target(self.bpp, self.quality, bool(self.params))  # bpp or quality, not both, each in range
        check_seed(self.seed)
        if isinstance(self.dtype, str) and self.dtype not in DTYPE_NAMES:
            raise InvalidParameterError(f"Expected dtype to be one of {list(DTYPE_NAMES)}, got {self.dtype!r}")

    @property
    def entry(self) -> CodecEntry:
        return codec_by_name(self.codec)



TASK_NAMES = next(option.choices for option in ENCODE_OPTIONS if option.name == "restore")


def check_restoration(
    entry: CodecEntry, restore: object = None, perception: object = None, record_task: bool = False,
    nr_measure: object = None,
) -> None:
    """The restoration options (DDCM Sec. 6) checked together, torch-free (bulk jobs check them on the driver):
    the others need ``restore``, the codec must restore, a task name must be known (any other value is a user's
    :class:`~pillow_diffcodec.restoration.Degradation`, checked where it is used), the weight is >= 0 and finite
    and ``nr_measure`` is callable."""
    if restore is None:
        if perception is not None or nr_measure is not None or record_task:
            raise InvalidParameterError("perception=, nr_measure= and record_task= need restore= (a restoration task)")
        return
    entry.check_conditional()
    if isinstance(restore, str) and restore not in TASK_NAMES:
        raise InvalidParameterError(f"Unknown restoration task {restore!r}; expected one of {list(TASK_NAMES)} "
                                    "or a pillow_diffcodec.restoration.Degradation")
    if perception is not None and (isinstance(perception, bool) or not isinstance(perception, (int, float))
                                   or not 0 <= perception < float("inf")):
        raise InvalidParameterError(f"Expected perception as a weight >= 0, got {perception!r}")
    if nr_measure is not None and not callable(nr_measure):
        raise InvalidParameterError(f"Expected nr_measure as a callable(image) -> float, got {nr_measure!r}")
