"""The result table of an evaluation: one row per (image, codec, rate point), per-point means, and the
journal (``rows.jsonl``) that makes runs resumable.

A row's key is ``(image, codec, model, point)``; ``codec`` is the series shown in tables and plots (the
codec's name, ``"DDCM:builtin-latent"`` when one run codes a codec with several models, or a baseline's
name), ``model`` the model reference ("" for baselines), and ``point`` the diffusion codecs' rate point
(``"bpp=0.05"`` or ``"quality=40"``). The baselines' rows at a point were coded once per image at the
median rate of the diffusion files of that image and point.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JOURNAL = "rows.jsonl"

Key = tuple[str, str, str, str]
METRICS = ("vif", "gmsd", "haarpsi", "lpips", "dists")  # beyond PSNR/MS-SSIM; None where not computed


@dataclass(frozen=True)
class Row:
    """One image coded by one codec at one rate point, with its measurements."""

    image: str
    codec: str
    point: str
    target_bpp: (
        float | None
    )  # diffusion: the requested bpp (None for a quality point); baselines: the diffusion file's bpp
    bpp: float  # whole file, headers included
    psnr: float
    ms_ssim: float
    encode_s: float
    decode_s: float
    setting: str  # the codec parameters chosen (JSON) or the baseline's quality
    reached: bool = True  # False: a baseline's lowest quality was still above the target
    width: int = 0
    height: int = 0
    lpips: float | None = None
    # alternating-pattern energy over the original's, per axis (metrics.stripe_ratios); None in old journals
    stripes_columns: float | None = None
    stripes_rows: float | None = None
    model: str = ""  # the diffusion codec's model reference; "" for baselines and old journals
    vif: float | None = None  # metrics.vif (VIF-p): 1 = identical
    gmsd: float | None = None  # metrics.gmsd: 0 = identical
    haarpsi: float | None = None  # metrics.haarpsi: 1 = identical
    dists: float | None = None  # metrics.dists_distance, when its weights are here

    @property
    def key(self) -> Key:
        return (self.image, self.codec, self.model, self.point)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class Failure:
    """An image that could not be evaluated (unreadable, or a codec error), with the reason."""

    image: str
    message: str


@dataclass(frozen=True)
class PointSummary:
    """Means over the images of one codec at one rate point."""

    codec: str
    point: str
    images: int
    bpp: float
    psnr: float
    ms_ssim: float
    encode_s: float
    decode_s: float
    unreached: int  # baseline rows at their floor (target below the codec's lowest quality)
    lpips: float | None = None
    stripes_columns: float | None = None  # mean over the images that have it
    stripes_rows: float | None = None
    vif: float | None = None
    gmsd: float | None = None
    haarpsi: float | None = None
    dists: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return statistics.fmean(items) if items else math.nan


def _mean_of_known(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None (rows from older journals lack newer metrics); None if none is."""
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


@dataclass
class EvalTable:
    """Rows of an evaluation plus the images that failed and notes (e.g. skipped metrics)."""

    rows: list[Row] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    codecs: list[str] = field(default_factory=list)  # in display order: the diffusion codecs, then baselines
    points: list[str] = field(default_factory=list)  # in the order given

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def _order(self, values: Iterable[str], preferred: list[str]) -> list[str]:
        present = list(dict.fromkeys(values))
        return [v for v in preferred if v in present] + [v for v in present if v not in preferred]

    def codec_names(self) -> list[str]:
        return self._order((r.codec for r in self.rows), self.codecs)

    def point_names(self) -> list[str]:
        return self._order((r.point for r in self.rows), self.points)

    def summary(self) -> list[PointSummary]:
        """Means per (codec, point), in codec then point order; PSNR of identical images (inf) stays inf."""
        result = []
        for codec in self.codec_names():
            for point in self.point_names():
                group = [r for r in self.rows if r.codec == codec and r.point == point]
                if not group:
                    continue
                result.append(
                    PointSummary(
                        codec=codec,
                        point=point,
                        images=len(group),
                        bpp=_mean(r.bpp for r in group),
                        psnr=_mean(r.psnr for r in group),
                        ms_ssim=_mean(r.ms_ssim for r in group),
                        encode_s=_mean(r.encode_s for r in group),
                        decode_s=_mean(r.decode_s for r in group),
                        unreached=sum(not r.reached for r in group),
                        stripes_columns=_mean_of_known(r.stripes_columns for r in group),
                        stripes_rows=_mean_of_known(r.stripes_rows for r in group),
                        **{m: _mean_of_known(getattr(r, m) for r in group) for m in METRICS},
                    )
                )
        return result

    def curve(self, codec: str, metric: str = "psnr") -> tuple[list[float], list[float]]:
        """(mean bpp, mean metric) per point of ``codec``, sorted by rate (points without the metric left out)."""
        points = sorted(
            (s.bpp, getattr(s, metric)) for s in self.summary() if s.codec == codec and getattr(s, metric) is not None
        )
        return [p[0] for p in points], [p[1] for p in points]


def read_journal(folder: Path) -> dict[Key, Row]:
    """Rows already finished in ``folder`` (a torn last line from an interrupted run is ignored)."""
    path = folder / JOURNAL
    rows: dict[Key, Row] = {}
    if not path.is_file():
        return rows
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):  # torn tail: cut it so the next append starts on a fresh line
        text = text[: text.rfind("\n") + 1]
        path.write_text(text, encoding="utf-8")
    for line in text.splitlines():
        try:
            row = Row.from_dict(json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue
        rows[row.key] = row
    return rows


def append_journal(folder: Path, row: Row) -> None:
    """Append one finished row (flushed and synced, so an interrupted run loses at most the row in flight)."""
    import os

    with (folder / JOURNAL).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row.to_dict()) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
