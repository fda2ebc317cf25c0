"""One definition of every option a user can give, from which ``encode``, ``Image.save``, the CLI and the
docs all derive (torch-free).

Two kinds: the generic options every codec takes (rate, model, seed, device, metadata, ...) listed
here, and each codec's own parameters, read from the fields of its parameter dataclass (the field's
``metadata`` carries the help text and, where the type alone does not say it, choices and arity).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import limits
from .errors import InvalidParameterError


@dataclass(frozen=True)
class Option:
    """One user-facing option: its Python keyword, CLI flag, type, default and help text."""

    name: str
    help: str
    default: Any = None
    type: Callable[[str], Any] | None = None  # how the CLI parses one value; None: a boolean flag
    choices: tuple[Any, ...] | None = None
    nargs: int | None = None
    metavar: tuple[str, ...] | str | None = None
    cli: bool = True  # False: Python-only (bytes-valued metadata, callbacks)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        """Help text with the default, as ``--help`` and the README show it."""
        default = "none" if self.default is None else self.default
        return f"{self.help} (default: {default})"


DTYPE_NAMES = ("float32", "float16", "bfloat16")
DEFAULT_QUALITY = 50  # the rate preset used when neither a rate nor any codec parameter is given (0.4 bpp)
# Quality presets: bpp = QUALITY_BPP_AT_0 * 2 ** (quality / QUALITY_POINTS_PER_DOUBLING): 0.1 bpp at 0, doubling
# every 25 points (0.2 at 25, 0.4 at 50, 0.8 at 75, 1.6 at 100). 0.1 is the lowest rate at which the built-in
# model's photos stay recognisable: at 0.05 a 256x256 crop decodes to texture without its objects (issue 11;
# README, "Quality presets").
QUALITY_BPP_AT_0 = 0.1
QUALITY_POINTS_PER_DOUBLING = 25
ENCODE_OPTIONS: tuple[Option, ...] = (
    Option("bpp", "target rate of the whole file in bits per pixel (header included); the largest configuration "
           "that fits is chosen before encoding", type=float),
    Option("quality", f"0-100 preset for a target rate: bpp = {QUALITY_BPP_AT_0} * 2 ** (quality / "
           f"{QUALITY_POINTS_PER_DOUBLING}); used when no rate and no codec parameter is given",
           default=DEFAULT_QUALITY, type=float),
    Option("model", "model: 'builtin', a local diffusers folder, or a Hugging Face repo id already in the local "
           "cache", default="builtin", type=str),
    Option("prompt", "text prompt a Stable Diffusion model is conditioned on, stored in the file (DDCM App. B.6; "
           "none: unconditional)", type=str),
    Option("guidance", "classifier-free guidance scale with a prompt (1: the conditional model alone, one UNet call "
           "per step; other values two)", default=1.0, type=float),
    Option("seed", "codebook seed stored in the file", default=0, type=int),
    Option("device", "torch device to run the model on, e.g. cpu, cuda, cuda:1", default="cpu", type=str),
    Option("dtype", "model precision", default="float32", type=str, choices=DTYPE_NAMES),
    Option("keep_alpha", "keep an alpha channel losslessly (False drops it)", default=True),
    Option("frame", "frame of a multi-frame image (animated GIF/APNG/WebP, multi-page TIFF) to encode, from 0; "
           "multi-frame images are refused without it", type=int, metavar="N"),
    Option("icc_profile", "ICC profile bytes (default: the image's own)", cli=False),
    Option("exif", "EXIF bytes or PIL.Image.Exif (default: the image's own)", cli=False),
    Option("xmp", "XMP packet (default: the image's own)", cli=False),
    Option("progress", "callable(done, total) called after each model call", cli=False),
    Option("restore", "restore while compressing (DDCM Sec. 6): treat the input as degraded and store its "
           "restoration: 'sr4' (4x bicubic super-resolution) or 'colorize' (greyscale to colour); the file decodes "
           "without the input", type=str, choices=("sr4", "colorize")),
    Option("perception", "with restore: choose each step between a codeword towards the plain estimate and a "
           "random one by MSE (of [0, 1] images) + PERCEPTION x NIQE (DDCM eq. 11-12; 0.001-0.01 trades PSNR for "
           "NIQE; none: posterior sampling, eq. 10)", type=float),
    Option("nr_measure", "with perception: callable(image (C, H, W) in [0, 1]) -> score, lower is better "
           "(default: NIQE)", cli=False),
    Option("record_task", "with restore: note the task in the file (info['restored_by'])", default=False),
)
DECODE_OPTIONS: tuple[Option, ...] = (
    Option("model", "model to decode with instead of the one named in the file (its fingerprint must match)",
           type=str),
    Option("device", "torch device to run the model on", default="cpu", type=str),
    Option("dtype", "model precision", default="float32", type=str, choices=DTYPE_NAMES),
    Option("max_work", "refuse files that need more than this many model calls x model positions (pixels, or "
           "latent positions for a latent model; pillow_diffcodec.limits.MAX_DECODE_WORK)", default=limits.MAX_DECODE_WORK, type=int),
    Option("max_pixels", "refuse images larger than this many pixels (pillow_diffcodec.limits.MAX_DECODE_PIXELS)",
           default=limits.MAX_DECODE_PIXELS, type=int),
    Option("progress", "callable(done, total) called after each model call", cli=False),
)


def params_options(params_class: type) -> tuple[Option, ...]:
    """The options of a codec's parameter dataclass: one per field, with the field's default and help."""
    options = []
    for field in dataclasses.fields(params_class):
        meta = field.metadata
        default = field.default if field.default is not dataclasses.MISSING else None
        options.append(Option(
            name=field.name,
            help=meta.get("help", ""),
            default=default,
            type=meta.get("type", type(default) if default is not None else str),
            choices=meta.get("choices"),
            nargs=meta.get("nargs"),
            metavar=meta.get("metavar"),
        ))
    return tuple(options)


def names(options: Iterable[Option]) -> frozenset[str]:
    return frozenset(option.name for option in options)


def check_known(given: Iterable[str], allowed: Iterable[Option], what: str) -> None:
    """Raise :class:`InvalidParameterError` naming every unknown option and listing the known ones."""
    known = names(allowed)
    unknown = sorted(set(given) - known)
    if unknown:
        raise InvalidParameterError(f"Unknown {what} option(s) {unknown}; expected some of {sorted(known)}")


def quality_to_bpp(quality: float) -> float:
    """Quality preset (0-100) to the target rate every codec's rate control aims at (see QUALITY_BPP_AT_0)."""
    if isinstance(quality, bool) or not isinstance(quality, (int, float)) or not 0 <= quality <= 100:
        raise InvalidParameterError(f"Expected quality in [0, 100], got {quality!r}")
    return QUALITY_BPP_AT_0 * 2 ** (quality / QUALITY_POINTS_PER_DOUBLING)


@dataclass(frozen=True)
class RateTarget:
    """What a codec's rate control aims at: ``bpp`` for the whole file; ``preset``: it came from a quality
    preset (which may fall back to the smallest file with a warning, where an explicit ``bpp=`` refuses)."""

    bpp: float
    preset: bool


def rate_target(bpp: float | None, quality: float | None, explicit_params: bool) -> RateTarget | None:
    """The rate every codec's ``choose_params`` starts from: ``bpp=`` or ``quality=`` (not both); neither
    means the default quality, unless codec parameters were given, which are then used as they are (None)."""
    if bpp is not None and quality is not None:
        raise InvalidParameterError("Give bpp= or quality=, not both")
    if bpp is None and quality is None:
        if explicit_params:
            return None
        quality = DEFAULT_QUALITY
    target = bpp if bpp is not None else quality_to_bpp(quality)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 64:
        raise InvalidParameterError(f"Expected bpp in (0, 64], got {target!r}")
    return RateTarget(float(target), preset=bpp is None)
