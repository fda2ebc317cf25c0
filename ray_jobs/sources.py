"""Sources of a bulk job: listed once on the driver, read item by item in the workers.

A source is any fsspec URL (with ``storage_options`` for its filesystem):

- a folder (searched recursively) or a glob of image files: keys are the paths relative to the folder
  (or to the glob's fixed prefix); files whose suffix Pillow does not know are left out;
- a tar or zip archive, local or remote (``photos.tar``, ``s3://bucket/photos.zip``, or fsspec's own
  chaining ``tar://subfolder::s3://bucket/photos.tar``): keys are the member paths;
- a parquet file, or a folder of parquet files, with an image-bytes column (binary, or a struct with a
  ``bytes`` field as Hugging Face datasets write) and a key column.

Listing gives every item a key and a locator in a deterministic order (sorted paths; parquet files
sorted, rows in file order), so a rerun lists the same items in the same order and resumes.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import fsspec
from fsspec import AbstractFileSystem
from PIL import Image

from .errors import SourceError

Kind = Literal["files", "tar", "zip", "parquet"]
ARCHIVE_SUFFIXES: tuple[tuple[str, Kind], ...] = (
    (".tar", "tar"), (".tar.gz", "tar"), (".tgz", "tar"), (".tar.bz2", "tar"), (".tar.xz", "tar"), (".zip", "zip"),
)
PARQUET_SUFFIXES = (".parquet", ".pq")
GLOB_CHARACTERS = "*?["
READ_THREADS = 8


@dataclass(frozen=True)
class SourceItem:
    """One source image: its key in the archive and where to read it.

    ``path`` is a path on the source's filesystem (a file, a parquet file) or a member of a tar or
    zip archive; for parquet, ``row_group`` and ``row`` (within the group) locate the row.
    """

    key: str
    path: str
    row_group: int = -1
    row: int = -1


_filesystems: dict[str, AbstractFileSystem] = {}  # per process, so that a tar index is read once per worker


@dataclass(frozen=True)
class SourceReader:
    """What a worker needs to read items (small and picklable); opens the filesystem once per process."""

    kind: Kind
    url: str  # the source as given (files, parquet) or the archive file's URL (tar, zip)
    storage_options: dict[str, Any] | None = None
    image_column: str = "image"

    def filesystem(self) -> AbstractFileSystem:
        """The filesystem the items' paths belong to (for tar and zip: the archive's members)."""
        cache_key = json.dumps([self.kind, self.url, self.storage_options], sort_keys=True, default=str)
        if cache_key not in _filesystems:
            options = dict(self.storage_options or {})
            if self.kind in ("tar", "zip"):
                _filesystems[cache_key] = fsspec.filesystem(self.kind, fo=self.url, target_options=options)
            else:
                _filesystems[cache_key] = fsspec.core.url_to_fs(self.url, **options)[0]
        return _filesystems[cache_key]

    def read(self, items: Sequence[SourceItem]) -> list[bytes | Exception]:
        """The bytes of each item, or the exception that stopped reading it (the others go on)."""
        if self.kind == "parquet":
            return self._read_rows(items)
        fs = self.filesystem()

        def read_one(item: SourceItem) -> bytes | Exception:
            try:
                return fs.cat_file(item.path)
            except Exception as exc:  # noqa: BLE001  (an unreadable item fails alone)
                return exc

        if len(items) <= 1 or self.kind != "files":  # archive members come from one file handle: read in turn
            return [read_one(item) for item in items]
        with ThreadPoolExecutor(READ_THREADS) as pool:  # overlaps the latency of object stores
            return list(pool.map(read_one, items))

    def _read_rows(self, items: Sequence[SourceItem]) -> list[bytes | Exception]:
        import pyarrow.parquet as pq

        fs = self.filesystem()
        groups: dict[tuple[str, int], list[Any] | Exception] = {}
        for place in dict.fromkeys((item.path, item.row_group) for item in items):
            try:
                with fs.open(place[0], "rb") as handle:
                    column = pq.ParquetFile(handle).read_row_group(place[1], columns=[self.image_column])
                groups[place] = column.column(0).to_pylist()
            except Exception as exc:  # noqa: BLE001  (a damaged file fails its own items only)
                groups[place] = exc
        results: list[bytes | Exception] = []
        for item in items:
            rows = groups[(item.path, item.row_group)]
            results.append(rows if isinstance(rows, Exception) else _image_bytes(rows[item.row], item.key))
        return results


@dataclass(frozen=True)
class Listing:
    """A listed source: its items in job order and the reader the workers use."""

    reader: SourceReader
    items: tuple[SourceItem, ...] = field(repr=False)

    @property
    def keys(self) -> list[str]:
        return [item.key for item in self.items]


def _image_bytes(value: Any, key: str) -> bytes | Exception:
    if isinstance(value, dict):
        value = value.get("bytes")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return SourceError(f"Row {key!r} has no image bytes (got {type(value).__name__})")


def image_suffixes() -> frozenset[str]:
    """File suffixes Pillow (with the diffcodec formats) can open, lower case with the dot."""
    Image.init()
    return frozenset(suffix.lower() for suffix in Image.registered_extensions())


def source_kind(url: str) -> Kind:
    """What the URL names, from its form: a tar or zip archive, a parquet file, or files (folder, glob, file)."""
    head = url.split("::", 1)[0]
    for kind in ("tar", "zip"):
        if head.startswith(f"{kind}://"):
            return kind  # type: ignore[return-value]
    lowered = url.lower().rstrip("/")
    for suffix, kind in ARCHIVE_SUFFIXES:
        if lowered.endswith(suffix):
            return kind
    return "parquet" if lowered.endswith(PARQUET_SUFFIXES) else "files"


def list_source(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    image_column: str = "image",
    key_column: str = "key",
) -> Listing:
    """List the items of the source at ``url`` in a deterministic order (see the module docstring).

    Raises :class:`SourceError` when nothing is there, it holds no images, or keys repeat.
    """
    kind = source_kind(url)
    try:
        if kind in ("tar", "zip"):
            listing = _list_archive(url, kind, storage_options)
        elif kind == "parquet":
            fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
            listing = _list_parquet(url, fs, [path], storage_options, image_column, key_column)
        else:
            listing = _list_files(url, storage_options, image_column, key_column)
    except SourceError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise SourceError(f"Cannot list the source {url}: {type(exc).__name__}: {exc}") from exc
    if not listing.items:
        raise SourceError(f"The source {url} holds no images (looked for files Pillow opens)")
    _refuse_repeated_keys(url, listing.keys)
    return listing


def _refuse_repeated_keys(url: str, keys: list[str]) -> None:
    seen: set[str] = set()
    repeated = [key for key in keys if key in seen or seen.add(key)]
    if repeated:
        raise SourceError(
            f"The source {url} lists {len(repeated)} key(s) more than once (e.g. {repeated[:3]}); "
            "every item needs its own key"
        )


def _list_files(
    url: str, storage_options: dict[str, Any] | None, image_column: str, key_column: str
) -> Listing:
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if any(character in path for character in GLOB_CHARACTERS):
        fixed = path[: min(path.index(c) for c in GLOB_CHARACTERS if c in path)]
        base = fixed.rsplit("/", 1)[0] if "/" in fixed else ""
        found = sorted(match for match in fs.glob(path) if not fs.isdir(match))
    elif fs.isdir(path):
        base = path.rstrip("/")
        found = sorted(fs.find(path))
    elif fs.exists(path):
        base, found = posixpath.dirname(path), [path]
    else:
        raise SourceError(f"No such source: {url} (neither a folder, a glob with matches, nor a file)")
    suffixes = image_suffixes()
    images = [p for p in found if posixpath.splitext(p)[1].lower() in suffixes]
    tables = [p for p in found if p.lower().endswith(PARQUET_SUFFIXES)]
    if not images and tables:
        return _list_parquet(url, fs, tables, storage_options, image_column, key_column)
    items = tuple(SourceItem(_relative(p, base), p) for p in images)
    return Listing(SourceReader("files", url, storage_options), items)


def _relative(path: str, base: str) -> str:
    return posixpath.relpath(path, base) if base else path.lstrip("/")


def _list_archive(url: str, kind: Kind, storage_options: dict[str, Any] | None) -> Listing:
    head, _, target = url.partition("::")
    if head.startswith(f"{kind}://"):
        prefix = head[len(kind) + 3 :].strip("/")
        if not target:
            raise SourceError(f"{url}: a chained {kind} URL names its archive after '::', e.g. {kind}://::s3://b/a.{kind}")
    else:
        prefix, target = "", url
    reader = SourceReader(kind, target, storage_options)
    fs = reader.filesystem()
    suffixes = image_suffixes()
    members = sorted(
        m for m in fs.find(prefix) if posixpath.splitext(m)[1].lower() in suffixes and not fs.isdir(m)
    )
    return Listing(reader, tuple(SourceItem(_relative(m, prefix), m) for m in members))


def _list_parquet(
    url: str,
    fs: AbstractFileSystem,
    paths: list[str],
    storage_options: dict[str, Any] | None,
    image_column: str,
    key_column: str,
) -> Listing:
    import pyarrow as pa
    import pyarrow.parquet as pq

    items: list[SourceItem] = []
    for path in sorted(paths):
        with fs.open(path, "rb") as handle:
            table = pq.ParquetFile(handle)
            schema = table.schema_arrow
            for column in (image_column, key_column):
                if column not in schema.names:
                    raise SourceError(
                        f"The parquet file {path} has no column {column!r}; its columns are {schema.names} "
                        "(choose them with image_column= / key_column=, --image-column / --key-column)"
                    )
            image_type = schema.field(image_column).type
            binary = pa.types.is_binary(image_type) or pa.types.is_large_binary(image_type)
            if not binary and not (pa.types.is_struct(image_type) and image_type.get_field_index("bytes") >= 0):
                raise SourceError(
                    f"Column {image_column!r} of {path} holds {image_type}, not image bytes "
                    "(binary, or a struct with a 'bytes' field)"
                )
            keys = table.read(columns=[key_column]).column(0).to_pylist()
            row = 0
            for group in range(table.metadata.num_row_groups):
                for offset in range(table.metadata.row_group(group).num_rows):
                    items.append(SourceItem(str(keys[row]), path, group, offset))
                    row += 1
    return Listing(SourceReader("parquet", url, storage_options, image_column), tuple(items))
