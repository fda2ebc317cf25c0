"""Inputs as users give them (paths, folders, globs, fsspec URLs) expanded to the images they name.

Used by the CLI and by ``diffcodec eval``: a folder is searched recursively for the given suffixes, a glob
matches files only, and each source remembers the folder its output name is relative to (the folder
given, the glob's fixed part, or a file's own folder). Paths are normalised (``dir/../x`` -> ``x``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field

import fsspec

GLOB_CHARACTERS = "*?["


@dataclass(frozen=True)
class Source:
    """One input: its URL, the path it is read from (protocol stripped), and the folder its output is relative to."""

    url: str
    path: str
    base: str


@dataclass
class Job:
    """Sources with their planned output URLs, plus inputs that failed before planning (e.g. empty globs)."""

    pairs: list[tuple[Source, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _strip(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(url)


def expand(inputs: Sequence[str], suffixes: frozenset[str] | None = None) -> Job:
    """Paths, folders (searched recursively for ``suffixes``), globs and URLs -> sources; empty globs are reported."""
    job = Job()
    for item in inputs:
        fs, path = _strip(item)
        path = posixpath.normpath(path)  # "dir/../x" -> "x", so common folders are found and outputs stay inside -o
        chained = "::" in item or "://" in item
        def url_of(found: str) -> str:
            return fs.unstrip_protocol(found) if chained else found
        if any(c in item for c in GLOB_CHARACTERS):
            base = path[: min(path.index(c) for c in GLOB_CHARACTERS if c in path)].rsplit("/", 1)[0] or "/"
            matches = sorted(m for m in fs.glob(path) if not fs.isdir(m))
            if not matches:
                job.missing.append(item)
            job.pairs += [(Source(url_of(m), m, base), "") for m in matches]
        elif fs.isdir(path):
            found = sorted(m for m in fs.find(path) if suffixes is None or posixpath.splitext(m)[1].lower() in suffixes)
            if not found:
                job.missing.append(item)
            job.pairs += [(Source(url_of(m), m, path.rstrip("/")), "") for m in found]
        else:
            job.pairs.append((Source(item, path, posixpath.dirname(path) or "."), ""))
    return job
