"""PNG crops of the images an evaluation decoded, for the HTML report (:mod:`.html_report`).

Each row's decode leaves its central square (at most :data:`CROP_SIDE` px a side, in the image's own
mode) in ``OUT/crops/<image>/<point>/<codec>.png``, and the original's in ``OUT/crops/<image>/original.png``.
They are written when the row is computed, so a resumed run keeps the crops of its earlier rows.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image

CROP_SIDE = 192
FOLDER = "crops"


def safe_name(name: str) -> str:
    """``name`` with every run of characters other than letters, digits, '.', '_' and '-' made one '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "_"


def original_path(out: Path, image: str) -> Path:
    """Where the crop of ``image``'s original lies below the results folder ``out``."""
    return out / FOLDER / safe_name(image) / "original.png"


def crop_path(out: Path, image: str, point: str, codec: str) -> Path:
    """Where the crop of ``image`` coded by ``codec`` at ``point`` lies below ``out``."""
    return out / FOLDER / safe_name(image) / safe_name(point) / f"{safe_name(codec)}.png"


def center_square(image: Image.Image, side: int = CROP_SIDE) -> Image.Image:
    """The central ``side`` x ``side`` square of ``image`` (each side capped at the image's)."""
    width, height = min(side, image.width), min(side, image.height)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def save_crop(image: Image.Image, path: Path) -> Path:
    """Write the central square of ``image`` to ``path`` as PNG (temporary file, then rename)."""
    buffer = io.BytesIO()
    center_square(image).save(buffer, format="PNG", optimize=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(buffer.getvalue())
    temporary.replace(path)
    return path
