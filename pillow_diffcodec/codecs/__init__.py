"""Codec registry: the single source of truth for codec names, numeric file ids and Pillow formats.

Ids are explicit numbers written into every file and never derived from registration order.
2 is PSC, 3 CDC, 4 CorrDiff, 5 FLDC (foundation latent diffusion).
Each codec is one folder (``codecs/<name>/``: a torch-free ``format`` module and a ``runner``, see
:mod:`.base`). Each entry names its parameter class (enough to read a header) and the runner module
(:class:`~.base.Codec`), imported only when something is encoded or decoded, the kind of model it runs
on (``model_kind``, see :func:`pillow_diffcodec.models.kind_of`) with the model used when none is given,
and what it can do beyond encoding and decoding (``can_generate``, ``progressive``, ``exact_size``,
``decode_options``), so that callers ask instead of catching errors.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import cast

from ..errors import InvalidParameterError, UnknownCodecError, UnsupportedVersionError
from ..options import Option, params_options
from .base import Codec, CodecParams, ConditionalCodec, GeneratingCodec
from .cdc.format import CDC_DECODE_OPTIONS, CDCParams
from .corrdiff.format import CORRDIFF_DECODE_OPTIONS, CorrDiffParams
from .ddcm.format import DDCMParams
from .fldc.format import FLDCParams
from .psc.format import PSC_DECODE_OPTIONS, PSCParams

__all__ = ["CODECS", "Codec", "CodecEntry", "CodecParams", "GeneratingCodec", "codec_by_id", "codec_by_name"]


@dataclass(frozen=True)
class CodecEntry:
    """One registered codec."""

    name: str
    codec_id: int
    params: type[CodecParams]
    module: str
    extensions: tuple[str, ...]
    mime: str
    description: str
    decode_options: tuple[Option, ...] = ()  # the codec's own decode-time options (api.decode keywords)
    exact_size: bool = False  # payload_bound is the exact payload length (else an upper bound)
    can_generate: bool = False  # compressed generation (api.generate)
    # compressed conditional generation (restore=, guided generate): the module with restore_batch and
    # generate_guided (see base.ConditionalCodec); None: the codec codes given images only
    conditional: str | None = None
    progressive: bool = False  # any prefix of the payload decodes (to a coarser image)
    model_kind: str = "diffusion"  # "diffusion" (a DiffusionModel), "cdc", "corrdiff" or "fldc" (their models)
    default_model: str = "builtin"
    # Intra-op CPU threads the codec's maths run on, so that every decode of a file gives the encoder's
    # pixels whatever the caller's thread count (see pillow_diffcodec.compute); None: the codec pins its
    # own (PSC records its count in the file).
    compute_threads: int | None = 1

    def model_or_default(self, model: object) -> object:
        """``model`` as given, or this codec's default model when it is None."""
        return model if model is not None else self.default_model

    def load(self) -> Codec:
        """Import the runner module (brings in torch)."""
        return cast(Codec, importlib.import_module(self.module))

    def generator(self) -> GeneratingCodec:
        """The runner, for compressed generation; InvalidParameterError when the codec cannot generate."""
        if not self.can_generate:
            able = [entry.name for entry in CODECS if entry.can_generate]
            raise InvalidParameterError(
                f"{self.name} cannot generate: it codes a given image (codecs that generate: {', '.join(able)})")
        return cast(GeneratingCodec, self.load())

    def check_conditional(self) -> None:
        """InvalidParameterError naming the codecs that can, unless this one restores and guides (torch-free)."""
        if self.conditional is None:
            able = [entry.name for entry in CODECS if entry.conditional]
            raise InvalidParameterError(
                f"{self.name} cannot restore or guide: it codes a given image (codecs that can: {', '.join(able)})")

    def conditional_runner(self) -> ConditionalCodec:
        """The module for compressed restoration and guided generation; InvalidParameterError when the codec has none."""
        self.check_conditional()
        return cast(ConditionalCodec, importlib.import_module(self.conditional))

    @property
    def options(self) -> tuple[Option, ...]:
        """The codec's own options: the fields of its parameter class."""
        return params_options(self.params)


CODECS: tuple[CodecEntry, ...] = (
    CodecEntry(
        name="DDCM",
        codec_id=1,
        params=DDCMParams,
        module="pillow_diffcodec.codecs.ddcm.runner",
        extensions=(".ddcm",),
        mime="image/x-ddcm",
        description="Denoising Diffusion Codebook Models",
        exact_size=True,
        can_generate=True,
        conditional="pillow_diffcodec.codecs.ddcm.conditional",
    ),
    CodecEntry(
        name="PSC",
        codec_id=2,
        params=PSCParams,
        module="pillow_diffcodec.codecs.psc.runner",
        extensions=(".psc",),
        mime="image/x-psc",
        description="Zero-shot compression by diffusion posterior sampling",
        decode_options=PSC_DECODE_OPTIONS,
        progressive=True,
        compute_threads=None,
    ),
    CodecEntry(
        name="CDC",
        codec_id=3,
        params=CDCParams,
        module="pillow_diffcodec.codecs.cdc.runner",
        extensions=(".cdc",),
        mime="image/x-cdc",
        description="Learned transform and hyperprior with a conditional diffusion decoder",
        decode_options=CDC_DECODE_OPTIONS,
        model_kind="cdc",
        default_model="builtin-cdc",
    ),
    CodecEntry(
        name="CORRDIFF",
        codec_id=4,
        params=CorrDiffParams,
        module="pillow_diffcodec.codecs.corrdiff.runner",
        extensions=(".crd",),
        mime="image/x-corrdiff",
        description="Conditional diffusion decoder corrected by a privileged end-to-end decoder (CorrDiff)",
        decode_options=CORRDIFF_DECODE_OPTIONS,
        model_kind="corrdiff",
        default_model="builtin-corrdiff",
    ),
    CodecEntry(
        name="FLDC",
        codec_id=5,
        params=FLDCParams,
        module="pillow_diffcodec.codecs.fldc.runner",
        extensions=(".fldc",),
        mime="image/x-fldc",
        description="Adaptive latent quantisation and partial denoising with a foundation latent diffusion model",
        model_kind="fldc",
        default_model="builtin-fldc",
    ),
)
CODECS_BY_NAME = {entry.name: entry for entry in CODECS}
CODECS_BY_ID = {entry.codec_id: entry for entry in CODECS}
DEFAULT_CODEC = "DDCM"


def codec_by_name(name: str) -> CodecEntry:
    """The codec registered under ``name`` (case-insensitive)."""
    entry = CODECS_BY_NAME.get(str(name).upper())
    if entry is None:
        raise UnknownCodecError(f"Unknown codec {name!r}; available: {sorted(CODECS_BY_NAME)}")
    return entry


def codec_by_id(codec_id: int) -> CodecEntry:
    """The codec whose file id is ``codec_id``."""
    entry = CODECS_BY_ID.get(codec_id)
    if entry is None:
        known = {e.codec_id: e.name for e in CODECS}
        raise UnsupportedVersionError(f"Unknown codec id {codec_id} in file; this library knows {known}")
    return entry
