"""A two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``): a node that holds encoder actors
is removed mid-job, and the job still completes with every item present exactly once."""

from __future__ import annotations

import io
import threading
import time

import pytest

import ray_jobs
import storage

from .ray_helpers import RAY_OPTIONS, photo, write_tree

pytestmark = pytest.mark.slow
ITEMS = 16


def test_removing_a_node_mid_job_loses_and_duplicates_nothing(model_dir, tmp_path) -> None:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    node_options = {"object_store_memory": RAY_OPTIONS["object_store_memory"] // 2}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, **node_options})
    doomed = cluster.add_node(num_cpus=2, **node_options)
    source = photo()
    files = {}
    for number in range(ITEMS):
        buffer = io.BytesIO()
        source.crop((number, 2 * number, number + 16, 2 * number + 16)).save(buffer, format="PNG")
        files[f"part{number % 2}/img{number:02d}.png"] = buffer.getvalue()
    folder = write_tree(tmp_path / "src", files)
    dest = str(tmp_path / "cluster.zarr")
    outcome: dict[str, object] = {}

    def job() -> None:
        try:
            outcome["report"] = ray_jobs.bulk_compress(
                str(folder), dest, model=str(model_dir), ray_address=cluster.address, items_per_shard=1,
                progress=False, steps=8, codebook_size=16,
            )
        except BaseException as exc:  # noqa: BLE001  (re-raised in the test's thread below)
            outcome["error"] = exc

    try:
        ray.init(address=cluster.address)
        runner = threading.Thread(target=job)
        runner.start()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and runner.is_alive():
            try:
                if len(storage.open_archive(dest).complete_shards()) >= 2:
                    break
            except storage.ArchiveError:
                pass
            time.sleep(0.05)
        cluster.remove_node(doomed, allow_graceful=False)
        removed_after = len(storage.open_archive(dest).complete_shards())
        runner.join(timeout=300)
        assert not runner.is_alive(), "the job did not finish after the node was removed"
    finally:
        ray.shutdown()
        cluster.shutdown()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    report = outcome["report"]
    assert removed_after < ITEMS, "the job finished before the node was removed"
    assert report.workers == 3  # one actor per CPU; the head had no room for replacements
    archive = storage.open_archive(dest)
    assert archive.keys() == sorted(files) and len(archive) == ITEMS
    assert archive.counts() == {"ok": ITEMS, "failed": 0, "pending": 0}
    assert archive.verify().ok == ITEMS
