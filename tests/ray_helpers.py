"""Shared pieces of the Ray job tests: a local Ray instance per module and small image trees with bad items."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

DATA = Path(__file__).parent / "data"
RAY_OPTIONS = {"include_dashboard": False, "object_store_memory": 200 * 1024**2}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[str]:
    """A real local Ray instance with 2 CPUs for the whole module; yields its address for subprocesses."""
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import ray
    ray.init(num_cpus=2, **RAY_OPTIONS)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def photo() -> Image.Image:
    with Image.open(DATA / "kodim23_crop.png") as image:
        return image.convert("RGB")


def tree_files() -> dict[str, bytes]:
    """Relative path -> file bytes: RGB crops, a grayscale, an RGBA and an odd-sized image in nested
    folders, a corrupt PNG, and a text file (not an image, so not listed)."""
    source = photo()

    def png(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    files = {f"crops/c{number}.png": png(source.crop((4 * number, 0, 4 * number + 16, 16))) for number in range(4)}
    files["a/gray.png"] = png(source.crop((20, 20, 36, 36)).convert("L"))
    files["a/b/alpha.png"] = png(source.crop((30, 10, 46, 26)).convert("RGBA"))
    files["a/b/odd.png"] = png(source.crop((3, 5, 20, 18)))  # 17 x 13
    files["a/broken.png"] = png(source.crop((0, 0, 16, 16)))[:60]  # truncated in its pixel data
    files["notes.txt"] = b"not an image"
    return files


IMAGE_KEYS = sorted(key for key in tree_files() if key.endswith(".png"))
GOOD_KEYS = [key for key in IMAGE_KEYS if key != "a/broken.png"]


def write_tree(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path
