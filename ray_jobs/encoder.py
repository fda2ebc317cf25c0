"""The worker side of a bulk job: an encoder that loads its model once and turns whole shards into entries.

:class:`ShardEncoder` is the body of a Ray actor (``ray.remote`` is applied by :mod:`ray_jobs.bulk`,
with the CPUs or GPUs it asks for). For each shard it reads the shard's source items, opens them with
Pillow, encodes same-size, same-mode images together in batches (one codebook scan per batch) and
writes the shard with :func:`storage.write_shard`. An item that cannot be read, opened or encoded
becomes a failed entry with its error (a multi-frame image without the job's ``frame`` is one, see
:func:`pillow_diffcodec.imagemodes.select_frame`); only errors that would fail every item alike (no
model, a model other than the job's, an unknown codec) stop the job. Warnings raised while an image is
encoded (e.g. :class:`~pillow_diffcodec.RateFallbackWarning` for an image too small for the rate) are
kept in its entry (``Entry.warning``) and returned to the driver for the report. After each batch the
worker tells the job's :class:`ProgressCounter` how many items are done, so the bar moves per image.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

import storage
from pillow_diffcodec.errors import DiffCodecError, ModelMismatchError, ModelNotFoundError, UnknownCodecError
from pillow_diffcodec.imagemodes import select_frame

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
    frame: int | None = None  # the frame encoded from multi-frame images (None: they fail)
    restoration: dict[str, Any] = field(default_factory=dict)  # restore=, perception=, record_task= (DDCM Sec. 6)

    def recorded(self) -> dict[str, Any]:
        """The settings that shape the files, JSON-able, as stored in the archive's job (no batching, no device)."""
        given = {"bpp": self.bpp, "quality": self.quality, "seed": self.seed, "keep_alpha": self.keep_alpha,
                 "frame": self.frame, **self.restoration}
        codec = {name: list(value) if isinstance(value, tuple) else value for name, value in self.params.items()}
        return {name: value for name, value in {**given, **codec}.items() if value is not None}


@dataclass(frozen=True)
class ShardResult:
    """What one shard contributed: entry counts, source and file bytes, the ok entries' pixels and the
    warnings of its ok entries by key; or, when the shard could not be written, ``error`` (the shard stays
    incomplete and is retried)."""

    shard: int
    ok: int = 0
    failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    pixels: int = 0
    warnings: dict[str, str] = field(default_factory=dict)
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


class ProgressCounter:
    """Items done per shard attempt, as workers report them: the body of a small Ray actor (no CPU) that
    the driver polls for its progress bar. Attempts are counted apart, so a retried shard counts once."""

    def __init__(self) -> None:
        self.done: dict[int, int] = {}

    def add(self, attempt: int, items: int) -> None:
        self.done[attempt] = self.done.get(attempt, 0) + items

    def counts(self) -> dict[int, int]:
        """Items done so far, by attempt."""
        return dict(self.done)


@dataclass(frozen=True)
class ProgressLink:
    """Where a worker reports one shard attempt's progress: the job's counter actor and the attempt's number."""

    counter: Any  # a Ray actor handle of ProgressCounter
    attempt: int

    def add(self, items: int) -> None:
        if items:
            self.counter.add.remote(self.attempt, items)


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

    def encode_shard(
        self, job: ShardJob, shard: int, items: Sequence[SourceItem], progress: ProgressLink | None = None
    ) -> ShardResult:
        """Read, encode and store the items of shard ``shard`` (the keys the archive reserved there),
        telling ``progress`` how many items are done after each batch.

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
            return self._encode_shard(job, shard, items, progress)
        except JOB_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001  (the driver retries the shard and reports the error)
            return ShardResult(shard, error=f"{type(exc).__name__}: {exc}")

    def _encode_shard(
        self, job: ShardJob, shard: int, items: Sequence[SourceItem], progress: ProgressLink | None
    ) -> ShardResult:
        report = progress.add if progress is not None else _ignore
        pending = [_Pending(item.key, None) for item in items]
        for slot, data in zip(pending, job.reader.read(items)):
            if isinstance(data, Exception):
                slot.entry = storage.Entry.failed(slot.key, _reading_error(data))
            else:
                slot.raw = data
                _open(slot, job.settings.frame)
        report(sum(slot.entry is not None for slot in pending))  # items that failed before encoding
        for batch in _batches([slot for slot in pending if slot.entry is None], job.settings.batch_size):
            self._encode(batch, job.settings)
            report(len(batch))
        entries = [slot.entry for slot in pending if slot.entry is not None]
        storage.write_shard(job.dest, shard, entries, storage_options=job.storage_options)
        ok = [entry for entry in entries if entry.status == storage.Status.OK]
        return ShardResult(
            shard=shard,
            ok=len(ok),
            failed=len(entries) - len(ok),
            bytes_in=sum(len(slot.raw or b"") for slot in pending),
            bytes_out=sum(len(entry.bitstream) for entry in ok),
            pixels=sum(entry.width * entry.height for entry in ok),
            warnings={entry.key: entry.warning for entry in ok if entry.warning},
        )

    def _encode(self, batch: list[_Pending], settings: EncodeSettings) -> None:
        """Encode a batch together; when that fails, each image alone, so that a bad one fails by itself.

        The warnings raised meanwhile are kept in every entry of the batch (its images share the codec's
        parameters, which is what rate warnings are about).
        """
        from pillow_diffcodec import encode_images

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                results = encode_images(
                    [slot.image for slot in batch], codec=settings.codec, model=self.model, bpp=settings.bpp,
                    quality=settings.quality, seed=settings.seed, keep_alpha=settings.keep_alpha,
                    **settings.restoration, **settings.params,
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
        warning = _describe_warnings(caught)
        for slot, result in zip(batch, results):
            slot.entry = storage.Entry.ok(slot.key, result.data, source=slot.raw, warning=warning)
            slot.image = None


def _ignore(items: int) -> None:
    """Progress reporting when nobody listens."""


def _describe_warnings(caught: list[warnings.WarningMessage]) -> str:
    """The user-facing warnings (UserWarning and its kinds) as one line, each once: "TypeName: message; ..."."""
    lines = [f"{w.category.__name__}: {w.message}" for w in caught if issubclass(w.category, UserWarning)]
    return "; ".join(dict.fromkeys(lines))


def _reading_error(exc: Exception) -> Exception:
    if isinstance(exc, FileNotFoundError):
        return FileNotFoundError(f"the source item is missing ({exc})")
    return exc


def _open(slot: _Pending, frame: int | None) -> None:
    """Decode the source file (its frame ``frame``, see :func:`select_frame`) into ``slot.image``, or record
    the failure in ``slot.entry`` (any Pillow error, or a multi-frame image without ``frame``)."""
    data = slot.raw or b""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # noqa: BLE001  (corrupt files raise many types from Pillow's decoders)
        what = "not an image Pillow can read" if isinstance(exc, Image.UnidentifiedImageError) else str(exc)
        slot.entry = storage.Entry.failed(slot.key, f"{type(exc).__name__}: {what} ({len(data)} bytes)", source=data)
        return
    try:
        slot.image = select_frame(image, frame)
    except DiffCodecError as exc:
        slot.entry = storage.Entry.failed(slot.key, exc, source=data)


def _batches(slots: list[_Pending], size: int) -> list[list[_Pending]]:
    """Same-size, same-mode images together, at most ``size`` per batch, in item order."""
    groups: dict[tuple[tuple[int, int], str], list[_Pending]] = {}
    for slot in slots:
        groups.setdefault((slot.image.size, slot.image.mode), []).append(slot)  # type: ignore[union-attr]
    return [group[start : start + size] for group in groups.values() for start in range(0, len(group), size)]
