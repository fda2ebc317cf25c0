"""Training photos and reproducible batches of random crops.

Photos are kept as uint8 tensors (the 30 Unsplash photos at 1536 px would take 0.6 GB as float32);
crops are converted to [-1, 1] floats when a batch is drawn. Batch ``step`` is a pure function of
(seed, step), so a stopped run that resumes draws exactly the batches a single long run would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_photos(*folders: Path) -> list[torch.Tensor]:
    """Every PNG/JPEG directly in ``folders`` (sorted by name within each) as uint8 tensors (3, H, W)."""
    photos = []
    for folder in folders:
        for path in sorted(Path(folder).iterdir()):
            if path.suffix.lower() in PHOTO_SUFFIXES:
                with Image.open(path) as image:
                    array = np.asarray(image.convert("RGB"))
                photos.append(torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous())
    if not photos:
        raise SystemExit(f"No training photos (PNG or JPEG) in {', '.join(str(f) for f in folders)}")
    return photos


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1]."""
    return pixels.to(torch.float32) / 127.5 - 1.0


def random_crops(photos: list[torch.Tensor], seed: int, step: int, size: int, crop: int) -> torch.Tensor:
    """Batch ``step``: ``size`` random ``crop`` x ``crop`` crops (float, [-1, 1]) with random horizontal flips,
    a pure function of (seed, step). Photos smaller than ``crop`` are refused."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    crops = []
    for _ in range(size):
        photo = photos[int(torch.randint(len(photos), (1,), generator=gen))]
        if min(photo.shape[1:]) < crop:
            raise SystemExit(f"A training photo of {photo.shape[2]}x{photo.shape[1]} is smaller than the {crop} px crop")
        top = int(torch.randint(photo.shape[1] - crop + 1, (1,), generator=gen))
        left = int(torch.randint(photo.shape[2] - crop + 1, (1,), generator=gen))
        piece = to_unit_range(photo[:, top : top + crop, left : left + crop])
        crops.append(piece.flip(-1) if bool(torch.randint(2, (1,), generator=gen)) else piece)
    return torch.stack(crops)
