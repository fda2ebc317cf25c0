"""``archive extract`` seconds with 1 and with N decode threads (``jobs``), measured side by side in one run.

Builds an archive of small crops of the sample photos with the built-in model, then extracts it to PNG
with each ``jobs`` value in turn (alternating, ``--rounds`` times), checks that every run wrote the
same files, and prints each setting's best time and its speed-up over ``jobs=1``.

    python benchmarks/extract_jobs.py [--jobs 1 2] [--crop 64] [--count 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from PIL import Image

import pillow_diffcodec as pdc
import storage

SAMPLES = Path(__file__).resolve().parents[1] / "ray_jobs" / "sample"


def crops(size: int, count: int) -> list[Image.Image]:
    """``count`` size x size crops spread over the shipped sample photos."""
    photos = [Image.open(path).convert("RGB") for path in sorted(SAMPLES.rglob("*.png"))]
    out = []
    for number in range(count):
        photo = photos[number % len(photos)]
        x = (number * 37) % max(1, photo.width - size)
        out.append(photo.crop((x, 0, x + size, size)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quality", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"{folder}/bench.zarr"
        with storage.open_archive(url, "w") as archive:
            for number, image in enumerate(crops(args.crop, args.count)):
                archive.add(f"crop{number}.png", pdc.encode(image, quality=args.quality))
        best: dict[int, float] = {}
        written: dict[int, dict[str, bytes]] = {}
        for round in range(args.rounds):
            for jobs in args.jobs:
                out = Path(folder) / f"out-{jobs}-{round}"
                start = time.perf_counter()
                storage.open_archive(url).extract(str(out), progress=False, jobs=jobs)
                best[jobs] = min(best.get(jobs, float("inf")), time.perf_counter() - start)
                written[jobs] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    same = all(files == written[args.jobs[0]] for files in written.values())
    print(f"{args.count} entries of {args.crop}x{args.crop}, best of {args.rounds} rounds; identical files: {same}")
    for jobs in args.jobs:
        print(f"jobs={jobs}: {best[jobs]:7.2f} s  speed-up vs jobs={args.jobs[0]}: {best[args.jobs[0]] / best[jobs]:.2f}x")


if __name__ == "__main__":
    main()
