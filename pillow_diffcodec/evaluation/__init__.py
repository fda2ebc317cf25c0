"""Rate-distortion evaluation of diffusion codecs against classical codecs (``diffcodec eval``).

    from pillow_diffcodec.evaluation import evaluate, write_report
    table = evaluate("photos/", codec="DDCM,CDC", model={"DDCM": "builtin-latent"}, bpp=[0.05, 0.1, 0.2],
                     baselines=["jpeg", "webp"], crop=256, out="results/")
    write_report(table, "results/")          # CSV/JSON per image and per point, BD-rates, RD plots, report.html
    print(format_summary(table))

Not imported by ``import pillow_diffcodec``; names load on first use, so the CLI can register the
``eval`` subcommand without importing torch, pytorch-msssim or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "evaluate": "runner",
    "contenders": "runner",
    "SUITES": "suites",
    "write_html": "html_report",
    "vif": "metrics",
    "gmsd": "metrics",
    "haarpsi": "metrics",
    "EvaluationError": "runner",
    "list_images": "runner",
    "load_results": "runner",
    "EvalTable": "table",
    "Row": "table",
    "PointSummary": "table",
    "Failure": "table",
    "write_report": "report",
    "format_summary": "report",
    "format_markdown": "report",
    "plot": "report",
    "bd_rate": "bdrate",
    "bd_rates": "bdrate",
    "psnr": "metrics",
    "ms_ssim": "metrics",
    "BASELINES": "baselines",
    "encode_at_bpp": "baselines",
}
__all__ = [
    "BASELINES",
    "SUITES",
    "EvalTable",
    "EvaluationError",
    "Failure",
    "PointSummary",
    "Row",
    "bd_rate",
    "bd_rates",
    "contenders",
    "encode_at_bpp",
    "evaluate",
    "format_markdown",
    "format_summary",
    "gmsd",
    "haarpsi",
    "list_images",
    "load_results",
    "ms_ssim",
    "plot",
    "psnr",
    "vif",
    "write_html",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
