"""Workers that die mid-job: one encoder process killed (SIGKILL) on a local Ray instance, and a node of a
two-node cluster on this machine (``ray.cluster_utils.Cluster``) removed. Either way the job completes with
every item present exactly once."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import ray_jobs
import storage

from .ray_helpers import RAY_OPTIONS, photo, write_tree

pytestmark = pytest.mark.slow
ITEMS = 16
SLOW_ENOUGH = {"steps": 8, "codebook_size": 16}  # so that the job is still running when the fault comes


def source_folder(folder: Path) -> dict[str, bytes]:
    """ITEMS distinct 16x16 crops in two subfolders, written below ``folder``; returns them by key."""
    source = photo()
    files = {}
    for number in range(ITEMS):
        buffer = io.BytesIO()
        source.crop((number, 2 * number, number + 16, 2 * number + 16)).save(buffer, format="PNG")
        files[f"part{number % 2}/img{number:02d}.png"] = buffer.getvalue()
    write_tree(folder, files)
    return files


def run_with_fault(job: Callable[[], ray_jobs.BulkReport], dest: str, fault: Callable[[], None]) -> ray_jobs.BulkReport:
    """Run ``job`` in a thread, call ``fault`` once two shards are complete, and return the job's report."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["report"] = job()
        except BaseException as exc:  # noqa: BLE001  (re-raised in the test's thread below)
            outcome["error"] = exc

    runner = threading.Thread(target=target)
    runner.start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and runner.is_alive():
        try:
            if len(storage.open_archive(dest).complete_shards()) >= 2:
                break
        except storage.ArchiveError:
            pass  # not created yet
        time.sleep(0.05)
    fault()
    assert len(storage.open_archive(dest).complete_shards()) < ITEMS, "the job finished before the fault"
    runner.join(timeout=300)
    assert not runner.is_alive(), "the job did not finish after the fault"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["report"]  # type: ignore[return-value]


def check_complete(dest: str, files: dict[str, bytes]) -> None:
    archive = storage.open_archive(dest)
    assert archive.keys() == sorted(files) and len(archive) == ITEMS
    assert archive.counts() == {"ok": ITEMS, "failed": 0, "pending": 0}
    assert archive.verify().ok == ITEMS


def encoder_processes() -> list[int]:
    """PIDs of the encoder actors of the Ray instance this process started (its raylet's children)."""
    def parent(pid: str) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            if title.startswith(b"ray::ShardEncoder") and parent(str(parent(pid))) == os.getpid():
                found.append(int(pid))
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
    return found


def test_a_killed_encoder_process_has_its_shard_retried(model_dir, tmp_path) -> None:
    import ray
    if not Path("/proc/self/stat").exists():
        pytest.skip("finds the encoder processes through /proc")
    files = source_folder(tmp_path / "src")
    dest = str(tmp_path / "killed.zarr")

    def kill_one_encoder() -> None:
        victims = encoder_processes()
        assert victims, "no encoder process found"
        os.kill(victims[0], signal.SIGKILL)

    ray.init(num_cpus=2, **RAY_OPTIONS)  # started here, so that its raylet is this process's child
    try:
        report = run_with_fault(
            lambda: ray_jobs.bulk_compress(str(tmp_path / "src"), dest, model=str(model_dir), items_per_shard=1,
                                           progress=False, **SLOW_ENOUGH),
            dest, kill_one_encoder,
        )
    finally:
        ray.shutdown()
    assert report.workers == 3  # two at first, one started in place of the killed one
    check_complete(dest, files)


def test_removing_a_node_mid_job_loses_and_duplicates_nothing(model_dir, tmp_path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    node_options = {"object_store_memory": RAY_OPTIONS["object_store_memory"] // 2}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, **node_options})
    doomed = cluster.add_node(num_cpus=2, **node_options)
    files = source_folder(tmp_path / "src")
    dest = str(tmp_path / "cluster.zarr")
    try:
        ray.init(address=cluster.address)
        report = run_with_fault(
            lambda: ray_jobs.bulk_compress(str(tmp_path / "src"), dest, model=str(model_dir), items_per_shard=1,
                                           ray_address=cluster.address, progress=False, **SLOW_ENOUGH),
            dest, lambda: cluster.remove_node(doomed, allow_graceful=False),
        )
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert report.workers == 3  # one actor per CPU (1 + 2); the head had no room for replacements
    check_complete(dest, files)
