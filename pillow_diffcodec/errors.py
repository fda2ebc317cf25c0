"""Exception hierarchy of pillow-diffcodec.

Every error the library raises on purpose derives from :class:`DiffCodecError` and also from
the built-in exception that fits (``ValueError`` for bad values, ``OSError`` for bad files,
``KeyError`` for unknown names), so callers can catch either.
"""

from __future__ import annotations


class DiffCodecError(Exception):
    """Base class of every error raised by pillow-diffcodec."""


class InvalidParameterError(DiffCodecError, ValueError):
    """A codec parameter or option is out of range or unknown."""


class UnsupportedImageError(DiffCodecError, ValueError):
    """The image cannot be encoded (mode, size or content not supported)."""


class CorruptFileError(DiffCodecError, OSError):
    """The bytes are not a valid diffcodec file: foreign, truncated, bit-flipped or inconsistent."""


class NotDiffCodecFileError(CorruptFileError):
    """The bytes do not start with the diffcodec magic number (a foreign file)."""


class DivergenceError(CorruptFileError):
    """A decoder that replays the encoder's computation (PSC) departed from it: its checksums of the
    measurement matrix or of the reconstruction differ from the ones stored in the file."""


class ComputeMismatchError(DiffCodecError, RuntimeError):
    """The file decodes bit-exactly only under the compute signature it was encoded with (PSC: device
    type, dtype, library versions), and this decoder runs under another; the message says how to force it."""


class UnsupportedVersionError(CorruptFileError):
    """The file uses a format version or codec id this library does not know."""


class DecompressionBombError(DiffCodecError, OSError):
    """The file declares an image larger than the pixel limit, or more decoding work than the work limit."""


class ResourceExhaustedError(DiffCodecError, MemoryError):
    """Encoding or decoding ran out of memory (host or accelerator); nothing was written."""


class ModelNotFoundError(DiffCodecError, KeyError):
    """A model reference could not be resolved to a model on this machine."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0]) if self.args else ""


class ModelMismatchError(DiffCodecError, ValueError):
    """The model offered for decoding is not the one the file was encoded with."""


class UnknownCodecError(DiffCodecError, KeyError):
    """A codec name or id is not registered."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class EncodingError(DiffCodecError, RuntimeError):
    """An internal consistency check failed while encoding (a bug: please report it)."""


class RateFallbackWarning(UserWarning):
    """A quality preset asked for less than the smallest possible file; the smallest file was written."""
