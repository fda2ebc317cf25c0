"""``bulk_compress``: a whole image dataset into one zarr archive, on every worker a Ray cluster has.

The driver follows the archive's parallel-writer contract (docs/ARCHIVE.md, "Parallel writers"):

1. list the source once, in a deterministic order; open the archive with the job's settings recorded
   (a rerun with other settings is refused); reserve the keys (a rerun gets the same reservation);
2. hand the shards that are not complete yet to encoder actors, one shard per idle actor; each
   actor loads the model once (while the driver lists the source) and writes whole shards, reporting
   each finished batch to a counter actor that the driver polls for its progress bar;
3. shards whose worker died, or that could not be written, are handed out again (up to
   ``MAX_ROUNDS`` rounds, on the workers still alive plus new ones where the cluster has room);
4. count the entries, store the report in the archive and return it.

Every shard is written whole or not at all, so an interrupted job (Ctrl-C, a dead driver) leaves an
archive that the same call completes, skipping the finished shards and duplicating nothing.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Self

import fsspec
from tqdm.auto import tqdm

import storage
from pillow_diffcodec import settings as pdc_settings
from pillow_diffcodec.codecs import DEFAULT_CODEC, codec_by_name
from pillow_diffcodec.errors import InvalidParameterError
from pillow_diffcodec.imagemodes import check_frame
from pillow_diffcodec.options import DEFAULT_QUALITY

from .cluster import RaySession, WorkerPlan, connect, plan_workers
from .encoder import JOB_ERRORS, EncodeSettings, ProgressCounter, ProgressLink, ShardEncoder, ShardJob, ShardResult
from .errors import IncompleteJobError
from .report import BulkReport, store_report
from .sources import Listing, SourceItem, list_source

DEFAULT_BATCH_SIZE = 8
MAX_ITEMS_PER_SHARD = 1024  # the archive's default: about ten objects per 1024 images
SHARDS_PER_WORKER = 4  # small jobs are cut finer, so that every worker gets several shards
MAX_ROUNDS = 3  # a shard is handed out at most this often before the job gives up on it
PROGRESS_SECONDS = 0.25  # how often the driver asks the workers' progress while shards run
PROGRESS_TIMEOUT = 5.0  # seconds the driver waits for the progress counter before counting finished shards only
MAX_REPORTED_WARNINGS = 20  # the report names this many warned items; the archive's entries keep them all


def bulk_compress(
    source: str,
    dest: str,
    *,
    model: str | None = None,
    bpp: float | None = None,
    quality: float | None = None,
    codec: str = DEFAULT_CODEC,
    seed: int = 0,
    keep_alpha: bool = True,
    frame: int | None = None,
    dtype: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    items_per_shard: int | None = None,
    num_gpus: float | None = None,
    num_workers: int | None = None,
    ray_address: str | None = None,
    resume: bool = True,
    storage_options: dict[str, Any] | None = None,
    image_column: str = "image",
    key_column: str = "key",
    progress: bool = True,
    restore: str | None = None,
    perception: float | None = None,
    record_task: bool = False,
    **codec_params: Any,
) -> BulkReport:
    """Encode every image of ``source`` into the zarr archive ``dest``; returns (and stores) the report.

    ``source``: a folder or glob of images, a tar or zip archive, or parquet with ``image_column``
    and ``key_column`` (see :mod:`ray_jobs.sources`); ``dest``: an archive path or URL. Both take
    ``storage_options``. Encoding options are those of :func:`pillow_diffcodec.encode_images`
    (``model``, ``bpp`` or ``quality``, ``codec``, ``seed``, ``keep_alpha``, ``frame``, ``dtype``, ``restore``,
    ``perception``, ``record_task`` and the codec's own parameters): with ``restore`` a folder of degraded images
    becomes an archive of their compressed restorations. They are recorded in the archive, and a rerun with other ones is refused
    (:class:`storage.JobMismatchError`). Same-size images are encoded ``batch_size`` at a time.
    Multi-frame images (animated GIF/APNG, multi-page TIFF) become failed entries that give their frame
    count, unless ``frame`` chooses the frame to encode (as :func:`pillow_diffcodec.encode_images`).
    Warnings raised while an image is encoded are kept in its entry (``archive ls`` shows them) and
    counted in the report with a few examples.

    Ray: an existing connection in this process is used; else ``ray_address`` (or ``RAY_ADDRESS``) is
    joined; else a new local instance sized to this machine is started and stopped again (a cluster
    that another program started is never joined unasked). One encoder actor runs per CPU,
    or per ``num_gpus`` GPUs when the cluster has GPUs (default 1; 0 forces CPUs); ``num_workers``
    caps their number. ``items_per_shard`` sets the shard size of a new archive (default: about
    four shards per worker, at most 1024 items each).

    ``resume=True`` completes an archive this job started (finished shards are skipped);
    ``resume=False`` replaces whatever archive is at ``dest``. Items that cannot be read or encoded
    are recorded as failed entries with their error. Raises :class:`ray_jobs.IncompleteJobError`
    (with the report) when shards are still missing after every retry; rerunning completes them.
    """
    started = time.perf_counter()
    source, dest = _canonical(source), _canonical(dest)  # workers may run in another folder
    restoration = {name: value for name, value in (("restore", restore), ("perception", perception),
                                                   ("record_task", record_task or None)) if value is not None}
    settings = _settings(bpp, quality, codec, seed, keep_alpha, batch_size, frame, codec_params, restoration)
    model = codec_by_name(settings.codec).model_or_default(model)  # e.g. builtin-cdc for CDC
    session = connect(ray_address)
    try:
        plan = plan_workers(num_gpus, num_workers)
        listing = list_source(source, storage_options, image_column=image_column, key_column=key_column)
        shard_size = items_per_shard or _default_items_per_shard(len(listing.items), plan.count)
        workers = min(plan.count, math.ceil(len(listing.items) / shard_size))
        with EncoderPool(plan, workers, model, dtype) as encoders:  # they load the model while the driver prepares
            from pillow_diffcodec.models import load_model

            loaded = load_model(model, dtype=dtype)  # the model's name and fingerprint, for the job record
            job = {
                "codec": settings.codec,
                "model": loaded.name,
                "fingerprint": loaded.fingerprint.hex(),
                "params": settings.recorded(),
                "source": source,
            }
            archive = storage.open_archive(dest, "a" if resume else "w", storage_options, items_per_shard=shard_size,
                                           job=job)
            reservation = archive.reserve(listing.keys)
            finished = set(archive.complete_shards())
            todo = [shard for shard in reservation.shards if shard not in finished]
            skipped = sum(len(reservation.shard_slots(shard)) for shard in reservation.shards if shard in finished)
            shard_job = ShardJob(dest, storage_options, listing.reader, settings, job["fingerprint"])
            with tqdm(total=len(listing.items), initial=skipped, unit="img", desc="bulk", disable=not progress,
                      smoothing=0.1) as bar:
                results, errors = encoders.run(shard_job, _items_by_shard(listing, reservation, todo), bar)
        report = _report(source, dest, storage_options, listing, results, errors, skipped, encoders.started,
                         session, started)
    finally:
        session.close()
    store_report(dest, report, storage_options)
    if not report.complete:
        raise IncompleteJobError(
            f"{report.pending} of {report.items} items of {dest} are not written ({len(errors)} shard(s) failed "
            f"after {MAX_ROUNDS} tries; e.g. {next(iter(errors.values()), 'no worker was left')}); "
            "the archive is resumable: rerun the same job",
            report,
        )
    return report


def _settings(
    bpp: float | None, quality: float | None, codec: str, seed: int, keep_alpha: bool, batch_size: int,
    frame: int | None, codec_params: Mapping[str, Any], restoration: Mapping[str, Any],
) -> EncodeSettings:
    """Validated settings, so that a mistake stops the job before any item is encoded (not in every worker)."""
    checked = pdc_settings.EncodeSettings(codec, bpp=bpp, quality=quality, seed=seed, params=codec_params)
    pdc_settings.check_restoration(checked.entry, **restoration)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError(f"Expected batch_size to be a positive int, got {batch_size!r}")
    if bpp is None and quality is None and not codec_params:
        quality = DEFAULT_QUALITY  # what encode() would use; recorded so that both spellings match on resume
    return EncodeSettings(
        codec=checked.codec, bpp=bpp, quality=quality, seed=seed, keep_alpha=bool(keep_alpha), batch_size=batch_size,
        params=dict(codec_params), frame=check_frame(frame), restoration=dict(restoration),
    )


def _canonical(source: str) -> str:
    """The source as recorded in the job: local paths made absolute, URLs as given."""
    protocol = fsspec.core.split_protocol(source)[0]
    if protocol is None and "::" not in source:
        return os.path.abspath(source)
    return source


def _default_items_per_shard(items: int, workers: int) -> int:
    return max(1, min(MAX_ITEMS_PER_SHARD, math.ceil(items / (SHARDS_PER_WORKER * workers))))


def _items_by_shard(listing: Listing, reservation: storage.Reservation, shards: Sequence[int]) -> dict[int, list[SourceItem]]:
    """The source items of each shard to write (listing order equals reservation order)."""
    by_shard = {}
    for shard in shards:
        slots = reservation.shard_slots(shard)
        by_shard[shard] = list(listing.items[slots.start - reservation.start : slots.stop - reservation.start])
    return by_shard


class EncoderPool:
    """The job's encoder actors, started at once (each loads the model) and killed when the job ends.

    :meth:`run` hands each idle actor the next shard. A shard whose worker died or that
    could not be written is handed out again in the next round (at most ``MAX_ROUNDS``), on the
    workers still alive plus new ones where the cluster has room now (a removed node's are gone).
    """

    def __init__(self, plan: WorkerPlan, count: int, model: str | None, dtype: str | None) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.plan, self.count = plan, count
        self.arguments = (model, dtype, plan.device)
        self.encoder = ray.remote(ShardEncoder).options(**plan.actor_options())
        self.made: list[Any] = []
        self.alive: list[Any] = []
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self.counter = ray.remote(num_cpus=0)(ProgressCounter).options(scheduling_strategy=here).remote()
        self.attempts = 0  # shard attempts handed out so far: each reports its progress under its own number
        self.base = 0  # what the bar showed before this job's shards (items an earlier run finished)
        self._add(count)

    @property
    def started(self) -> int:
        """How many encoder actors this job started (replacements included)."""
        return len(self.made)

    def _add(self, count: int) -> None:
        fresh = [self.encoder.remote(*self.arguments) for _ in range(count)]
        self.made += fresh
        self.alive += fresh

    def run(
        self, job: ShardJob, by_shard: dict[int, list[SourceItem]], bar: tqdm
    ) -> tuple[dict[int, ShardResult], dict[int, str]]:
        """Encode the shards; returns their results and, for shards left unwritten, the last error."""
        import ray

        shared = ray.put(job)
        self.base = bar.n
        results: dict[int, ShardResult] = {}
        errors: dict[int, str] = {}
        for attempt in range(MAX_ROUNDS):
            missing = [shard for shard in by_shard if shard not in results]
            if not missing:
                break
            if attempt:
                self._add(min(self.count - len(self.alive), self.plan.room()))
            if not self.alive:
                break
            self._round(shared, missing, by_shard, bar, results, errors)
        return results, {shard: errors.get(shard, "not written") for shard in by_shard if shard not in results}

    def _round(
        self, shared: Any, missing: list[int], by_shard: dict[int, list[SourceItem]], bar: tqdm,
        results: dict[int, ShardResult], errors: dict[int, str],
    ) -> None:
        """Hand ``missing`` to the live workers, one shard at a time each, until every shard was tried once.

        A worker that fails with any ``RayActorError`` is killed and dropped, and its shard waits for the
        next round. (``ray.util.ActorPool`` keeps an actor that is only "temporarily unavailable", as
        those on a removed node are at first, and would hand it the remaining shards to fail at once.)
        """
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        queue, idle = list(missing), list(self.alive)
        running: dict[Any, tuple[Any, int, int]] = {}
        while queue or running:
            while queue and idle:
                actor, shard = idle.pop(), queue.pop(0)
                self.attempts += 1
                link = ProgressLink(self.counter, self.attempts)
                running[actor.encode_shard.remote(shared, shard, by_shard[shard], link)] = (actor, shard, self.attempts)
            if not running:
                break  # every worker died; the queued shards wait for the next round
            ready, _ = ray.wait(list(running), num_returns=1, timeout=PROGRESS_SECONDS)
            if not ready:
                self._show(bar, results, running)
                continue
            done = ready[0]
            actor, shard, _ = running.pop(done)
            try:
                result = ray.get(done)
            except RayTaskError as exc:
                if isinstance(exc.cause, JOB_ERRORS):
                    raise exc.cause from None
                raise
            except RayActorError as exc:
                errors[shard] = f"its worker died ({str(exc).splitlines()[0]})"
                ray.kill(actor)
                continue
            idle.append(actor)
            if result.error:
                errors[result.shard] = result.error
                continue
            results[result.shard] = result
            self._show(bar, results, running)
        self.alive = idle

    def _show(self, bar: tqdm, results: dict[int, ShardResult], running: dict[Any, tuple[Any, int, int]]) -> None:
        """Set the bar to the items done: those of finished shards plus what the running attempts reported
        (the counter lives on the driver's node; if it cannot answer, finished shards alone count)."""
        import ray
        import ray.exceptions

        try:
            reported = ray.get(self.counter.counts.remote(), timeout=PROGRESS_TIMEOUT)
        except (ray.exceptions.RayError, TimeoutError):  # progress is best effort: the shards still count
            reported = {}
        done = sum(result.items for result in results.values())
        done += sum(reported.get(attempt, 0) for _, _, attempt in running.values())
        bar.update(self.base + done - bar.n)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        import ray

        for actor in [*self.made, self.counter]:
            ray.kill(actor)


def _report(
    source: str,
    dest: str,
    storage_options: dict[str, Any] | None,
    listing: Listing,
    results: dict[int, ShardResult],
    errors: dict[int, str],
    skipped: int,
    workers: int,
    session: RaySession,
    started: float,
) -> BulkReport:
    """The report of this run: the archive's entry counts now, and what this run's shards contributed
    (bpp weighted by bytes: all their file bits over all their pixels)."""
    counts = storage.open_archive(dest, "r", storage_options).counts()
    wall = time.perf_counter() - started
    encoded = sum(result.items for result in results.values())
    bytes_out = sum(result.bytes_out for result in results.values())
    pixels = sum(result.pixels for result in results.values())
    warned = {key: text for result in results.values() for key, text in result.warnings.items()}
    return BulkReport(
        source=source,
        dest=dest,
        items=len(listing.items),
        ok=counts["ok"],
        failed=counts["failed"],
        pending=counts["pending"],
        skipped=skipped,
        encoded=encoded,
        bytes_in=sum(result.bytes_in for result in results.values()),
        bytes_out=bytes_out,
        pixels=pixels,
        mean_bpp=8 * bytes_out / pixels if pixels else 0.0,
        warned=len(warned),
        warnings=dict(sorted(warned.items())[:MAX_REPORTED_WARNINGS]),
        images_per_second=encoded / wall if wall > 0 else 0.0,
        wall_seconds=wall,
        startup_seconds=session.seconds,
        shards=len(results),
        workers=workers,
        errors={str(shard): error for shard, error in sorted(errors.items())},
    )
