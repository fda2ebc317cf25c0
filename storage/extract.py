"""Writing an archive's entries out as ordinary image files below any fsspec URL."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from PIL import Image
from tqdm.auto import tqdm

import pillow_diffcodec
from pillow_diffcodec.errors import DiffCodecError, InvalidParameterError
from pillow_diffcodec.fsio import write_bytes_atomic

from .errors import ArchiveError

if TYPE_CHECKING:
    from .archive import Archive

ENCODED_SUFFIX = ".ddcm"


@dataclass
class ExtractReport:
    """What :meth:`Archive.extract` wrote (``written``: key -> URL) and what it could not (key -> reason)."""

    written: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # failed or pending entries, with why
    errors: dict[str, str] = field(default_factory=dict)  # damaged entries, unsafe keys, write errors


def suffix_for(format: str | None) -> str:
    """File suffix for a Pillow format (".png" for PNG); ".ddcm" for the stored bitstreams (None)."""
    if format is None:
        return ENCODED_SUFFIX
    Image.init()
    if format.upper() not in Image.SAVE:
        raise InvalidParameterError(f"Pillow cannot save format {format!r}; expected one of {sorted(Image.SAVE)}")
    extensions = sorted(ext for ext, name in Image.registered_extensions().items() if name == format.upper())
    preferred = "." + format.lower()
    return preferred if preferred in extensions or not extensions else extensions[0]


def output_name(key: str, suffix: str) -> str:
    """The relative output path of ``key``: its own path with ``suffix``; refuses keys that would escape."""
    path = PurePosixPath(key.replace("\\", "/"))
    parts = key.replace("\\", "/").split("/")
    if path.is_absolute() or "::" in key or any(part in ("", ".", "..") for part in parts):
        raise ArchiveError(
            f"Key {key!r} is not a safe relative path (no '..', '::' or leading '/'), so it is not extracted"
        )
    return str(path.with_suffix(suffix) if path.suffix else path.with_name(path.name + suffix))


def extract(
    archive: Archive,
    dest_url: str,
    format: str | None = "PNG",
    *,
    storage_options: dict[str, Any] | None = None,
    progress: bool = True,
    **decode_options: Any,
) -> ExtractReport:
    """Decode every ok entry and write it to ``dest_url/<key with the format's suffix>`` atomically.

    ``format=None`` writes the stored ``.ddcm`` files as they are. Failed and pending entries are
    skipped, damaged ones reported; the others go on. ``decode_options`` go to
    :func:`pillow_diffcodec.decode` (``model``, ``device``, ...); a progress bar goes to stderr.
    """
    suffix = suffix_for(format)
    report = ExtractReport()
    owners: dict[str, str] = {}
    base = dest_url.rstrip("/")
    with tqdm(total=len(archive), desc="extract", unit="img", disable=not progress) as bar:
        for row, data in archive.records():
            bar.update()
            key = row["key"]
            if data is None:
                report.skipped[key] = row["error"] or row["status"]
                continue
            try:
                if isinstance(data, ArchiveError):
                    raise data
                name = output_name(key, suffix)
                if name in owners:
                    raise ArchiveError(f"Key {key!r} would overwrite the output of key {owners[name]!r} ({name})")
                owners[name] = key
                url = f"{base}/{name}"
                write_bytes_atomic(_encoded(data, format, decode_options), url, storage_options=storage_options)
            except (DiffCodecError, OSError, ValueError) as exc:
                report.errors[key] = str(exc)
                continue
            report.written[key] = url
    return report


def _encoded(data: bytes, format: str | None, decode_options: dict[str, Any]) -> bytes:
    if format is None:
        return data
    image = pillow_diffcodec.decode(data, **decode_options)
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()
