"""The worker side of a bulk job: an encoder that loads its model once and turns whole shards into entries.

:class:`ShardEncoder` is the body of a Ray actor (``ray.remote`` is applied by :mod:`ray_jobs.bulk`,
with the CPUs or GPUs it asks for). For each shard it reads the shard's source items, opens them with
Pillow, encodes same-size, same-mode images together in batches (one codebook scan per batch) and
writes the shard with :func:`storage.write_shard`. An item that cannot be read, opened or encoded
becomes a failed entry with its error; only errors that would fail every item alike (no model, a model
other than the job's, an unknown codec) stop the job.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

import storage
from pillow_diffcodec.errors import ModelMismatchError, ModelNotFoundError, RateFallbackWarning, UnknownCodecError
from storage.archive_layout import Status

from .sources import SourceItem, SourceReader

JOB_ERRORS = (ModelNotFoundError, ModelMismatchError, UnknownCodecError)  # these fail every item alike: the job stops


@dataclass(frozen=True)
class EncodeSettings:
    """How every item of a job is encoded (what the archive records as the job's params, plus batching);
    the model is the worker's own, checked against the job's fingerprint."""

    codec: str
    bpp: float | None = None
    quality: float | None = None
    seed: int = 0
    keep_alpha: bool = True
    batch_size: int = 8
    params: dict[str, Any] = field(default_factory=dict)  # the codec's own parameters

    def recorded(self) -> dict[str, Any]:
        """The settings that shape the files, JSON-able, as stored in the archive's job (no batching, no device)."""
        given = {"bpp": self.bpp, "quality": self.quality, "seed": self.seed, "keep_alpha": self.keep_alpha}
        codec = {name: list(value) if isinstance(value, tuple) else value for name, value in self.params.items()}
        return {name: value for name, value in {**given, **codec}.items() if value is not None}


@dataclass(frozen=True)
class ShardResult:
    """What one shard contributed: entry counts, source and file bytes, the sum of the ok entries' bpp;
    or, when the shard could not be written, ``error`` (the shard stays incomplete and is retried)."""

    shard: int
    ok: int = 0
    failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    bpp_sum: float = 0.0
    error: str = ""

    @property
    def items(self) -> int:
        return self.ok + self.failed


@dataclass
class _Pending:
    """One source item on its way to an entry."""

    key: str
    raw: bytes | None
    image: Image.Image | None = None
    entry: storage.Entry | None = None


@dataclass(frozen=True)
class ShardJob:
    """Where a job's shards go and how they are made: what every ``encode_shard`` call shares."""

    dest: str
    storage_options: dict[str, Any] | None
    reader: SourceReader
    settings: EncodeSettings
    fingerprint: str  # hex fingerprint of the model the job records; every worker's model must have it


class ShardEncoder:
    """Encodes whole shards into an archive. Make one per worker: it loads the model once, when it starts,
    so that the driver can list the source and prepare the archive meanwhile."""

    def __init__(self, model: str | None, dtype: str | None, device: str) -> None:
        from pillow_diffcodec.models import load_model

        self.model: Any = None
        self.failure: Exception | None = None  # raised by encode_shard, so that the driver sees why
        try:
            self.model = load_model(model, device=device, dtype=dtype)
        except JOB_ERRORS as exc:
            self.failure = exc

    def encode_shard(self, job: ShardJob, shard: int, items: Sequence[SourceItem]) -> ShardResult:
        """Read, encode and store the items of shard ``shard`` (the keys the archive reserved there).

        Errors that concern every item (no model, another model than the job's, unknown codec) are
        raised; any other that stops the shard (e.g. the archive cannot be written) is returned in
        ``ShardResult.error``.
        """
        if self.failure is not None:
            raise self.failure
        if self.model.fingerprint.hex() != job.fingerprint:
            raise ModelMismatchError(
                f"The worker's model {self.model.name!r} has fingerprint {self.model.fingerprint.hex()}, but the job's "
                f"has {job.fingerprint}; give every node of the cluster the same model files"
            )
        try:
            return self._encode_shard(job, shard, items)
        except JOB_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001  (the driver retries the shard and reports the error)
            return ShardResult(shard, error=f"{type(exc).__name__}: {exc}")

    def _encode_shard(self, job: ShardJob, shard: int, items: Sequence[SourceItem]) -> ShardResult:
        pending = [_Pending(item.key, None) for item in items]
        for slot, data in zip(pending, job.reader.read(items)):
            if isinstance(data, Exception):
                slot.entry = storage.Entry.failed(slot.key, _reading_error(data))
            else:
                slot.raw = data
                _open(slot)
        for batch in _batches([slot for slot in pending if slot.entry is None], job.settings.batch_size):
            self._encode(batch, job.settings)
        entries = [slot.entry for slot in pending if slot.entry is not None]
        storage.write_shard(job.dest, shard, entries, storage_options=job.storage_options)
        ok = [entry for entry in entries if entry.status == Status.OK]
        return ShardResult(
            shard=shard,
            ok=len(ok),
            failed=len(entries) - len(ok),
            bytes_in=sum(len(slot.raw or b"") for slot in pending),
            bytes_out=sum(len(entry.bitstream) for entry in ok),
            bpp_sum=sum(entry.bpp for entry in ok),
        )

    def _encode(self, batch: list[_Pending], settings: EncodeSettings) -> None:
        """Encode a batch together; when that fails, each image alone, so that a bad one fails by itself."""
        from pillow_diffcodec import encode_images

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RateFallbackWarning)  # small images at a preset: expected in bulk
                results = encode_images(
                    [slot.image for slot in batch], codec=settings.codec, model=self.model, bpp=settings.bpp,
                    quality=settings.quality, seed=settings.seed, keep_alpha=settings.keep_alpha, **settings.params,
                )
        except JOB_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001  (anything one image causes is recorded for that image)
            if len(batch) > 1:
                for slot in batch:
                    self._encode([slot], settings)
                return
            batch[0].entry = storage.Entry.failed(batch[0].key, exc, source=batch[0].raw)
            return
        for slot, result in zip(batch, results):
            slot.entry = storage.Entry.ok(slot.key, result.data, source=slot.raw)
            slot.image = None


def _reading_error(exc: Exception) -> Exception:
    if isinstance(exc, FileNotFoundError):
        return FileNotFoundError(f"the source item is missing ({exc})")
    return exc


def _open(slot: _Pending) -> None:
    """Decode the source file into ``slot.image``, or record the failure in ``slot.entry`` (any Pillow error)."""
    data = slot.raw or b""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # noqa: BLE001  (corrupt files raise many types from Pillow's decoders)
        what = "not an image Pillow can read" if isinstance(exc, Image.UnidentifiedImageError) else str(exc)
        slot.entry = storage.Entry.failed(slot.key, f"{type(exc).__name__}: {what} ({len(data)} bytes)", source=data)
        return
    slot.image = image


def _batches(slots: list[_Pending], size: int) -> list[list[_Pending]]:
    """Same-size, same-mode images together, at most ``size`` per batch, in item order."""
    groups: dict[tuple[tuple[int, int], str], list[_Pending]] = {}
    for slot in slots:
        groups.setdefault((slot.image.size, slot.image.mode), []).append(slot)  # type: ignore[union-attr]
    return [group[start : start + size] for group in groups.values() for start in range(0, len(group), size)]
