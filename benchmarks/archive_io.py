"""Archive I/O: write and read throughput of 1,000 small pre-encoded items, objects written, and the
store requests one single-item read costs, on local disk and on an S3 server (moto, loopback), side by
side with the obvious reference layout: one object per image file.

    python benchmarks/archive_io.py [--items 1000] [--items-per-shard 256]

Items are real diffcodec files (a few Kodak crops encoded once with the built-in model, then reused);
encoding is not timed. Ways of writing: ``add()`` (buffered, a shard at a time), the shard API the Ray
job uses (``reserve`` + ``write_shard`` per shard), and one object per file (``pipe_file``). Ways of
reading: every entry by index (``read_bytes(i)``, as random access does), a shard-at-a-time scan
(``records()``), and one ``cat_file`` per object. Requests per single-item read are counted with
zarr's LoggingStore on a freshly opened archive, for archives of 100 and of N items: equal counts
show that reading one item costs O(1) requests, not a scan.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
from PIL import Image

import pillow_diffcodec
import storage

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"
FALLBACK = Path(__file__).resolve().parents[1] / "tests" / "data" / "kodim23_crop.png"


def sample_files(count: int) -> list[bytes]:
    """``count`` distinct small diffcodec files: 64x64 crops, built-in model, a few hundred bytes each."""
    sources = sorted(KODAK.glob("kodim*.png"))[:count] or [FALLBACK] * count
    crops = [
        Image.open(path).convert("RGB").crop((64 * n % 128, 0, 64 * n % 128 + 64, 48)) for n, path in enumerate(sources)
    ]
    return [pillow_diffcodec.encode(crop, steps=4, codebook_size=256, atoms=6) for crop in crops]


def timed(work: Callable[[], Any]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def count_objects(fs: fsspec.AbstractFileSystem, root: str) -> int:
    return len(fs.find(root))


def archive_rows(
    url: str,
    options: dict | None,
    fs: fsspec.AbstractFileSystem,
    root: str,
    items: list[tuple[str, bytes]],
    per_shard: int,
) -> list[tuple[str, float, float, int]]:
    """(method, write seconds, read seconds, objects) for add(), the shard API and both read paths."""
    rows = []

    def by_add() -> None:
        with storage.open_archive(url, "w", options, items_per_shard=per_shard) as archive:
            for key, data in items:
                archive.add(key, data)

    write = timed(by_add)
    objects = count_objects(fs, root)
    archive = storage.open_archive(url, storage_options=options)
    read = timed(lambda: [archive.read_bytes(i) for i in range(len(items))])
    rows.append(("archive add() / read_bytes(i)", write, read, objects))
    archive = storage.open_archive(url, storage_options=options)
    scan = timed(lambda: sum(1 for _ in archive.records()))

    def by_shards() -> None:
        with storage.open_archive(url, "w", options, items_per_shard=per_shard) as driver:
            reservation = driver.reserve([key for key, _ in items])
        payload = dict(items)
        for shard in reservation.shards:
            entries = [storage.Entry.ok(key, payload[key]) for key in reservation.shard_keys(shard)]
            storage.write_shard(url, shard, entries, storage_options=options)

    write_shards = timed(by_shards)
    rows.append(("archive reserve+write_shard / records()", write_shards, scan, count_objects(fs, root)))
    return rows


def per_file_row(
    fs: fsspec.AbstractFileSystem, root: str, items: list[tuple[str, bytes]]
) -> tuple[str, float, float, int]:
    fs.makedirs(root, exist_ok=True)
    write = timed(lambda: [fs.pipe_file(f"{root}/{key}", data) for key, data in items])
    read = timed(lambda: [fs.cat_file(f"{root}/{key}") for key, _ in items])
    return ("one object per file (pipe_file / cat_file)", write, read, count_objects(fs, root))


def gets_per_read(
    make_store: Callable[[str], Any],
    url_for: Callable[[int], str],
    options: dict | None,
    files: list[bytes],
    sizes: tuple[int, ...],
    per_shard: int,
) -> dict[int, tuple[int, float]]:
    """Store gets (counted by zarr's LoggingStore) and seconds (timed without it) of opening an archive
    of each size and reading one random entry."""
    from zarr.storage import LoggingStore

    result = {}
    for size in sizes:
        url = url_for(size)
        with storage.open_archive(url, "w", options, items_per_shard=per_shard) as archive:
            for number in range(size):
                archive.add(f"k{number:06d}", files[number % len(files)])
        index = random.Random(size).randrange(size)
        logged = LoggingStore(make_store(url), log_level="ERROR")
        storage.open_archive(logged).read_bytes(index)
        seconds = timed(lambda url=url, index=index: storage.open_archive(make_store(url)).read_bytes(index))
        result[size] = (logged.counter["get"], seconds)
    return result


def report(
    title: str, rows: list[tuple[str, float, float, int]], count: int, total: int, gets: dict[int, tuple[int, float]]
) -> None:
    print(f"\n{title}: {count} items, {total / 1e3:.1f} kB of bitstreams")
    print(f"{'method':<44} {'write/s':>9} {'write MB/s':>10} {'read/s':>9} {'read MB/s':>9} {'objects':>8}")
    for method, write, read, objects in rows:
        print(
            f"{method:<44} {count / write:>9.0f} {total / write / 1e6:>10.3f} {count / read:>9.0f} "
            f"{total / read / 1e6:>9.3f} {objects:>8}"
        )
    reference = rows[-1]
    for method, write, read, objects in rows[:-1]:
        print(
            f"  {method}: write {reference[1] / write:.2f}x, read {reference[2] / read:.2f}x the per-file speed; "
            f"{reference[3] / objects:.0f}x fewer objects"
        )
    print(
        "  open + one read_bytes(random i): "
        + ", ".join(f"{size} items: {g} store gets, {seconds * 1e3:.1f} ms" for size, (g, seconds) in gets.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--items-per-shard", type=int, default=256)
    args = parser.parse_args()

    start = time.perf_counter()
    files = sample_files(4)
    print(
        f"encoded {len(files)} distinct files ({[len(f) for f in files]} bytes) in {time.perf_counter() - start:.1f} s"
    )
    items = [(f"photos/{n // 100:02d}/img{n:05d}.ddcm", files[n % len(files)]) for n in range(args.items)]
    total = sum(len(data) for _, data in items)
    sizes = (100, args.items)

    from zarr.storage import FsspecStore, LocalStore

    with tempfile.TemporaryDirectory() as folder:
        local = fsspec.filesystem("file", auto_mkdir=True)
        rows = archive_rows(f"{folder}/a.zarr", None, local, f"{folder}/a.zarr", items, args.items_per_shard)
        rows.append(per_file_row(local, f"{folder}/files", items))
        gets = gets_per_read(
            lambda url: LocalStore(url, read_only=True),
            lambda n: f"{folder}/g{n}.zarr",
            None,
            files,
            sizes,
            args.items_per_shard,
        )
        report("local disk", rows, len(items), total, gets)

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"key": "bench", "secret": "bench", "client_kwargs": {"endpoint_url": f"http://{host}:{port}"}}
    s3 = fsspec.filesystem("s3", **options)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3.mkdir(bucket)
    rows = archive_rows(f"s3://{bucket}/a.zarr", options, s3, f"{bucket}/a.zarr", items, args.items_per_shard)
    rows.append(per_file_row(s3, f"{bucket}/files", items))
    gets = gets_per_read(
        lambda url: FsspecStore.from_url(url, storage_options=options, read_only=True),
        lambda n: f"s3://{bucket}/g{n}.zarr",
        options,
        files,
        sizes,
        args.items_per_shard,
    )
    report(f"S3 (moto server on {host}, s3fs)", rows, len(items), total, gets)
    server.stop()


if __name__ == "__main__":
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    main()
