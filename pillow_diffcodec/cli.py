"""The ``diffcodec`` command line: encode, decode, info, models, plus subcommands that other packages add.

    diffcodec encode photos/*.png -o out/ --bpp 0.1
    diffcodec decode out/*.ddcm -o restored/
    diffcodec info out/a.ddcm --json
    diffcodec models

Inputs may be paths, folders, globs or fsspec URLs; outputs keep the inputs' folder structure below
their common folder, and two inputs that would write one output are refused before anything runs.
A failure in one file is one line on stderr and the others go on; the exit status is 1 when any file
failed, 2 for usage errors, 130 when interrupted. No traceback is ever printed.

The encode flags come from :mod:`.options` (generic options and each codec's parameter class), so
``Image.save``, ``encode()`` and the CLI accept the same options. Packages add subcommands through the
``diffcodec.commands`` entry-point group: each entry names ``register(subparsers)``, which adds parsers
whose ``run`` default is ``function(args) -> exit status``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import posixpath
import sys
import time
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, TextIO

import fsspec
from PIL import Image, UnidentifiedImageError

from . import __version__, container, fileinfo, limits
from .codecs import CODECS, DEFAULT_CODEC, codec_by_name
from .errors import DiffCodecError, InvalidParameterError
from .fsio import write_bytes_atomic
from .inputs import Job, Source, expand
from .options import DECODE_OPTIONS, ENCODE_OPTIONS, Option

COMMANDS_GROUP = "diffcodec.commands"
LINE_PROGRESS_SECONDS = 2.0  # non-terminal progress: at most one line this often


class UsageError(DiffCodecError, ValueError):
    """The command line cannot run as given (exit status 2)."""


@dataclass
class Tally:
    """Running totals for the summary line."""

    done: int = 0
    failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    bpp_sum: float = 0.0


def _inside(relative: str) -> str:
    """``relative`` as a path that cannot leave the folder it is joined to: no ``..``, ``.`` or leading ``/``."""
    parts = [part for part in posixpath.normpath(relative).split("/") if part not in ("", ".", "..")]
    return "/".join(parts) or "_"


def plan_outputs(job: Job, out: str, suffix: str) -> None:
    """Give every source its output URL; refuse (UsageError) when two sources would write one output.

    One source and an ``out`` that is not a folder: ``out`` itself. Otherwise ``out/<path relative to the
    sources' common folder>`` with the suffix replaced, like ``cp -r`` keeps structure. Input paths are
    normalised first and ``..`` never survives into an output, so nothing is written outside ``out``.
    """
    sources = [source for source, _ in job.pairs]
    out_fs, out_path = fsspec.core.url_to_fs(out)
    to_folder = len(sources) != 1 or out.endswith("/") or out_fs.isdir(out_path)
    if not to_folder:
        job.pairs = [(sources[0], out)]
        return
    try:
        common = posixpath.commonpath([s.base for s in sources]) if sources else ""
    except ValueError:  # absolute and relative paths (e.g. local files and bucket keys): keep whole paths
        common = ""
    planned: dict[str, Source] = {}
    pairs = []
    for source in sources:
        relative = posixpath.relpath(source.path, common) if common else source.path
        target = out.rstrip("/") + "/" + posixpath.splitext(_inside(relative))[0] + suffix
        if target in planned:
            raise UsageError(
                f"{planned[target].url} and {source.url} would both be written to {target}; "
                "rename one or encode them in separate runs"
            )
        planned[target] = source
        pairs.append((source, target))
    job.pairs = pairs


class StepProgress:
    """Per-step progress of one file: a bar with ETA on a terminal, plain lines otherwise, or nothing."""

    def __init__(self, label: str, mode: str, stream: TextIO) -> None:
        self.label, self.stream = label, stream
        self.start = self.last = time.monotonic()
        self.mode = ("bar" if stream.isatty() else "auto-lines") if mode == "auto" else mode

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        elapsed = now - self.start
        eta = elapsed / done * (total - done)
        if self.mode == "bar":
            filled = round(24 * done / total)
            end = "\n" if done == total else ""
            bar = "#" * filled + "." * (24 - filled)
            print(f"\r{self.label} [{bar}] {done}/{total} ETA {eta:4.0f}s", end=end, file=self.stream, flush=True)
        elif self.mode == "lines" or (self.mode == "auto-lines" and now - self.last >= LINE_PROGRESS_SECONDS
                                      and done < total):
            print(f"{self.label} step {done}/{total}, {elapsed:.0f}s elapsed, ETA {eta:.0f}s", file=self.stream,
                  flush=True)
            self.last = now


def _read(url: str) -> bytes:
    with fsspec.open(url, "rb") as handle:
        return handle.read()


def _describe_failure(exc: BaseException) -> str:
    """One line for a per-file failure: our own errors speak for themselves, others are named."""
    if isinstance(exc, DiffCodecError):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"no such file ({exc.filename or exc})"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _open_image(raw: bytes, url: str) -> Image.Image:
    """Pillow's image from bytes, with errors that name the file instead of a BytesIO object."""
    try:
        return Image.open(io.BytesIO(raw))
    except UnidentifiedImageError:
        what = "an empty file" if not raw else "not an image Pillow can read"
        raise UsageError(f"{what} ({len(raw)} bytes)") from None
    except Image.DecompressionBombError as exc:
        raise UsageError(f"refused as a decompression bomb: {exc}") from None


def _check_output(target: str, overwrite: bool) -> None:
    fs, path = fsspec.core.url_to_fs(target)
    if not overwrite and fs.exists(path):
        raise UsageError(f"output {target} already exists (pass --overwrite to replace it)")


Work = Callable[[Source, str, StepProgress], tuple[int, int, float]]


def _run(job: Job, work: Work, verb: str, progress_mode: str) -> int:
    tally = Tally()
    total = len(job.pairs) + len(job.missing)
    for item in job.missing:
        tally.failed += 1
        print(f"{item}: FAILED: no file matches", file=sys.stderr)
    for position, (source, target) in enumerate(job.pairs, 1):
        label = f"[{position}/{len(job.pairs)}] {source.url}"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                size_in, size_out, bpp = work(source, target, StepProgress(label, progress_mode, sys.stderr))
            except Exception as exc:  # every per-file failure becomes one line, and the run goes on
                tally.failed += 1
                print(f"{label}: FAILED: {_describe_failure(exc)}", file=sys.stderr)
                continue
            finally:
                for warning in caught:
                    print(f"{label}: note: {warning.message}", file=sys.stderr)
        tally.done += 1
        tally.bytes_in += size_in
        tally.bytes_out += size_out
        tally.bpp_sum += bpp
        print(f"{label} -> {target}: {size_in} -> {size_out} bytes, {bpp:.4f} bpp", file=sys.stderr)
    mean = tally.bpp_sum / tally.done if tally.done else 0.0
    print(f"{verb} {tally.done} file(s), {tally.failed} failed; {tally.bytes_in} bytes in, "
          f"{tally.bytes_out} bytes out, mean {mean:.4f} bpp")
    return 1 if tally.failed or total == 0 else 0


def _given(args: argparse.Namespace, options: Sequence[Option]) -> dict[str, Any]:
    """The options the user gave (argparse defaults are None, so the library's defaults apply)."""
    given = {o.name: getattr(args, o.name) for o in options if o.cli and getattr(args, o.name, None) is not None}
    if given.get("window") is not None:
        given["window"] = tuple(given["window"])
    return given


def _check_device(args: argparse.Namespace) -> None:
    if args.device is not None:
        from .models import resolve_device

        try:
            resolve_device(args.device)
        except InvalidParameterError as exc:
            raise UsageError(str(exc)) from None


def cmd_encode(args: argparse.Namespace) -> int:
    from .api import encode_images

    entry = codec_by_name(args.codec)
    options = {**_given(args, ENCODE_OPTIONS), **_given(args, entry.options)}
    _check_device(args)
    job = expand(args.inputs, frozenset(Image.registered_extensions()))
    plan_outputs(job, args.output, entry.extensions[0])

    def work(source: Source, target: str, progress: StepProgress) -> tuple[int, int, float]:
        _check_output(target, args.overwrite)
        raw = _read(source.url)
        with _open_image(raw, source.url) as image:  # a multi-frame image needs --frame (encode_images says so)
            result = encode_images([image], codec=entry.name, progress=progress, **options)[0]
        write_bytes_atomic(result.data, target)
        return len(raw), len(result.data), result.bpp

    return _run(job, work, "encoded", args.progress)


def _output_format(name: str) -> tuple[str, str]:
    """(Pillow format, file suffix) for ``--format``; UsageError listing what Pillow can write."""
    fmt = name.upper()
    Image.init()  # load every Pillow plugin so that Image.SAVE is complete
    if fmt not in Image.SAVE:
        raise UsageError(f"Unknown output format {name!r}; Pillow here can write {sorted(Image.SAVE)}")
    suffixes = [ext for ext, owner in Image.registered_extensions().items() if owner == fmt]
    preferred = "." + fmt.lower()
    return fmt, (preferred if preferred in suffixes or not suffixes else suffixes[0])


def cmd_decode(args: argparse.Namespace) -> int:
    from .api import decode_file

    fmt, suffix = _output_format(args.format)
    options = _given(args, DECODE_OPTIONS)
    per_codec = {entry.name: _given(args, entry.decode_options) for entry in CODECS}
    _check_device(args)
    ours = frozenset(ext for entry in CODECS for ext in entry.extensions)
    job = expand(args.inputs, None if args.allow_foreign else ours)
    plan_outputs(job, args.output, suffix)

    def work(source: Source, target: str, progress: StepProgress) -> tuple[int, int, float]:
        _check_output(target, args.overwrite)
        raw = _read(source.url)
        if raw[: len(container.MAGIC)] == container.MAGIC:
            parsed = fileinfo.read_file(raw, max_pixels=options.get("max_pixels", limits.max_pixels_default()))
            image = decode_file(parsed, progress=progress, **options, **per_codec[parsed.codec.name])
        else:
            with _open_image(raw, source.url) as foreign:
                if not args.allow_foreign:
                    raise UsageError(f"is a {foreign.format} file, not a diffcodec file "
                                     "(pass --allow-foreign to convert it anyway)")
                foreign.load()
                image = foreign.copy()
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        write_bytes_atomic(buffer.getvalue(), target)
        return len(raw), len(buffer.getvalue()), container.bits_per_pixel(len(raw), image.width, image.height)

    return _run(job, work, "decoded", args.progress)


def cmd_info(args: argparse.Namespace) -> int:
    job = expand(args.inputs)
    status = 1 if job.missing or not job.pairs else 0
    for item in job.missing:
        print(f"{item}: FAILED: no file matches", file=sys.stderr)
    for source, _ in job.pairs:
        try:
            meta = fileinfo.info(_read(source.url))
        except Exception as exc:  # one line per bad file, then the next
            print(f"{source.url}: FAILED: {_describe_failure(exc)}", file=sys.stderr)
            status = 1
            continue
        printable = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in meta.items()}
        if args.json:
            print(json.dumps({"file": source.url, **printable}))
        else:
            print(source.url)
            for key, value in printable.items():
                print(f"  {key}: {value}")
    return status


def cmd_models(args: argparse.Namespace) -> int:
    from .models import available_models

    rows = available_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        mark = "available" if row["available"] else "missing"
        print(f"{row['name']:<32} {row['kind']:<20} {mark:<10} {row['location']}")
    return 0


def add_option(parser: argparse.ArgumentParser | Any, option: Option) -> None:
    """One :class:`Option` as an argparse flag (default None, so unset options keep the library's defaults)."""
    if option.type is None:
        parser.add_argument(option.flag, action=argparse.BooleanOptionalAction, default=None, help=option.describe())
        return
    parser.add_argument(option.flag, type=option.type, choices=option.choices, nargs=option.nargs,
                        metavar=option.metavar, help=option.describe())


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True,
                        help="output file, or folder (several inputs, an existing folder, or a trailing /)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    parser.add_argument("--progress", choices=("auto", "bar", "lines", "none"), default="auto",
                        help="per-step progress on stderr: a bar on a terminal, plain lines otherwise (default: auto)")


def _encode_parser(commands: Any) -> None:
    encode = commands.add_parser("encode", help="encode images to diffcodec files",
                                 description="Encode images (files, folders, globs, fsspec URLs) to diffcodec files.")
    encode.add_argument("inputs", nargs="+", help="image files, folders, globs or fsspec URLs")
    _add_common(encode)
    add_encode_options(encode)
    encode.set_defaults(run=cmd_encode)


def add_encode_options(parser: argparse.ArgumentParser, exclude: Collection[str] = ()) -> None:
    """``--codec``, ``--bpp | --quality``, the generic encode options and every codec's parameters (once
    each), as ``diffcodec encode`` and other commands that encode (``diffcodec bulk``) take them."""
    parser.add_argument("--codec", default=DEFAULT_CODEC, choices=[entry.name for entry in CODECS],
                        help=f"codec (default: {DEFAULT_CODEC})")
    rate = parser.add_mutually_exclusive_group()
    general = parser.add_argument_group("encoding options")
    for option in ENCODE_OPTIONS:
        if option.cli and option.name not in exclude:
            add_option(rate if option.name in ("bpp", "quality") else general, option)
    seen = {option.name for option in ENCODE_OPTIONS}
    for entry in CODECS:
        group = parser.add_argument_group(f"{entry.name} parameters")
        for option in entry.options:
            if option.name not in seen:
                add_option(group, option)
                seen.add(option.name)


def _decode_parser(commands: Any) -> None:
    decode = commands.add_parser("decode", help="decode diffcodec files (to PNG by default)",
                                 description="Decode diffcodec files to any format Pillow writes.")
    decode.add_argument("inputs", nargs="+", help="diffcodec files, folders, globs or fsspec URLs")
    _add_common(decode)
    decode.add_argument("--format", default="PNG", help="Pillow format to write (default: PNG)")
    decode.add_argument("--allow-foreign", action="store_true",
                        help="also convert inputs that are other image formats (refused otherwise)")
    for option in DECODE_OPTIONS:
        if option.cli:
            add_option(decode, option)
    seen = {option.name for option in DECODE_OPTIONS}
    for entry in CODECS:
        own = [option for option in entry.decode_options if option.cli and option.name not in seen]
        if own:
            group = decode.add_argument_group(f"{entry.name} decode options (applied to {entry.name} files only)")
            for option in own:
                add_option(group, option)
                seen.add(option.name)
    decode.set_defaults(run=cmd_decode)


def _plugin_commands(commands: Any) -> None:
    """Subcommands contributed by other packages (storage, ray_jobs) through entry points."""
    for point in entry_points(group=COMMANDS_GROUP):
        try:
            point.load()(commands)
        except Exception as exc:  # a broken plugin must not take the core commands down with it
            failure = f"diffcodec {point.name} is unavailable: {_describe_failure(exc)}"
            broken = commands.add_parser(point.name, help=f"(unavailable: {type(exc).__name__})")
            broken.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            broken.set_defaults(run=lambda args, failure=failure: print(failure, file=sys.stderr) or 2)


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="diffcodec", description="Diffusion-model image codecs as files and archives.")
    main.add_argument("--version", action="version", version=f"diffcodec {__version__}")
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _encode_parser(commands)
    _decode_parser(commands)
    show = commands.add_parser("info", help="print a file's header (no model is loaded)")
    show.add_argument("inputs", nargs="+")
    show.add_argument("--json", action="store_true", help="one JSON object per file")
    show.set_defaults(run=cmd_info)
    models = commands.add_parser("models", help="list models and where they were found")
    models.add_argument("--json", action="store_true")
    models.set_defaults(run=cmd_models)
    _plugin_commands(commands)
    return main


class OutputClosed(BaseException):
    """Standard output was closed by its reader (``diffcodec archive ls URL | head -1``): stop quietly.

    A BaseException, like KeyboardInterrupt, so that no command's own error handling reports it.
    """


class _ClosableStdout:
    """``sys.stdout`` for the duration of :func:`main`: a write or flush into a closed pipe raises
    :class:`OutputClosed` instead of BrokenPipeError (which commands would report as an I/O error)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            raise OutputClosed from None

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            raise OutputClosed from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _discard_stdout() -> None:
    """Point the process's stdout at /dev/null, so that the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.__stdout__.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (141, as for SIGPIPE, when stdout's reader went away)."""
    args = parser().parse_args(argv)
    stdout, sys.stdout = sys.stdout, _ClosableStdout(sys.stdout)
    try:
        status = int(args.run(args))
        sys.stdout.flush()
        return status
    except OutputClosed:
        _discard_stdout()
        return 141
    except KeyboardInterrupt:
        print("\ninterrupted: finished outputs are complete, nothing partial was written", file=sys.stderr)
        return 130
    except DiffCodecError as exc:
        print(f"diffcodec {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the CLI never prints a traceback
        print(f"diffcodec {args.command}: unexpected {_describe_failure(exc)} (please report this)", file=sys.stderr)
        return 1
    finally:
        sys.stdout = stdout


if __name__ == "__main__":
    sys.exit(main())
