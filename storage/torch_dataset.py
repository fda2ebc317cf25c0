"""An archive as a map-style PyTorch dataset, for training loops (``torch.utils.data.DataLoader``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    from .archive_reader import ArchiveReader


class ArchiveDataset(torch.utils.data.Dataset):
    """The ok entries of an archive, decoded on access.

    Item ``i`` is ``transform(image)`` when a transform is given, else a ``uint8`` tensor of shape
    (C, H, W). The dataset pickles to its URL and storage options, and every process (each
    DataLoader worker) opens the archive itself on first use. ``keys`` lists the entries in order.
    """

    def __init__(
        self, archive: ArchiveReader, transform: Callable[[Image.Image], Any] | None = None, **decode_options: Any
    ) -> None:
        self.target = archive.target
        self.storage_options = archive.storage_options
        self.transform = transform
        self.decode_options = decode_options
        rows = [row for row in archive.entries() if row["status"] == "ok"]
        self.keys = [row["key"] for row in rows]
        self._slots = [row["index"] for row in rows]
        self._archive: ArchiveReader | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self._slots)

    def _open(self) -> ArchiveReader:
        from .archive import open_archive

        if self._archive is None or self._pid != os.getpid():
            self._archive = open_archive(self.target, "r", self.storage_options)
            self._pid = os.getpid()
        return self._archive

    def __getitem__(self, index: int) -> Any:
        image = self._open().decode(self._slots[index], **self.decode_options)
        if self.transform is not None:
            return self.transform(image)
        pixels = np.asarray(image)
        return torch.from_numpy(pixels.reshape(*pixels.shape[:2], -1).copy()).permute(2, 0, 1)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_archive": None, "_pid": -1}
