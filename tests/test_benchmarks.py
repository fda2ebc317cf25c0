"""The GPU throughput benchmark runs end to end on the CPU at a tiny size (as CI runs it until a GPU is lent)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_throughput_benchmark_runs_on_the_cpu(model_dir) -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_throughput.py"), "--device", "cpu", "--size", "32",
               "--count", "2", "--quality", "25", "--models", str(model_dir)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if " bulk " in line]
    assert len(rows) == 1
    numbers = re.search(r"bulk +([\d.]+) img/s +read +([\d.]+) img/s .* share of bulk wall +([\d.]+)%", rows[0])
    assert numbers and float(numbers[1]) > 0 and float(numbers[2]) > 0 and 0 < float(numbers[3]) <= 100
