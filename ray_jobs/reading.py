"""Reading archives back at scale: a Ray Dataset of decoded images, and extraction to files in parallel.

Both cut the archive into its shards and hand them to decoder actors (Ray Data's actor pool), which
load the model once and, on GPUs when the cluster has them, decode one shard after another.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

import storage
from pillow_diffcodec.errors import InvalidParameterError
from storage import ExtractReport, OutputFormat, extract_entry, output_bases

from .cluster import WorkerPlan, connect, plan_workers

METADATA_COLUMNS = ("index", "key", "width", "height", "mode", "bpp", "bytes", "source_size", "source_sha256")
OnError = Literal["raise", "skip", "null"]
ON_ERROR: tuple[OnError, ...] = ("raise", "skip", "null")


class _ShardDecoder:
    """Decodes the ok entries of whole shards of one archive (the body of a Ray Data actor)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None, model: str | None, device: str) -> None:
        from pillow_diffcodec.models import load_model

        self.archive = storage.open_archive(url, "r", storage_options)
        self.options: dict[str, Any] = {"device": device}
        if model is not None:
            self.options["model"] = load_model(model, device=device)

    def decode(self, data: bytes) -> Any:
        import pillow_diffcodec

        return pillow_diffcodec.decode(data, **self.options)


class _DatasetDecoder(_ShardDecoder):
    """``flat_map`` body: one shard index in, one row per ok entry out (image as a uint8 array); a damaged
    entry raises, is left out or becomes a row with image None, as ``on_error`` says."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None, model: str | None, device: str,
                 on_error: OnError) -> None:
        super().__init__(url, storage_options, model, device)
        self.on_error = on_error

    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        for info, data in self.archive.records([int(row["shard"])]):
            if data is None or (isinstance(data, storage.ArchiveError) and self.on_error == "skip"):
                continue
            if isinstance(data, storage.ArchiveError) and self.on_error == "raise":
                from .dataset_errors import DamagedEntryError

                raise DamagedEntryError(str(data)) from None
            rows.append({**{name: info[name] for name in METADATA_COLUMNS}, **self.decoded(data)})
        return rows

    def decoded(self, data: bytes | storage.ArchiveError) -> dict[str, Any]:
        """The row's image (None for a damaged entry) and, with ``on_error="null"``, its ``error`` column."""
        if isinstance(data, storage.ArchiveError):
            return {"image": None, "error": str(data)}
        image = np.asarray(self.decode(data))
        return {"image": image, "error": ""} if self.on_error == "null" else {"image": image}


class _FileWriter(_ShardDecoder):
    """``flat_map`` body: writes a shard's entries as files (:func:`storage.extract.extract_entry`); one
    status row per entry."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None, model: str | None, device: str,
                 dest: str, format: OutputFormat, dest_options: dict[str, Any] | None,
                 bases: dict[str, str | storage.ArchiveError]) -> None:
        super().__init__(url, storage_options, model, device)
        self.dest, self.format, self.dest_options, self.bases = dest, format, dest_options, bases

    def __call__(self, row: dict[str, Any]) -> list[dict[str, str]]:
        out = []
        for info, data in self.archive.records([int(row["shard"])]):
            key = info["key"]
            outcome, detail = extract_entry(
                info, data, self.bases[key], self.dest, self.format, self.decode, self.dest_options)
            out.append({"key": key, "outcome": outcome, "detail": detail})
        return out


def _shard_dataset(url: str, storage_options: dict[str, Any] | None, only_ok: bool) -> tuple[Any, int, int]:
    """A dataset with one row per shard (those holding ok entries, or all), its length and the number of entries."""
    import ray.data

    archive = storage.open_archive(url, "r", storage_options)
    size = archive.items_per_shard
    shards = range(-(-len(archive) // size))
    if only_ok:
        status = [row["status"] for row in archive.entries()]
        shards = [s for s in shards if "ok" in status[s * size : (s + 1) * size]]
    items = [{"shard": shard} for shard in shards]
    return ray.data.from_items(items, override_num_blocks=max(1, len(items))), len(items), len(archive)


def _mapped(dataset: Any, shards: int, body: type, plan: WorkerPlan, arguments: tuple[Any, ...]) -> Any:
    import ray.data

    return dataset.flat_map(
        body,
        fn_constructor_args=arguments,
        compute=ray.data.ActorPoolStrategy(size=max(1, min(plan.count, shards))),
        num_cpus=plan.num_cpus,
        num_gpus=plan.num_gpus,
    )


@contextlib.contextmanager
def quiet_ray_data() -> Iterator[None]:
    """Turn off Ray Data's progress bars and progress log lines for a while (a bar of our own shows progress)."""
    import ray.data

    context, logger = ray.data.DataContext.get_current(), logging.getLogger("ray.data")
    bars, level = context.enable_progress_bars, logger.level
    context.enable_progress_bars = False
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        context.enable_progress_bars = bars
        logger.setLevel(level)


def read_archive(
    url: str,
    *,
    storage_options: dict[str, Any] | None = None,
    model: str | None = None,
    num_gpus: float | None = None,
    num_workers: int | None = None,
    ray_address: str | None = None,
    on_error: OnError = "raise",
) -> Any:
    """A Ray Dataset of the archive's ok entries, decoded by actors spread over the cluster.

    Columns: ``image`` (uint8 array: H x W for L, H x W x 3 for RGB, H x W x 4 for RGBA) and the
    metadata ``index``, ``key``, ``width``, ``height``, ``mode``, ``bpp``, ``bytes``, ``source_size``,
    ``source_sha256``. Failed and pending entries are left out (``storage.open_archive(url).failed()``
    lists them). A damaged entry (``diffcodec archive verify --repair`` repairs it), by ``on_error``:

    - ``"raise"`` (default): consuming the dataset (``take_all()``, ``iter_rows()``, ...) raises a
      :class:`storage.CorruptEntryError` whose message names the key. Ray wraps it: the exception is
      Ray's ``RayTaskError(DamagedEntryError)``, an instance of both ``ray.exceptions.RayTaskError``
      and :class:`storage.CorruptEntryError` (``except storage.CorruptEntryError`` catches it); its
      ``cause`` is the worker's :class:`ray_jobs.dataset_errors.DamagedEntryError` with the message
      alone. This dataset (and those made from it) raises the original errors of its map functions.
      The failed dataset's decoder actors keep their CPUs (or GPUs) until nothing refers to the
      exception any more: on a small cluster, drop it before reading again (the traceback holds them).
    - ``"skip"``: the entry is left out.
    - ``"null"``: its row has ``image`` None, and every row has an ``error`` column (the entry's
      error, "" for the others).

    Decoding uses the model named in each file unless ``model`` is given; workers as in
    :func:`ray_jobs.bulk_compress`. Ray stays connected (the dataset runs when it is consumed).
    """
    if on_error not in ON_ERROR:
        raise InvalidParameterError(f"Expected on_error to be one of {ON_ERROR}, got {on_error!r}")
    connect(ray_address)
    plan = plan_workers(num_gpus, num_workers)
    shards, count, _ = _shard_dataset(url, storage_options, only_ok=True)
    dataset = _mapped(shards, count, _DatasetDecoder, plan, (url, storage_options, model, plan.device, on_error))
    dataset.context.raise_original_map_exception = True  # the worker's CorruptEntryError, not a UserCodeException
    return dataset


def extract_archive(
    url: str,
    dest: str,
    *,
    format: str | None = "PNG",
    storage_options: dict[str, Any] | None = None,
    dest_options: dict[str, Any] | None = None,
    model: str | None = None,
    num_gpus: float | None = None,
    num_workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = True,
) -> ExtractReport:
    """Decode every ok entry and write it below ``dest`` (atomically), in parallel; what is written and
    how outputs are named as :func:`storage.extract.extract` (``format="RAW"`` or a codec name: the
    stored files as they are). Failed and pending entries are skipped, damaged ones reported; the others
    go on. Workers as in :func:`ray_jobs.bulk_compress`.
    """
    output = OutputFormat.named(format)  # an unknown format stops here, before any worker starts
    session = connect(ray_address)
    try:
        plan = plan_workers(num_gpus, num_workers)
        shards, count, entries = _shard_dataset(url, storage_options, only_ok=False)
        bases = output_bases(storage.open_archive(url, "r", storage_options).keys())
        arguments = (url, storage_options, model, plan.device, dest, output, dest_options, bases)
        report = ExtractReport()
        with tqdm(total=entries, unit="img", desc="extract", disable=not progress) as bar, quiet_ray_data():
            for row in _mapped(shards, count, _FileWriter, plan, arguments).iter_rows():
                report.record(row["key"], row["outcome"], row["detail"])
                bar.update()
    finally:
        session.close()
    return report
