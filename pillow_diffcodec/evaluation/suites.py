"""Ready-made evaluations for ``diffcodec eval --suite NAME``: which images, rates and codec settings.

- ``quick``: 64x64 centre crops of the first three sample images of a source checkout
  (``ray_jobs/sample``), quality presets 25 and 75, every registered codec with its default built-in
  model (PSC with a light setting, :data:`QUICK_PSC`: its default takes minutes per 64x64 file on a
  CPU), every installed baseline. A few minutes on two CPU cores; a smoke test of the whole pipeline and
  a first look at the report, not a benchmark.
- ``kodak``: the 24 Kodak images (768x512) uncropped at quality presets 0, 25, 50 and 75, every codec
  with its defaults. The folder is the DATASET given, else ``../shared/data/kodak`` when present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pillow_diffcodec.codecs import CODECS

from .runner import EvaluationError

SAMPLE = Path(__file__).resolve().parents[2] / "ray_jobs" / "sample"
KODAK_CANDIDATES = (Path("../shared/data/kodak"), Path(__file__).resolve().parents[3] / "shared" / "data" / "kodak")
QUICK_PSC = {"iterations": 2, "samples": 2, "rows": 1, "ddrm_steps": 2, "final_steps": 4, "final_sampler": "ddrm"}


@dataclass(frozen=True)
class Suite:
    """Settings of one suite; the command line overrides any of them."""

    name: str
    quality: tuple[float, ...]
    crop: int | None = None
    limit: int | None = None
    codec_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def codecs(self) -> list[str]:
        """Every registered codec (one whose default model does not load is skipped with a note)."""
        return [entry.name for entry in CODECS]

    def dataset(self, given: str | None) -> str:
        """The images: ``given``, or the suite's own folder; EvaluationError when there is none."""
        if given:
            if self.name == "kodak" and "://" not in given and not Path(given).is_dir():
                raise EvaluationError(f"No Kodak folder at {given}")
            return given
        candidates = (SAMPLE,) if self.name == "quick" else KODAK_CANDIDATES
        for candidate in candidates:
            if candidate.is_dir():
                return str(candidate)
        where = " or ".join(str(c) for c in candidates)
        raise EvaluationError(f"The {self.name} suite found no images at {where}; give the folder as DATASET")


SUITES = {
    "quick": Suite("quick", quality=(25.0, 75.0), crop=64, limit=3, codec_params={"PSC": QUICK_PSC}),
    "kodak": Suite("kodak", quality=(0.0, 25.0, 50.0, 75.0)),
}
