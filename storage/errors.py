"""Errors raised by zarr image archives.

Every class derives from :class:`pillow_diffcodec.errors.DiffCodecError` and from the built-in
exception that fits (``OSError`` for a store or an entry that cannot be read, ``KeyError`` for an
unknown key, ``IndexError`` for an index out of range, ``ValueError`` for a bad argument), so callers
can catch either family.
"""

from __future__ import annotations

from pillow_diffcodec.errors import CorruptFileError, DiffCodecError


class ArchiveError(DiffCodecError, OSError):
    """An archive cannot be opened, read or written as asked."""


class NotAnArchiveError(ArchiveError):
    """The URL holds something that is not a diffcodec archive (or nothing a reader could open)."""


class ArchiveNotFoundError(NotAnArchiveError, FileNotFoundError):
    """Nothing exists at the URL (mode "r" needs an existing archive)."""


class UnsupportedArchiveVersionError(ArchiveError):
    """The archive was written by a newer layout version than this library reads."""


class ReadOnlyArchiveError(ArchiveError):
    """A write was attempted on an archive opened in mode "r"."""


class CorruptEntryError(ArchiveError, CorruptFileError):
    """One entry's stored bitstream or metadata is missing or damaged (other entries are unaffected)."""


class FailedEntryError(ArchiveError):
    """The entry was recorded as failed when it was written; its message carries the recorded error."""


class PendingEntryError(ArchiveError):
    """The entry is reserved but its shard has not been written yet."""


class EntryNotFoundError(DiffCodecError, KeyError):
    """No entry has this key."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0]) if self.args else ""


class EntryIndexError(DiffCodecError, IndexError):
    """An entry index is outside ``range(len(archive))``."""


class InvalidKeyError(DiffCodecError, ValueError):
    """A key is empty, not a string, too long or contains a NUL character."""


class DuplicateKeyError(DiffCodecError, ValueError):
    """A key is already in the archive (``add(..., overwrite=True)`` replaces an entry)."""


class UnreservedKeyError(DiffCodecError, KeyError):
    """A shard writer was given a key that is not reserved in that shard."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class JobMismatchError(DiffCodecError, ValueError):
    """The archive was written by a job with other settings (codec, model, parameters, source)."""
