#!/usr/bin/env bash
# The GPU throughput run in one command, for the first machine with a CUDA GPU: installs the project into
# the current Python (which must already have a CUDA build of torch), runs benchmarks/gpu_throughput.py at
# 512x512 (quality 25 and 50, pixel and latent built-in models) and writes its output to
# benchmarks/results/gpu_throughput.txt (and $OUT when set, as on a lent device machine).
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this run is for a GPU')"
python -m pip install --quiet --disable-pip-version-check -e .
python benchmarks/gpu_throughput.py --size 512 --count "${COUNT:-32}" "$@" | tee benchmarks/results/gpu_throughput.txt
if [ -n "${OUT:-}" ]; then cp benchmarks/results/gpu_throughput.txt "$OUT/"; fi
