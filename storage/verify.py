"""Checking an archive: every ok entry's bitstream (header, CRC, agreement with its columns), and a decoded sample."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

import pillow_diffcodec
from pillow_diffcodec.errors import DiffCodecError

from .errors import ArchiveError

if TYPE_CHECKING:
    from .archive import Archive


@dataclass
class VerifyReport:
    """The outcome of :meth:`Archive.verify`. ``healthy`` is True when nothing stored as ok is damaged."""

    url: str
    entries: int = 0
    ok: int = 0  # ok entries whose bitstream checked out
    failed: dict[str, str] = field(default_factory=dict)  # recorded failures (the job's, not damage)
    pending: list[str] = field(default_factory=list)
    corrupt: dict[str, str] = field(default_factory=dict)  # stored as ok but missing, damaged or inconsistent
    decoded: list[str] = field(default_factory=list)
    decode_errors: dict[str, str] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.corrupt and not self.decode_errors

    def summary(self) -> str:
        """One line: counts of each outcome."""
        return (
            f"{self.url}: {self.entries} entries, {self.ok} ok, {len(self.failed)} failed when written, "
            f"{len(self.pending)} pending, {len(self.corrupt)} corrupt; decoded {len(self.decoded)} "
            f"({len(self.decode_errors)} decode errors)"
        )


def _disagreement(row: dict[str, Any], header: dict[str, Any]) -> str | None:
    for name in ("width", "height", "mode"):
        if row[name] != header[name]:
            return f"its {name} column says {row[name]!r} but the file header says {header[name]!r}"
    return None


def verify(archive: Archive, sample: int | None = None, **decode_options: Any) -> VerifyReport:
    """Check the archive; decode ``sample`` ok entries spread evenly over it (None or 0: decode none).

    ``decode_options`` go to :func:`pillow_diffcodec.decode` (``model``, ``device``, ...).
    """
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 0):
        raise pillow_diffcodec.InvalidParameterError(f"Expected sample to be a count >= 0 or None, got {sample!r}")
    report = VerifyReport(archive.url)
    good: list[tuple[str, bytes, dict[str, Any]]] = []
    for row, data in archive.records():
        report.entries += 1
        if row["status"] == "failed":
            report.failed[row["key"]] = row["error"]
        elif row["status"] == "pending":
            report.pending.append(row["key"])
        elif isinstance(data, ArchiveError):
            report.corrupt[row["key"]] = str(data)
        elif data is not None:
            problem = _disagreement(row, pillow_diffcodec.info(data))
            if problem:
                report.corrupt[row["key"]] = f"Entry {row['key']!r} in {archive.url}: {problem}"
                continue
            report.ok += 1
            good.append((row["key"], data, row))
        else:
            report.corrupt[row["key"]] = f"Entry {row['key']!r} in {archive.url} has status {row['status']}"
    count = min(sample or 0, len(good))
    for position in np.linspace(0, len(good) - 1, count).round().astype(int) if count else []:
        key, data, row = good[position]
        try:
            image = pillow_diffcodec.decode(data, **decode_options)
        except (DiffCodecError, OSError, ValueError, RuntimeError) as exc:
            report.decode_errors[key] = f"{type(exc).__name__}: {exc}"
            continue
        if image.size != (row["width"], row["height"]):
            report.decode_errors[key] = f"decoded to {image.size}, expected {(row['width'], row['height'])}"
            continue
        report.decoded.append(key)
    return report
