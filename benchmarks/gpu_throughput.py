"""Bulk-job throughput on one GPU (or the CPU): images/s of ``bulk_compress`` and ``read_archive``, and the
share of the bulk job's wall time that the model calls account for.

For each model and quality preset: ``--count`` size x size crops of the shipped sample photos are written
as PNG files, compressed into a zarr archive by ``ray_jobs.bulk_compress`` on a local Ray instance (one
worker per GPU, ``num_gpus=1``, or CPU workers with ``--device cpu``), and read back with
``ray_jobs.read_archive(...)`` to numpy. The model-call share is estimated in this process on the same
device: the seconds of the T UNet calls (T from the files' parameters) of one image at that size, times
the image count, over the bulk job's wall time (workers run one image's calls at a time).

    python benchmarks/gpu_throughput.py                      # cuda when present: 512x512, quality 25 and 50
    python benchmarks/gpu_throughput.py --device cpu --size 32 --count 2 --models builtin   # the CI smoke run
    bash benchmarks/gpu_throughput.sh                        # the GPU run, written to benchmarks/results/

Prints one row per (model, quality): images/s for bulk and read, mean bpp, the model-call seconds per
image and their share of the bulk wall time (goal on a GPU: >= 70%).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import pillow_diffcodec as pdc
import ray_jobs
import storage
from pillow_diffcodec.models import load_model

SAMPLE = Path(__file__).resolve().parents[1] / "ray_jobs" / "sample"


def write_crops(folder: Path, size: int, count: int) -> None:
    """``count`` size x size RGB crops of the sample photos (upscaled where a photo is smaller) as PNG files."""
    photos = sorted(SAMPLE.rglob("*.png"))
    for number in range(count):
        with Image.open(photos[number % len(photos)]) as photo:
            rgb = photo.convert("RGB")
        scale = max(1.0, size / min(rgb.size))
        if scale > 1:
            rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.LANCZOS)
        left = (number * 53) % max(1, rgb.width - size)
        rgb.crop((left, 0, left + size, size)).save(folder / f"img{number:04d}.png")


def model_call_seconds(model_name: str, device: str, size: int, steps: int) -> float:
    """Seconds of ``steps`` UNet calls on one image of ``size`` x ``size`` (after one warm-up call)."""
    model = load_model(model_name, device=device)
    x = torch.randn(model.sample_shape(size, size), device=model.device)
    model.predict_x0(x, 500)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        model.predict_x0(x, 500)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(model: str, quality: int, size: int, count: int, device: str, folder: Path) -> str:
    """One row: bulk and read throughput and the model-call share for ``model`` at ``quality``."""
    dest = str(folder / f"{Path(model).name}-q{quality}.zarr")
    num_gpus = 1 if device.startswith("cuda") else 0
    report = ray_jobs.bulk_compress(str(folder / "images"), dest, model=model, quality=quality, num_gpus=num_gpus,
                                    progress=False)
    start = time.perf_counter()
    rows = ray_jobs.read_archive(dest, num_gpus=num_gpus).take_all()
    read_seconds = time.perf_counter() - start
    archive = storage.open_archive(dest)
    steps = pdc.info(archive.read_bytes(0))["params"]["steps"]
    calls = model_call_seconds(model, device, size, steps)
    share = calls * report.ok / report.wall_seconds
    return (f"{Path(model).name:16s} q{quality:<3d} bulk {report.ok / report.wall_seconds:7.3f} img/s  "
            f"read {len(rows) / read_seconds:7.3f} img/s  bpp {report.mean_bpp:6.3f}  "
            f"model calls {calls:7.3f} s/img ({steps} steps)  share of bulk wall {share:5.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--quality", type=int, nargs="+", default=[25, 50])
    parser.add_argument("--models", nargs="+", default=["builtin", "builtin-latent"])
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device {args.device} ({name}), {args.count} images of {args.size}x{args.size}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        (folder / "images").mkdir()
        write_crops(folder / "images", args.size, args.count)
        for model in args.models:
            for quality in args.quality:
                print(run(model, quality, args.size, args.count, args.device, folder), flush=True)


if __name__ == "__main__":
    main()
