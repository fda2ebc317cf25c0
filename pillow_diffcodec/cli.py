"""The ``diffcodec`` command line: encode, decode, info, models.

    diffcodec encode photos/*.png -o out/ --bpp 0.1
    diffcodec decode out/*.ddcm -o restored/
    diffcodec info out/a.ddcm --json
    diffcodec models

Inputs may be paths, globs or fsspec URLs. A failure in one file is reported and the others go on;
the exit status is 1 when any file failed (2 for usage errors).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import fsspec
from PIL import Image

from . import fileinfo
from .errors import DiffCodecError
from .fsio import write_bytes_atomic

GLOB_CHARACTERS = "*?["


@dataclass
class Tally:
    """Running totals for the summary line."""

    done: int = 0
    failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    bpp_sum: float = 0.0


def expand(inputs: Sequence[str]) -> list[str]:
    """Paths, globs and URLs -> concrete URLs (a glob that matches nothing is kept, to fail visibly)."""
    urls: list[str] = []
    for item in inputs:
        if any(c in item for c in GLOB_CHARACTERS):
            fs, pattern = fsspec.core.url_to_fs(item)
            matches = sorted(fs.glob(pattern))
            urls += [item] if not matches else [m if "://" not in item else fs.unstrip_protocol(m) for m in matches]
        else:
            urls.append(item)
    return urls


def output_url(source: str, out: str, many: bool, suffix: str) -> str:
    """Where the output of ``source`` goes: ``out`` itself, or ``out/<stem><suffix>`` for a folder."""
    fs, path = fsspec.core.url_to_fs(out)
    if many or out.endswith("/") or fs.isdir(path):
        stem = PurePosixPath(source.split("::")[0].rstrip("/")).stem
        return out.rstrip("/") + "/" + stem + suffix
    return out


def _read(url: str) -> bytes:
    with fsspec.open(url, "rb") as handle:
        return handle.read()


def _run(urls: list[str], work: Callable[[str, int], tuple[int, int, float]], verb: str) -> int:
    tally = Tally()
    for position, url in enumerate(urls, 1):
        try:
            size_in, size_out, bpp = work(url, len(urls))
        except (DiffCodecError, OSError, ValueError, KeyError) as exc:
            tally.failed += 1
            print(f"[{position}/{len(urls)}] {url}: FAILED: {exc}", file=sys.stderr)
            continue
        tally.done += 1
        tally.bytes_in += size_in
        tally.bytes_out += size_out
        tally.bpp_sum += bpp
        print(f"[{position}/{len(urls)}] {url}: {size_in} -> {size_out} bytes, {bpp:.4f} bpp", file=sys.stderr)
    mean = tally.bpp_sum / tally.done if tally.done else 0.0
    print(f"{verb} {tally.done} file(s), {tally.failed} failed; {tally.bytes_in} bytes in, {tally.bytes_out} bytes out, "
          f"mean {mean:.4f} bpp")
    return 1 if tally.failed else 0


def _codec_options(args: argparse.Namespace) -> dict[str, Any]:
    names = ["model", "bpp", "quality", "seed", "steps", "codebook_size", "atoms", "coef_levels", "selection",
             "device", "dtype"]
    options = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.window is not None:
        options["window"] = tuple(args.window)
    if args.drop_alpha:
        options["keep_alpha"] = False
    return options


def cmd_encode(args: argparse.Namespace) -> int:
    urls = expand(args.inputs)
    options = _codec_options(args)

    def work(url: str, count: int) -> tuple[int, int, float]:
        raw = _read(url)
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            buffer = io.BytesIO()
            image.save(buffer, format="DDCM", **options)
        data = buffer.getvalue()
        write_bytes_atomic(data, output_url(url, args.output, count > 1, ".ddcm"))
        return len(raw), len(data), 8 * len(data) / (image.width * image.height)

    return _run(urls, work, "encoded")


def cmd_decode(args: argparse.Namespace) -> int:
    urls = expand(args.inputs)
    suffix = "." + args.format.lower()

    def work(url: str, count: int) -> tuple[int, int, float]:
        raw = _read(url)
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            buffer = io.BytesIO()
            image.save(buffer, format=args.format)
        write_bytes_atomic(buffer.getvalue(), output_url(url, args.output, count > 1, suffix))
        return len(raw), len(buffer.getvalue()), 8 * len(raw) / (image.width * image.height)

    return _run(urls, work, "decoded")


def cmd_info(args: argparse.Namespace) -> int:
    status = 0
    for url in expand(args.inputs):
        try:
            meta = fileinfo.info(_read(url))
        except (DiffCodecError, OSError) as exc:
            print(f"{url}: {exc}", file=sys.stderr)
            status = 1
            continue
        printable = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in meta.items()}
        if args.json:
            print(json.dumps({"file": url, **printable}))
        else:
            print(url)
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


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="diffcodec", description="Diffusion-model image codecs (DDCM).")
    commands = main.add_subparsers(dest="command", required=True)

    encode = commands.add_parser("encode", help="encode images to .ddcm files")
    encode.add_argument("inputs", nargs="+", help="image files, globs or fsspec URLs")
    encode.add_argument("-o", "--output", required=True, help="output file, or folder (several inputs or trailing /)")
    rate = encode.add_mutually_exclusive_group()
    rate.add_argument("--bpp", type=float, help="target bits per pixel (whole file)")
    rate.add_argument("--quality", type=float, help="quality preset 0-100")
    encode.add_argument("--model", help="model name, directory or Hugging Face repo id (default: builtin)")
    encode.add_argument("--steps", type=int)
    encode.add_argument("--codebook-size", type=int)
    encode.add_argument("--atoms", type=int)
    encode.add_argument("--coef-levels", type=int)
    encode.add_argument("--selection", choices=["mp", "topm"])
    encode.add_argument("--window", type=int, nargs=2, metavar=("HIGH", "LOW"))
    encode.add_argument("--seed", type=int)
    encode.add_argument("--device")
    encode.add_argument("--dtype", choices=["float32", "float16", "bfloat16"])
    encode.add_argument("--drop-alpha", action="store_true", help="do not keep an alpha channel")
    encode.set_defaults(run=cmd_encode)

    decode = commands.add_parser("decode", help="decode .ddcm files (to PNG by default)")
    decode.add_argument("inputs", nargs="+")
    decode.add_argument("-o", "--output", required=True)
    decode.add_argument("--format", default="PNG", help="Pillow format to write (default PNG)")
    decode.set_defaults(run=cmd_decode)

    show = commands.add_parser("info", help="print a file's header")
    show.add_argument("inputs", nargs="+")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=cmd_info)

    models = commands.add_parser("models", help="list models and where they were found")
    models.add_argument("--json", action="store_true")
    models.set_defaults(run=cmd_models)
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
