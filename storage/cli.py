"""``diffcodec archive info|ls|verify|extract|repair URL``: the archive subcommands of the diffcodec CLI.

Registered through the ``diffcodec.commands`` entry point (``archive = "storage.cli:register"``).
Every problem is one line on stderr, never a traceback; per-entry problems are reported and the
other entries go on. Exit status: 0 when every entry is fine, 1 when any entry failed, is pending
or damaged, or the archive cannot be opened.

    diffcodec archive info s3://bucket/photos.zarr -o endpoint_url=http://127.0.0.1:9000
    diffcodec archive ls photos.zarr --status failed
    diffcodec archive verify photos.zarr --sample 8
    diffcodec archive verify photos.zarr --repair     # re-encode damaged entries from their source
    diffcodec archive repair photos.zarr              # rebuild a damaged or lost root zarr.json
    diffcodec archive extract photos.zarr restored/ --format PNG
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from pillow_diffcodec.errors import DiffCodecError

from .archive import Archive, open_archive
from .extract import ExtractReport
from .repair import rebuild_root
from .verify import VerifyReport

FORMAT_HELP = ("Pillow format to write (default PNG), or RAW for the stored files as they are (a codec name such "
               "as DDCM also writes them, refusing files of other codecs)")

Command = Callable[[argparse.Namespace], int]


def storage_option_pair(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``; VALUE is read as JSON when it parses (numbers, true/false, objects), else as text."""
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def storage_options_from_pairs(pairs: list[tuple[str, Any]] | None) -> dict[str, Any] | None:
    """Storage options from ``KEY=VALUE`` pairs."""
    nested: dict[str, Any] = {}
    for key, value in pairs or []:  # client_kwargs.endpoint_url=... -> {"client_kwargs": {"endpoint_url": ...}}
        target = nested
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return nested or None


def _problem(args: argparse.Namespace, message: object) -> None:
    print(f"diffcodec archive {args.archive_command} {args.url}: {message}", file=sys.stderr)


def _guarded(command: Callable[[argparse.Namespace, Archive], int]) -> Command:
    """Open the archive, run ``command``; any library or I/O error becomes one line and exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args, open_archive(args.url, "r", storage_options_from_pairs(args.storage_option)))
        except (DiffCodecError, OSError, ValueError) as exc:
            _problem(args, exc)
            return 1

    return run


def _info(args: argparse.Namespace, archive: Archive) -> int:
    counts = archive.counts()
    last = archive.last_verify
    verified = "unverified" if last is None else last if args.json else f"{last['time']}: {last['summary']}"
    summary = {"url": archive.url, "entries": len(archive), **counts, **archive.attributes, "verified": verified}
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    return 1 if counts["failed"] or counts["pending"] or (last and last["damaged"]) else 0


def _checked(row: dict[str, Any], last: dict[str, Any] | None) -> str | None:
    """What the last verify says of an ok entry: "ok", "corrupt" or "unverified" (None for other entries)."""
    if row["status"] != "ok":
        return None
    if last is None or row["index"] >= last["entries"]:
        return "unverified"
    return "corrupt" if row["key"] in last["damaged"] else "ok"


def _ls(args: argparse.Namespace, archive: Archive) -> int:
    """One line per entry; an ok entry's status is what the last verify found: ok, corrupt (with the damage)
    or unverified, followed by the warning raised while it was encoded, if any. JSON rows add ``verified`` (that, or None for failed and pending entries) and ``damage``."""
    worst, last = 0, archive.last_verify
    for row in archive.entries():
        if args.status and row["status"] != args.status:
            continue
        row["verified"] = _checked(row, last)
        row["damage"] = last["damaged"][row["key"]] if row["verified"] == "corrupt" else ""  # type: ignore[index]
        worst = worst or int(row["status"] != "ok" or row["verified"] == "corrupt")
        if args.json:
            print(json.dumps(row))
        elif row["status"] == "ok":
            size = f"{row['width']}x{row['height']} {row['mode']:<4}"
            note = row["damage"] or (f"warning: {row['error']}" if row["error"] else "")
            line = f"{row['index']:>8}  {row['verified']:<10} {size:<14} {row['bpp']:.4f} bpp  {row['key']}  {note}"
            print(line.rstrip())
        else:
            print(f"{row['index']:>8}  {row['status']:<10} {row['key']}  {row['error']}".rstrip())
    return worst


def _verify(args: argparse.Namespace, archive: Archive) -> int:
    """Verify (and with --repair, repair) through a writable copy of the archive, so that the outcome is
    recorded; where the archive cannot be written, verify it read-only and say so."""
    options = {"model": args.model} if args.model else {}
    try:
        archive = open_archive(args.url, "a", archive.storage_options)
    except (DiffCodecError, OSError) as exc:
        if args.repair:
            raise
        _problem(args, f"the result is not recorded (the archive cannot be written here: {exc})")
    report = archive.verify(args.sample, repair=args.repair, **options)
    _print_verify(report)
    problems = report.failed or report.pending or report.marked_failed
    return 0 if report.healthy and not problems else 1


def _print_verify(report: VerifyReport) -> None:
    """One line per entry that is not fine on stderr (and per repaired one on stdout), then the summary."""
    for key, error in {**report.damaged, **report.decode_errors}.items():
        print(f"{key}: {error}", file=sys.stderr)
    for key in report.repaired:
        print(f"{key}: repaired (re-encoded from its source)")
    for key, reason in report.marked_failed.items():
        print(f"{key}: marked failed: {reason}", file=sys.stderr)
    for key, error in report.failed.items():
        print(f"{key}: failed when written: {error}", file=sys.stderr)
    for key in report.pending:
        print(f"{key}: pending (not written yet)", file=sys.stderr)
    print(report.summary())


def _repair(args: argparse.Namespace) -> int:
    """``archive repair``: rebuild the root zarr.json (the archive cannot be opened first, unlike the others)."""
    try:
        attributes = rebuild_root(args.url, storage_options_from_pairs(args.storage_option))
    except (DiffCodecError, OSError, ValueError) as exc:
        _problem(args, exc)
        return 1
    if attributes is None:
        print(f"{args.url}: its root zarr.json is intact; nothing to rebuild")
        return 0
    source = attributes["job"].get("source", "not recorded")
    print(
        f"{args.url}: rebuilt its root zarr.json: {attributes['length']} entries, {attributes['items_per_shard']} per "
        f"shard, job source {source}; check it with: diffcodec archive verify --repair {args.url}"
    )
    return 0


def _extract(args: argparse.Namespace, archive: Archive) -> int:
    options = {"model": args.model} if args.model else {}
    report = archive.extract(
        args.destination,
        args.format,
        storage_options=storage_options_from_pairs(args.dest_option),
        progress=not args.quiet,
        jobs=args.jobs,
        **options,
    )
    return print_extract_report(report, f"{len(report.written)} of {len(archive)} entries to {args.destination}")


def print_extract_report(report: ExtractReport, what: str) -> int:
    """One line per entry that was not written, a summary ("extracted WHAT; ..."), and the exit status."""
    for key, error in report.errors.items():
        print(f"{key}: {error}", file=sys.stderr)
    for key, reason in report.skipped.items():
        print(f"{key}: skipped: {reason}", file=sys.stderr)
    print(f"extracted {what}; {len(report.skipped)} skipped (failed or pending), {len(report.errors)} errors")
    return 1 if report.errors or report.skipped else 0


def _parser(
    commands: Any, name: str, help: str, command: Callable[[argparse.Namespace, Archive], int]
) -> argparse.ArgumentParser:
    parser = _url_parser(commands, name, help)
    parser.set_defaults(run=_guarded(command))
    return parser


def _url_parser(commands: Any, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand taking an archive URL and storage options."""
    parser = commands.add_parser(name, help=help, description=help)
    parser.add_argument("url", help="archive path or fsspec URL (s3://..., memory://...)")
    parser.add_argument(
        "-o",
        "--storage-option",
        type=storage_option_pair,
        action="append",
        metavar="KEY=VALUE",
        help="fsspec storage option, repeatable; dots nest (client_kwargs.endpoint_url=http://...)",
    )
    return parser


def register(subparsers: Any) -> None:
    """Add ``archive`` with its subcommands to the diffcodec CLI's argparse ``subparsers``."""
    archive = subparsers.add_parser("archive", help="inspect, verify, repair and extract zarr image archives")
    commands = archive.add_subparsers(dest="archive_command", required=True, metavar="ARCHIVE_COMMAND")
    info = _parser(commands, "info", "print the archive's attributes and entry counts", _info)
    info.add_argument("--json", action="store_true", help="one JSON object")
    ls = _parser(commands, "ls", "list entries: index, status, size, mode, bpp, key (and error)", _ls)
    ls.add_argument("--status", choices=["ok", "failed", "pending"], help="only entries with this status")
    ls.add_argument("--json", action="store_true", help="one JSON object per entry")
    verify = _parser(commands, "verify", "check every bitstream's CRC and decode a sample", _verify)
    verify.add_argument("--sample", type=int, default=0, help="number of entries to decode (default 0)")
    verify.add_argument("--model", help="decode (and with --repair, encode) with this model instead of the recorded one")
    verify.add_argument(
        "--repair", action="store_true",
        help="re-encode damaged entries from the source the archive's job records, else mark them failed",
    )
    repair = _url_parser(commands, "repair", "rebuild a damaged or missing root zarr.json from the archive's arrays")
    repair.set_defaults(run=_repair)
    extract = _parser(commands, "extract", "decode every ok entry to image files below a folder or URL", _extract)
    extract.add_argument("destination", help="folder or fsspec URL; entries go to <destination>/<key>.<ext>")
    extract.add_argument("--format", default="PNG", help=FORMAT_HELP)
    extract.add_argument("--model", help="decode with this model instead of the one named in each file")
    extract.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1,
                         help="entries decoded at once, in threads (default: the CPU count)")
    extract.add_argument(
        "--dest-option",
        type=storage_option_pair,
        action="append",
        metavar="KEY=VALUE",
        help="fsspec storage option for the destination, repeatable",
    )
    extract.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
