"""``diffcodec bulk`` and ``diffcodec bulk-extract``: the Ray jobs on the command line.

Registered through the ``diffcodec.commands`` entry points ``bulk`` and ``bulk-extract``.

    diffcodec bulk photos/ photos.zarr --quality 40
    diffcodec bulk s3://bucket/photos.tar s3://bucket/photos.zarr -o client_kwargs.endpoint_url=http://...
    diffcodec bulk-extract photos.zarr restored/ --format PNG

Problems are one line on stderr, never a traceback. ``bulk`` exits 0 when every item is stored ok,
1 when items failed or shards are still missing (rerun to resume), 2 for bad arguments (including
settings that differ from the archive's recorded job), 130 when interrupted (rerun to resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pillow_diffcodec.cli import add_encode_options
from pillow_diffcodec.codecs import CODECS
from pillow_diffcodec.options import ENCODE_OPTIONS
from storage.cli import FORMAT_HELP, print_extract_report, storage_option_pair, storage_options_from_pairs

from .bulk import DEFAULT_BATCH_SIZE, bulk_compress
from .errors import IncompleteJobError
from .reading import extract_archive

WORKER_CHOSEN = ("device",)  # each worker uses its own CPU or GPU


def _encode_options(args: argparse.Namespace) -> dict[str, Any]:
    """The encoding options given on the command line (unset ones keep the library's defaults)."""
    names = [o.name for o in ENCODE_OPTIONS if o.cli and o.name not in WORKER_CHOSEN]
    names += [o.name for entry in CODECS for o in entry.options]
    given = {name: getattr(args, name) for name in dict.fromkeys(names) if getattr(args, name, None) is not None}
    if given.get("window") is not None:
        given["window"] = tuple(given["window"])
    return given


def _interrupted(what: str) -> int:
    print(f"\ninterrupted: {what}", file=sys.stderr)
    return 130


def cmd_bulk(args: argparse.Namespace) -> int:
    try:
        report = bulk_compress(
            args.source,
            args.dest,
            codec=args.codec,
            batch_size=args.batch_size,
            items_per_shard=args.items_per_shard,
            num_gpus=args.num_gpus,
            num_workers=args.workers,
            ray_address=args.address,
            resume=not args.restart,
            storage_options=storage_options_from_pairs(args.storage_option),
            image_column=args.image_column,
            key_column=args.key_column,
            progress=not args.quiet,
            **_encode_options(args),
        )
    except KeyboardInterrupt:
        return _interrupted(f"every finished shard of {args.dest} is stored; rerun the same command to resume")
    except IncompleteJobError as exc:
        print(json.dumps(exc.report.as_dict()) if args.json else exc.report.summary())
        print(f"diffcodec bulk: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_dict()) if args.json else report.summary())
    if report.failed:
        print(
            f"diffcodec bulk: {report.failed} item(s) failed; list them with: diffcodec archive ls {args.dest} "
            "--status failed",
            file=sys.stderr,
        )
    return 1 if report.failed else 0


def cmd_bulk_extract(args: argparse.Namespace) -> int:
    try:
        report = extract_archive(
            args.archive,
            args.dest,
            format=args.format,
            storage_options=storage_options_from_pairs(args.storage_option),
            dest_options=storage_options_from_pairs(args.dest_option),
            model=args.model,
            num_gpus=args.num_gpus,
            num_workers=args.workers,
            ray_address=args.address,
            progress=not args.quiet,
        )
    except KeyboardInterrupt:
        return _interrupted("files written so far are complete; rerun to write the rest")
    return print_extract_report(report, f"{len(report.written)} entries of {args.archive} to {args.dest}")


def _cluster_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray")
    group.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else a new local instance; "
                       "a cluster started by `ray start` is not joined unless named)")
    group.add_argument("--workers", type=int, help="number of worker actors (default: one per CPU, or per GPU)")
    group.add_argument(
        "--num-gpus", type=float, help="GPUs per worker (default: 1 when the cluster has GPUs; 0 runs on CPUs)"
    )
    parser.add_argument(
        "-o",
        "--storage-option",
        type=storage_option_pair,
        action="append",
        metavar="KEY=VALUE",
        help="fsspec storage option for the source and archive, repeatable; dots nest "
        "(client_kwargs.endpoint_url=http://...)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def register_bulk(commands: Any) -> None:
    """Add ``bulk`` to the diffcodec CLI's argparse subparsers (entry point ``bulk``)."""
    bulk = commands.add_parser(
        "bulk",
        help="compress a folder, tar/zip or parquet dataset of images into a zarr archive on Ray",
        description="Compress every image of SOURCE into the zarr archive DEST with Ray workers; a rerun "
        "with the same arguments resumes.",
    )
    bulk.add_argument("source", help="folder, glob, .tar/.zip archive or parquet (any fsspec URL)")
    bulk.add_argument("dest", help="archive path or fsspec URL, e.g. photos.zarr or s3://bucket/photos.zarr")
    add_encode_options(bulk, exclude=WORKER_CHOSEN)
    job = bulk.add_argument_group("job")
    job.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"same-size images encoded together (default: {DEFAULT_BATCH_SIZE})",
    )
    job.add_argument(
        "--items-per-shard",
        type=int,
        help="shard size of a new archive (default: about four shards per worker, at most 1024)",
    )
    job.add_argument("--restart", action="store_true", help="replace an existing archive instead of resuming it")
    job.add_argument("--image-column", default="image", help="parquet column of image bytes (default: image)")
    job.add_argument("--key-column", default="key", help="parquet column of keys (default: key)")
    job.add_argument("--json", action="store_true", help="print the report as one JSON object")
    _cluster_arguments(bulk)
    bulk.set_defaults(run=cmd_bulk)


def register_extract(commands: Any) -> None:
    """Add ``bulk-extract`` to the diffcodec CLI's argparse subparsers (entry point ``bulk-extract``)."""
    extract = commands.add_parser(
        "bulk-extract",
        help="decode a zarr archive to image files with Ray workers",
        description="Decode every ok entry of ARCHIVE to DEST/<key>.<format suffix>, in parallel on Ray.",
    )
    extract.add_argument("archive", help="archive path or fsspec URL")
    extract.add_argument("dest", help="folder or fsspec URL")
    extract.add_argument("--format", default="PNG", help=FORMAT_HELP)
    extract.add_argument("--model", help="decode with this model instead of the one named in each file")
    extract.add_argument(
        "--dest-option",
        type=storage_option_pair,
        action="append",
        metavar="KEY=VALUE",
        help="fsspec storage option for DEST, repeatable",
    )
    _cluster_arguments(extract)
    extract.set_defaults(run=cmd_bulk_extract)
