"""Bjontegaard delta rate (G. Bjontegaard, "Calculation of average PSNR differences between RD-curves",
VCEG-M33, 2001) through the maintained ``bjontegaard`` package (Herglotz et al., FAU; piecewise cubic
Hermite (pchip) interpolation of log-rate over quality, integrated on the overlapping quality range).

Negative values: the test codec needs that many percent fewer bits than the anchor for the same quality.
Curves are first reduced to points whose quality rises with rate (a point that costs more bits for no
better quality is not on the rate-distortion curve); a curve with fewer than two such points, or two
curves whose quality ranges do not overlap, give NaN.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence

from .table import EvalTable

ANCHOR = "JPEG"
BD_METRICS = ("psnr", "ms_ssim")


def monotone(rates: Sequence[float], qualities: Sequence[float]) -> tuple[list[float], list[float]]:
    """Points sorted by rate, keeping each only when its quality exceeds every cheaper point's (finite values)."""
    kept_r: list[float] = []
    kept_q: list[float] = []
    for rate, quality in sorted(zip(rates, qualities)):
        if not (math.isfinite(rate) and math.isfinite(quality)) or rate <= 0:
            continue
        if kept_q and quality <= kept_q[-1]:
            continue
        if kept_r and rate == kept_r[-1]:
            continue
        kept_r.append(rate)
        kept_q.append(quality)
    return kept_r, kept_q


def bd_rate(
    anchor_rates: Sequence[float],
    anchor_quality: Sequence[float],
    test_rates: Sequence[float],
    test_quality: Sequence[float],
) -> float:
    """BD-rate in percent of the test curve against the anchor curve (NaN when it cannot be computed)."""
    os.environ.setdefault("MPLBACKEND", "Agg")  # the bjontegaard package imports pyplot
    import bjontegaard

    ar, aq = monotone(anchor_rates, anchor_quality)
    tr, tq = monotone(test_rates, test_quality)
    if len(ar) < 2 or len(tr) < 2 or min(aq[-1], tq[-1]) <= max(aq[0], tq[0]):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = bjontegaard.bd_rate(ar, aq, tr, tq, method="pchip", require_matching_points=False, min_overlap=0)
    return float(value)


def bd_rates(table: EvalTable, anchor: str = ANCHOR) -> dict[str, dict[str, float]]:
    """BD-rate of every codec in ``table`` against ``anchor`` on the per-point mean curves, per metric."""
    if anchor not in table.codec_names():
        return {}
    result = {}
    for codec in table.codec_names():
        result[codec] = {
            metric: bd_rate(*table.curve(anchor, metric), *table.curve(codec, metric)) for metric in BD_METRICS
        }
    return result
