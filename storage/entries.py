"""One archive entry as a writer hands it over: a key with either a bitstream or the error that stopped it."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from pillow_diffcodec import info as file_info
from pillow_diffcodec.errors import DiffCodecError

from .archive_layout import MAX_KEY_BYTES, Status
from .errors import CorruptEntryError, InvalidKeyError


def check_key(key: object) -> str:
    """``key`` if it is a usable entry key (non-empty str, no NUL, at most MAX_KEY_BYTES of UTF-8)."""
    if not isinstance(key, str):
        raise InvalidKeyError(f"Entry keys are strings (the source's relative path), got {type(key).__name__} {key!r}")
    if not key or "\x00" in key:
        raise InvalidKeyError(f"Entry keys must be non-empty and free of NUL characters, got {key!r}")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"Entry key is longer than {MAX_KEY_BYTES} bytes of UTF-8: {key[:60]!r}...")
    return key


@dataclass(frozen=True)
class Entry:
    """What is stored for one source item. Make one with :meth:`ok` or :meth:`failed`.

    ``source_size`` and ``source_sha256`` describe the original file (-1 and "" when unknown);
    width, height, mode and bpp come from the bitstream's header. ``error`` is why a failed entry
    failed; an ok entry keeps there the warnings its encoding raised ("" when none; see :attr:`warning`).
    """

    key: str
    status: Status
    bitstream: bytes = b""
    width: int = 0
    height: int = 0
    mode: str = ""
    bpp: float = math.nan
    error: str = ""
    source_size: int = -1
    source_sha256: str = ""

    def __post_init__(self) -> None:
        check_key(self.key)

    @property
    def warning(self) -> str:
        """The warnings an ok entry was encoded with (``"TypeName: message"``, several joined by "; "), or ""."""
        return self.error if self.status == Status.OK else ""

    @classmethod
    def ok(cls, key: str, bitstream: bytes, *, source: bytes | None = None, warning: str = "") -> Entry:
        """An encoded item, with the ``warning`` its encoding raised (stored in the ``error`` column of an ok
        entry). The bitstream's header and CRC are checked here, so nothing damaged is stored."""
        check_key(key)
        try:
            header = file_info(bytes(bitstream))
        except DiffCodecError as exc:
            raise CorruptEntryError(f"Entry {key!r}: the bitstream is not a valid diffcodec file: {exc}") from exc
        size, digest = _describe_source(source)
        return cls(
            key=key,
            status=Status.OK,
            bitstream=bytes(bitstream),
            width=header["width"],
            height=header["height"],
            mode=header["mode"],
            bpp=header["bpp"],
            source_size=size,
            source_sha256=digest,
            error=warning,
        )

    @classmethod
    def failed(cls, key: str, error: str | BaseException, *, source: bytes | None = None) -> Entry:
        """An item that could not be encoded, recorded with its error (``"TypeName: message"`` for exceptions)."""
        text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
        size, digest = _describe_source(source)
        return cls(key=key, status=Status.FAILED, error=text or "unknown error", source_size=size, source_sha256=digest)


def _describe_source(source: bytes | None) -> tuple[int, str]:
    if source is None:
        return -1, ""
    return len(source), hashlib.sha256(source).hexdigest()
