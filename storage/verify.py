"""Checking an archive: every ok entry's bitstream (header, CRC, agreement with its columns), and a decoded sample."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    repaired: list[str] = field(default_factory=list)  # corrupt entries re-encoded from their source (repair=True)
    marked_failed: dict[str, str] = field(default_factory=dict)  # corrupt entries now failed, with the reason

    @property
    def damaged(self) -> dict[str, str]:
        """The corrupt entries a repair did not deal with (all of them when verify ran without repair)."""
        return {key: error for key, error in self.corrupt.items() if key not in self.repaired + list(self.marked_failed)}

    @property
    def healthy(self) -> bool:
        """True when no entry stored as ok is damaged any more (repaired or marked failed count as dealt with)."""
        return not self.damaged and not self.decode_errors

    def summary(self) -> str:
        """One line: counts of each outcome."""
        repaired = self.repaired or self.marked_failed
        repair = f"; repaired {len(self.repaired)}, marked failed {len(self.marked_failed)}" if repaired else ""
        return (
            f"{self.url}: {self.entries} entries, {self.ok} ok, {len(self.failed)} failed when written, "
            f"{len(self.pending)} pending, {len(self.corrupt)} corrupt{repair}; decoded {len(self.decoded)} "
            f"({len(self.decode_errors)} decode errors)"
        )

    def as_record(self) -> dict[str, Any]:
        """What the archive stores as its :attr:`~storage.Archive.last_verify` (JSON-able)."""
        return {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "summary": self.summary(),
            "entries": self.entries,
            "ok": self.ok + len(self.repaired),
            "failed": len(self.failed) + len(self.marked_failed),
            "pending": len(self.pending),
            "damaged": self.damaged,
            "repaired": list(self.repaired),
            "marked_failed": dict(self.marked_failed),
            "decoded": len(self.decoded),
            "decode_errors": dict(self.decode_errors),
            "healthy": self.healthy,
        }


def _disagreement(row: dict[str, Any], header: dict[str, Any]) -> str | None:
    for name in ("width", "height", "mode"):
        if row[name] != header[name]:
            return f"its {name} column says {row[name]!r} but the file header says {header[name]!r}"
    return None


def verify(archive: Archive, sample: int | None = None, *, repair: bool = False, **decode_options: Any) -> VerifyReport:
    """Check the archive; decode ``sample`` ok entries spread evenly over it (None or 0: decode none).

    ``decode_options`` go to :func:`pillow_diffcodec.decode` (``model``, ``device``, ...). ``repair``
    re-encodes the corrupt entries from their source or marks them failed
    (:func:`storage.repair.repair_entries`). An archive open for writing records the outcome.
    """
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 0):
        raise pillow_diffcodec.InvalidParameterError(f"Expected sample to be a count >= 0 or None, got {sample!r}")
    report = _check(archive, sample, **decode_options)
    if repair and report.corrupt:
        from .repair import repair_entries

        report.repaired, report.marked_failed = repair_entries(archive, report.corrupt, decode_options.get("model"))
    if archive.mode != "r":
        archive._record_verify(report.as_record())
    return report


def _check(archive: Archive, sample: int | None, **decode_options: Any) -> VerifyReport:
    """Read every entry, check the ok ones, decode ``sample`` of them."""
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
