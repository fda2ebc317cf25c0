"""Writing an archive's entries out as files below any fsspec URL: decoded images, or the stored files.

One function, :func:`extract_entry`, writes one entry; :func:`extract` (``diffcodec archive extract``,
threads in this process) and :func:`ray_jobs.extract_archive` (``diffcodec bulk-extract``, Ray actors)
both call it, so both name, refuse and report entries alike.

Output names (:func:`output_bases`): an entry's key with its extension replaced by the output's
(``photos/cat.jpg`` -> ``photos/cat.png``); where two keys would then share a name (``photo.png`` and
``photo.jpg``), each of them keeps its full key and gains the output's extension (``photo.png.png``,
``photo.jpg.png``), so no entry is ever written over another.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from PIL import Image
from tqdm.auto import tqdm

import pillow_diffcodec
from pillow_diffcodec.codecs import CODECS_BY_NAME, codec_by_name
from pillow_diffcodec.errors import DiffCodecError, InvalidParameterError
from pillow_diffcodec.fsio import write_bytes_atomic

from .errors import ArchiveError

if TYPE_CHECKING:
    from .archive_reader import ArchiveReader

STORED = "RAW"  # the output format name for "the stored files as they are"
Decoder = Callable[[bytes], Image.Image]
Entry = tuple[dict[str, Any], "bytes | ArchiveError | None"]


@dataclass
class ExtractReport:
    """What an extraction wrote (``written``: key -> URL) and what it could not (key -> reason)."""

    written: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # failed or pending entries, with why
    errors: dict[str, str] = field(default_factory=dict)  # damaged entries, unsafe keys, write errors

    def record(self, key: str, outcome: str, detail: str) -> None:
        """Note one entry's outcome ("written", "skipped" or "errors") and its URL or reason."""
        getattr(self, outcome)[key] = detail


@dataclass(frozen=True)
class OutputFormat:
    """What extraction writes: images saved by Pillow in ``pillow`` format, or (``pillow`` None) each
    entry's stored file as it is, named with its codec's extension; ``codec`` then names the one codec
    the stored files must be (None: any)."""

    pillow: str | None
    codec: str | None = None

    @classmethod
    def named(cls, name: str | None) -> OutputFormat:
        """``"RAW"`` (or None): the stored files; a registered codec (``"PSC"``): its stored files; any
        other name: a format Pillow can save (``"PNG"``). InvalidParameterError for anything else."""
        if name is None or name.upper() == STORED:
            return cls(None)
        if name.upper() in CODECS_BY_NAME:
            return cls(None, name.upper())
        Image.init()
        if name.upper() not in Image.SAVE:
            raise InvalidParameterError(
                f"Cannot extract as {name!r}: expected {STORED} (the stored files), a codec "
                f"({', '.join(CODECS_BY_NAME)}) or a format Pillow saves ({', '.join(sorted(Image.SAVE))})"
            )
        return cls(name.upper())

    def output(self, data: bytes, decode: Decoder) -> tuple[bytes, str]:
        """The bytes to write for one entry's stored file and their extension."""
        if self.pillow is None:
            codec = pillow_diffcodec.info(data)["codec"]
            if self.codec is not None and codec != self.codec:
                raise ArchiveError(f"The entry is a {codec} file, not {self.codec}; extract it as {STORED} or {codec}")
            return data, codec_by_name(codec).extensions[0]
        buffer = io.BytesIO()
        decode(data).save(buffer, format=self.pillow)
        return buffer.getvalue(), _pillow_extension(self.pillow)


def _pillow_extension(format: str) -> str:
    extensions = sorted(ext for ext, name in Image.registered_extensions().items() if name == format)
    preferred = "." + format.lower()
    return preferred if preferred in extensions or not extensions else extensions[0]


def _safe_key(key: str) -> PurePosixPath:
    parts = key.replace("\\", "/").split("/")
    if key.startswith(("/", "\\")) or "::" in key or any(part in ("", ".", "..") for part in parts):
        raise ArchiveError(
            f"Key {key!r} is not a safe relative path (no '..', '::' or leading '/'), so it is not extracted"
        )
    return PurePosixPath(*parts)


def output_bases(keys: Iterable[str]) -> dict[str, str | ArchiveError]:
    """Each key's output path without extension (see the module docstring), or why it is not extracted.

    Keys are unique in an archive and a full key is never the stem of another key's chosen name, so
    the bases come out unique: the rule is applied until no two keys share one.
    """
    bases: dict[str, str | ArchiveError] = {}
    for key in keys:
        try:
            path = _safe_key(key)
        except ArchiveError as exc:
            bases[key] = exc
            continue
        bases[key] = str(path.with_suffix("")) if path.suffix else str(path)
    while True:
        counts = Counter(base for base in bases.values() if isinstance(base, str))
        shared = [key for key, base in bases.items() if isinstance(base, str) and counts[base] > 1 and base != key]
        if not shared:
            return bases
        for key in shared:
            bases[key] = str(_safe_key(key))


def extract_entry(
    row: dict[str, Any], data: bytes | ArchiveError | None, base: str | ArchiveError, dest_url: str,
    format: OutputFormat, decode: Decoder, storage_options: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """Write one entry (``row`` and its checked bitstream, as from :meth:`Archive.records`) to
    ``dest_url/<base><extension>`` atomically; returns its outcome ("written", "skipped" or "errors")
    with the URL written or the reason."""
    if data is None:
        return "skipped", row["error"] or row["status"]
    try:
        for problem in (data, base):
            if isinstance(problem, ArchiveError):
                raise problem
        content, extension = format.output(data, decode)  # type: ignore[arg-type]
        url = f"{dest_url.rstrip('/')}/{base}{extension}"
        write_bytes_atomic(content, url, storage_options=storage_options)
    except (DiffCodecError, OSError, ValueError) as exc:
        return "errors", str(exc)
    return "written", url


def extract(
    archive: ArchiveReader,
    dest_url: str,
    format: str | None = "PNG",
    *,
    storage_options: dict[str, Any] | None = None,
    progress: bool = True,
    jobs: int = 1,
    **decode_options: Any,
) -> ExtractReport:
    """Decode every ok entry and write it below ``dest_url`` (names: see the module docstring), atomically.

    ``format``: a Pillow format (default PNG), or ``"RAW"``/None for the stored files as they are (a
    codec name, e.g. ``"PSC"``, also writes the stored files and refuses entries of another codec).
    Failed and pending entries are skipped, damaged ones reported; the others go on. ``jobs`` entries
    are decoded at once in threads of this process (each codec's maths runs on its pinned thread count,
    so the pixels do not depend on ``jobs``). ``decode_options`` go to :func:`pillow_diffcodec.decode`
    (``model``, ``device``, ...); a progress bar goes to stderr.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InvalidParameterError(f"Expected jobs to be a positive int, got {jobs!r}")
    output = OutputFormat.named(format)
    bases = output_bases(archive.keys())
    report = ExtractReport()

    def decode(data: bytes) -> Image.Image:
        return pillow_diffcodec.decode(data, **decode_options)

    def one(entry: Entry) -> tuple[str, str, str]:
        row, data = entry
        return (row["key"], *extract_entry(row, data, bases[row["key"]], dest_url, output, decode, storage_options))

    with tqdm(total=len(archive), desc="extract", unit="img", disable=not progress) as bar:
        for key, outcome, detail in _in_order(one, archive.records(), jobs):
            report.record(key, outcome, detail)
            bar.update()
    return report


def _in_order(work: Callable[[Entry], tuple[str, str, str]], entries: Iterator[Entry], jobs: int
              ) -> Iterator[tuple[str, str, str]]:
    """``work`` applied to each entry on ``jobs`` threads, results in order, at most 2 x jobs entries in memory."""
    if jobs == 1:
        yield from map(work, entries)
        return
    with ThreadPoolExecutor(jobs, thread_name_prefix="extract") as pool:
        pending: list[Future[tuple[str, str, str]]] = []
        for entry in entries:
            pending.append(pool.submit(work, entry))
            if len(pending) >= 2 * jobs:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()
