"""Reading archives back at scale: a Ray Dataset of decoded images, and extraction to files in parallel.

Both cut the archive into its shards and hand them to decoder actors (Ray Data's actor pool), which
load the model once and, on GPUs when the cluster has them, decode one shard after another.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import storage
from storage.extract import ExtractReport, OutputFormat, extract_entry, output_bases

from .cluster import WorkerPlan, connect, plan_workers

METADATA_COLUMNS = ("index", "key", "width", "height", "mode", "bpp", "bytes", "source_size", "source_sha256")


class _ShardDecoder:
    """Decodes the ok entries of whole shards of one archive (the body of a Ray Data actor)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None, model: str | None, device: str) -> None:
        from pillow_diffcodec.models import load_model

        self.archive = storage.open_archive(url, "r", storage_options)
        self.options: dict[str, Any] = {"device": device}
        if model is not None:
            self.options["model"] = load_model(model, device=device)

    def entries(self, shard: int) -> Iterator[tuple[dict[str, Any], bytes | storage.ArchiveError | None]]:
        """Each entry of the shard with its checked bitstream: None unless ok, the error when damaged."""
        size = self.archive.items_per_shard
        for index in range(shard * size, min((shard + 1) * size, len(self.archive))):
            row = self.archive.info(index)
            if row["status"] != "ok":
                yield row, None
                continue
            try:
                yield row, self.archive.read_bytes(index)
            except storage.ArchiveError as exc:
                yield row, exc

    def decode(self, data: bytes) -> Any:
        import pillow_diffcodec

        return pillow_diffcodec.decode(data, **self.options)


class _DatasetDecoder(_ShardDecoder):
    """``flat_map`` body: one shard index in, one row per ok entry out (image as a uint8 array)."""

    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        for info, data in self.entries(int(row["shard"])):
            if data is None:
                continue
            if isinstance(data, storage.ArchiveError):
                raise data
            image = self.decode(data)
            rows.append({**{name: info[name] for name in METADATA_COLUMNS}, "image": np.asarray(image)})
        return rows


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
) -> Any:
    """A Ray Dataset of the archive's ok entries, decoded by actors spread over the cluster.

    Columns: ``image`` (uint8 array: H x W for L, H x W x 3 for RGB, H x W x 4 for RGBA) and the
    metadata ``index``, ``key``, ``width``, ``height``, ``mode``, ``bpp``, ``bytes``, ``source_size``,
    ``source_sha256``. Failed and pending entries are left out (``storage.open_archive(url).failed()``
    lists them); a damaged entry fails the dataset with its :class:`storage.CorruptEntryError`.
    Decoding uses the model named in each file unless ``model`` is given; workers as in
    :func:`ray_jobs.bulk_compress`. Ray stays connected (the dataset runs when it is consumed).
    """
    connect(ray_address)
    plan = plan_workers(num_gpus, num_workers)
    shards, count, _ = _shard_dataset(url, storage_options, only_ok=True)
    return _mapped(shards, count, _DatasetDecoder, plan, (url, storage_options, model, plan.device))


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
