"""The zarr v3 layout of an image archive (specified byte by byte in docs/ARCHIVE.md).

An archive is a zarr group holding ten one-dimensional arrays of equal length, one element per entry
("slot"). Slots are cut into shards of ``items_per_shard``: every array stores one shard's worth of
slots in one object, so a writer that owns a shard touches its own ten objects and nothing else. The
``bitstream`` array is sharded with one inner chunk per entry (zarr's ``sharding_indexed`` codec), so
one entry is read with two ranged requests; the small per-entry columns keep one chunk per shard.
The ``status`` array is written last and is what makes entries visible.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

import zarr
import zarr.abc.store
import zarr.core.sync
import zarr.dtype
from zarr.errors import ZarrUserWarning

import pillow_diffcodec

from .errors import ArchiveNotFoundError, NotAnArchiveError, UnsupportedArchiveVersionError

FORMAT_VERSION = 1
ATTRIBUTE = "diffcodec_archive"  # the group attribute that marks a zarr group as an archive
VERIFY_ATTRIBUTE = "diffcodec_verify"  # the group attribute holding the last verify's outcome
JOB_BACKUP = "diffcodec_job"  # a copy of the job on the key array, so that a lost root zarr.json can be rebuilt
DEFAULT_ITEMS_PER_SHARD = 1024
MAX_ITEMS_PER_SHARD = 1 << 20
MAX_KEY_BYTES = 4096


class Status(IntEnum):
    """Value of an entry's ``status`` element."""

    PENDING = 0  # reserved, not written yet (the array's fill value)
    OK = 1
    FAILED = 2


@dataclass(frozen=True)
class Column:
    """One per-entry array of the layout."""

    name: str
    dtype: Any
    fill_value: Any
    sharded: bool = False  # True: one inner chunk per entry inside each shard object
    compressed: bool = True


COLUMNS: tuple[Column, ...] = (
    Column("key", zarr.dtype.VariableLengthUTF8(), ""),
    Column("bitstream", zarr.dtype.VariableLengthBytes(), b"", sharded=True, compressed=False),
    Column("width", "uint32", 0),
    Column("height", "uint32", 0),
    Column("mode", zarr.dtype.VariableLengthUTF8(), ""),
    Column("bpp", "float64", float("nan")),
    Column("source_size", "int64", -1),
    Column("source_sha256", zarr.dtype.VariableLengthUTF8(), ""),
    Column("error", zarr.dtype.VariableLengthUTF8(), ""),
    Column("status", "uint8", int(Status.PENDING)),
)
COLUMN_NAMES = tuple(column.name for column in COLUMNS)
# What a shard writer stores before the status that publishes it (keys are written when slots are made).
PAYLOAD_COLUMNS = tuple(name for name in COLUMN_NAMES if name not in ("key", "status"))
ROW_COLUMNS = tuple(name for name in COLUMN_NAMES if name != "bitstream")


@contextlib.contextmanager
def quiet_zarr() -> Iterator[None]:
    """Silence zarr's notices that variable-length bytes and consolidated metadata are not yet in the v3 spec.

    Both are documented choices of this layout (docs/ARCHIVE.md); users need not see them on every open.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ZarrUserWarning)
        warnings.filterwarnings("ignore", message=r".*does not have a Zarr V3 specification.*")
        yield


def check_items_per_shard(items_per_shard: int) -> int:
    if isinstance(items_per_shard, bool) or not isinstance(items_per_shard, int):
        raise pillow_diffcodec.InvalidParameterError(f"Expected items_per_shard to be an int, got {items_per_shard!r}")
    if not 1 <= items_per_shard <= MAX_ITEMS_PER_SHARD:
        raise pillow_diffcodec.InvalidParameterError(
            f"Expected items_per_shard in [1, {MAX_ITEMS_PER_SHARD}], got {items_per_shard}"
        )
    return items_per_shard


def create(group: zarr.Group, items_per_shard: int, job: dict[str, Any]) -> None:
    """Create the arrays (length 0) and the group attribute of a new archive in an empty ``group``."""
    for column in COLUMNS:
        with quiet_zarr():
            group.create_array(
                column.name,
                shape=(0,),
                dtype=column.dtype,
                chunks=(1,) if column.sharded else (items_per_shard,),
                shards=(items_per_shard,) if column.sharded else None,
                fill_value=column.fill_value,
                compressors="auto" if column.compressed else None,
                attributes={JOB_BACKUP: job} if column.name == "key" else None,
            )
    group.attrs[ATTRIBUTE] = {
        "format_version": FORMAT_VERSION,
        "items_per_shard": items_per_shard,
        "length": 0,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "library_version": pillow_diffcodec.__version__,
        "job": job,
    }


def back_up_job(key_array: zarr.Array, job: dict[str, Any]) -> None:
    """Keep a copy of the archive's job on its ``key`` array (read by :func:`storage.repair.rebuild_root`)."""
    with quiet_zarr():
        key_array.attrs[JOB_BACKUP] = job


def read_attributes(group: zarr.Group, where: str) -> dict[str, Any]:
    """The archive attribute of ``group``, checked against this library's layout version."""
    attributes = group.attrs.get(ATTRIBUTE)
    if not isinstance(attributes, dict):
        raise NotAnArchiveError(
            f"{where} is a zarr group but not a diffcodec archive (it has no {ATTRIBUTE!r} attribute); "
            "open an archive written by storage.open_archive, or use mode 'w' to create one"
        )
    version = attributes.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise NotAnArchiveError(f"{where}: {ATTRIBUTE}.format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise UnsupportedArchiveVersionError(
            f"{where} uses archive format version {version}, but this pillow-diffcodec "
            f"({pillow_diffcodec.__version__}) reads versions up to {FORMAT_VERSION}; upgrade pillow-diffcodec"
        )
    for name, kind in (("items_per_shard", int), ("length", int), ("job", dict)):
        if not isinstance(attributes.get(name), kind) or isinstance(attributes.get(name), bool):
            raise NotAnArchiveError(f"{where}: {ATTRIBUTE}.{name} is missing or not a {kind.__name__}")
    check_items_per_shard(attributes["items_per_shard"])
    if attributes["length"] < 0:
        raise NotAnArchiveError(f"{where}: {ATTRIBUTE}.length is negative ({attributes['length']})")
    return attributes


def open_columns(group: zarr.Group, where: str, attributes: dict[str, Any]) -> dict[str, zarr.Array]:
    """The archive's arrays, checked to exist, be one-dimensional, cover ``length`` entries and keep
    ``items_per_shard`` entries per object."""
    length, items_per_shard = attributes["length"], attributes["items_per_shard"]
    columns = {}
    for column in COLUMNS:
        try:
            with quiet_zarr():
                array = group[column.name]
        except KeyError:
            raise NotAnArchiveError(
                f"{where}: the archive has no {column.name!r} array (damaged or not an archive)"
            ) from None
        if not isinstance(array, zarr.Array) or array.ndim != 1 or array.shape[0] < length:
            raise NotAnArchiveError(
                f"{where}: {column.name!r} must be a one-dimensional array of at least {length} elements"
            )
        if (array.shards or array.chunks) != (items_per_shard,):
            raise NotAnArchiveError(
                f"{where}: {column.name!r} is stored in objects of {array.shards or array.chunks} elements, "
                f"but the archive's shards hold {items_per_shard}"
            )
        columns[column.name] = array
    return columns


def holds_data(store: zarr.abc.store.Store) -> bool:
    """True when anything at all is stored under the store's root."""
    return not zarr.core.sync.sync(store.is_empty(""))


def open_group(store: zarr.abc.store.Store, where: str, *, writable: bool, consolidated: bool) -> zarr.Group:
    """The zarr group at ``store``, with zarr's own errors turned into archive errors that name ``where``.

    ``consolidated`` reads every array's metadata from the root's consolidated copy (one request);
    without it each array's ``zarr.json`` is read, which is what a writer that repairs the copy needs.
    """
    try:
        with quiet_zarr():
            return zarr.open_group(
                store, mode="r+" if writable else "r", zarr_format=3, use_consolidated=None if consolidated else False
            )
    except FileNotFoundError:
        raise ArchiveNotFoundError(
            f"No archive at {where} (no zarr group there: zarr.json is missing); check the URL, "
            "or open it with mode 'w' or 'a' to create one"
        ) from None
    except (ValueError, TypeError, KeyError, OSError) as exc:  # zarr's metadata and JSON errors are ValueErrors
        raise NotAnArchiveError(
            f"{where} is not a zarr v3 group holding a diffcodec archive ({exc}); if it was one and only its root "
            f"zarr.json is damaged, `diffcodec archive repair {where}` rebuilds it from the arrays"
        ) from None
