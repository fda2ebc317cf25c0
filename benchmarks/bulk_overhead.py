"""Ray's overhead in bulk recompression: the same N small images encoded into an archive by a plain
sequential loop and by ``ray_jobs.bulk_compress`` on a local Ray instance, side by side.

    python benchmarks/bulk_overhead.py [--items 32] [--cpus 2] [--quality 40] [--batch-size 8]

Images: 64x64 crops of the training photographs (../shared/data/train; the README sample folder when
those are absent), written as PNG files to a temporary folder. Both ways use the built-in model, the
same settings and the same batching (same-size images ``--batch-size`` at a time), and both write a
zarr archive. The loop loads the model in this process, encodes with ``encode_images`` and stores
with ``Archive.add``, with one torch thread (``--loop-threads``): one core, as each Ray worker has.
The Ray job starts its own encoder actors (one per CPU, one torch thread each), which load the model,
read the files and write whole shards. Ray's start-up (``ray.init``) is timed separately.

Printed: both times and rates, the ratio Ray / loop, and Ray's overhead against perfect scaling,
``ray_time * workers / loop_time - 1`` (the time the workers spend beyond the loop's own work).
Target: overhead <= 20% at N = 32 on 2 cores once Ray is up.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

import storage

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT.parent / "shared" / "data" / "train"
SAMPLE = ROOT / "ray_jobs" / "sample"
SIZE = 64


def write_images(folder: Path, count: int) -> list[Path]:
    """``count`` distinct 64x64 RGB crops as PNG files (several crops per photograph)."""
    photos = sorted(TRAIN.glob("*.png")) or sorted(SAMPLE.rglob("*.png"))
    paths = []
    for number in range(count):
        with Image.open(photos[number % len(photos)]) as photo:
            rgb = photo.convert("RGB")
        turn = number // len(photos)
        left = min(turn * SIZE // 2, max(0, rgb.width - SIZE))
        top = min(turn * SIZE // 3, max(0, rgb.height - SIZE))
        crop = rgb.crop((left, top, left + SIZE, top + SIZE))
        path = folder / f"img{number:04d}.png"
        crop.save(path)
        paths.append(path)
    return paths


def sequential(paths: list[Path], dest: str, options: dict, batch_size: int) -> float:
    """The plain loop: load the model, encode batches of same-size images, add them to an archive."""
    import pillow_diffcodec
    from pillow_diffcodec.models import load_model

    start = time.perf_counter()
    model = load_model("builtin")
    with storage.open_archive(dest, "w") as archive:
        for low in range(0, len(paths), batch_size):
            batch = paths[low : low + batch_size]
            images = [Image.open(path).convert("RGB") for path in batch]
            for path, result in zip(batch, pillow_diffcodec.encode_images(images, model=model, **options)):
                archive.add(path.name, result.data)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--quality", type=float, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--loop-threads", type=int, default=1, help="torch threads of the sequential loop")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.loop_threads)
    options = {"quality": args.quality}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "images"
        folder.mkdir()
        paths = write_images(folder, args.items)
        loop_seconds = sequential(paths, str(Path(scratch) / "loop.zarr"), options, args.batch_size)

        import ray

        import ray_jobs

        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
        startup = time.perf_counter() - start
        try:
            start = time.perf_counter()
            report = ray_jobs.bulk_compress(
                str(folder), str(Path(scratch) / "ray.zarr"), batch_size=args.batch_size, progress=False, **options
            )
            ray_seconds = time.perf_counter() - start
        finally:
            ray.shutdown()
        loop_archive = storage.open_archive(str(Path(scratch) / "loop.zarr"))
        ray_archive = storage.open_archive(str(Path(scratch) / "ray.zarr"))
        same = all(loop_archive.read_bytes(path.name) == ray_archive.read_bytes(path.name) for path in paths)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"{args.items} images {SIZE}x{SIZE}, built-in model, quality {args.quality:g}, batch size {args.batch_size}, "
          f"{os.cpu_count()} cores (load average {load}: other work on the machine slows both ways)")
    print(f"sequential loop      {loop_seconds:7.2f} s   {args.items / loop_seconds:6.2f} images/s   "
          f"({args.loop_threads} torch thread(s))")
    print(f"bulk_compress on Ray {ray_seconds:7.2f} s   {args.items / ray_seconds:6.2f} images/s   "
          f"({report.workers} workers, {report.shards} shards; {report.ok} ok, {report.failed} failed)")
    overhead = ray_seconds * report.workers / loop_seconds - 1
    print(f"ratio Ray / loop     {ray_seconds / loop_seconds:7.2f}   (speed-up {loop_seconds / ray_seconds:.2f}x "
          f"on {report.workers} workers)")
    print(f"Ray overhead         {100 * overhead:+6.0f}%   (time x workers / loop time - 1; target <= +20%)")
    print(f"Ray start-up         {startup:7.2f} s   (ray.init, not included above)")
    print(f"identical files      {same}")


if __name__ == "__main__":
    main()
