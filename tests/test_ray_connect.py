"""Bulk jobs and archive readers start their own local Ray instance unless told where to go: a cluster that
another program started on this machine (``ray start``) is not joined by a plain call."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
CONNECT = """
import ray
from ray_jobs.cluster import connect
session = connect()
print(ray.get_runtime_context().gcs_address, session.started)
session.close()
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_running_cluster_is_not_joined_unasked() -> None:
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live below it
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=temp, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    port = free_port()
    head = subprocess.Popen([RAY, "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
                             "--include-dashboard=false"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        address_file = Path(temp) / "ray" / "ray_current_cluster"
        deadline = time.monotonic() + 90
        while not address_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        running = address_file.read_text().strip()  # what a plain ray.init() would join
        assert running.endswith(f":{port}")
        joined = subprocess.run([sys.executable, "-c", CONNECT], env=env, cwd=ROOT, capture_output=True, text=True,
                                timeout=120)
        assert joined.returncode == 0, joined.stderr[-3000:]
        address, started = joined.stdout.split()
        assert started == "True" and address != running, joined.stderr
        assert "Token authentication" not in joined.stderr
    finally:
        head.terminate()
        head.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)
