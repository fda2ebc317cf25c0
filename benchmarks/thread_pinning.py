"""What pinning the codec maths to one thread costs, measured side by side in one run.

Since decoding must not depend on torch's thread count (docs/FORMAT.md, "Determinism"), DDCM and CDC
compute on one intra-op thread. This script decodes one file three ways, alternating them ``--repeat``
times so that they share the machine's load:

* ``pinned``: ``pillow_diffcodec.decode`` as users get it (one thread);
* ``unpinned``: the same codec maths at torch's thread count (what decoding cost before the pin; its
  pixels may differ from the encoder's in the last level);
* ``pool``: ``--files`` copies decoded at once by a thread pool of that many workers, each pinned (how
  several files use several cores now); its time is per file.

    python benchmarks/thread_pinning.py [IMAGE] [--crop 256] [--quality 50] [--threads N] [--repeat 2]

Prints seconds per decode and the ratios to ``unpinned``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec.fileinfo import read_file
from pillow_diffcodec.models import load_model

DEFAULT_IMAGE = Path(__file__).resolve().parents[1] / "ray_jobs" / "sample" / "nature" / "tiger.png"


def _unpinned(data: bytes) -> None:
    """The codec's decode without the API's pin (torch's current thread count)."""
    parsed = read_file(data)
    header = parsed.header
    model = load_model(header.model_name)
    parsed.codec.load().decode(model, parsed.params, header.seed, header.width, header.height, parsed.payload, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--crop", type=int, default=256, help="centre crop side (0: whole image)")
    parser.add_argument("--quality", type=float, default=50)
    parser.add_argument("--codec", default="DDCM")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--files", type=int, default=0, help="files decoded at once by the pool (default: --threads)")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    files = args.files or args.threads
    with Image.open(args.image) as opened:
        image = opened.convert("RGB")
    if args.crop:
        left, top = (image.width - args.crop) // 2, (image.height - args.crop) // 2
        image = image.crop((left, top, left + args.crop, top + args.crop))
    data = pdc.encode(image, codec=args.codec, quality=args.quality)
    load_model(read_file(data).header.model_name)  # loaded once, outside the timings

    def pool() -> None:
        with ThreadPoolExecutor(files) as executor:
            list(executor.map(pdc.decode, [data] * files))

    ways = {"unpinned": (lambda: _unpinned(data), 1), "pinned": (lambda: pdc.decode(data), 1), "pool": (pool, files)}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeat):
        for name, (run, count) in ways.items():
            start = time.perf_counter()
            run()
            seconds[name].append((time.perf_counter() - start) / count)
    print(f"{args.image.name} {image.width}x{image.height}, {args.codec} quality {args.quality}, "
          f"torch threads {args.threads}, pool of {files}, {args.repeat} rounds (median)")
    base = statistics.median(seconds["unpinned"])
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:<9} {median:7.2f} s per file   x{median / base:.2f} of unpinned")


if __name__ == "__main__":
    main()
