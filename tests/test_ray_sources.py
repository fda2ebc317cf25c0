"""Listing bulk-job sources on the driver (no Ray needed): folders, globs, tar and zip members, parquet rows,
in a deterministic order with keys relative to the source; reading items back as workers do."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

import ray_jobs
from ray_jobs.sources import source_kind

from .ray_helpers import IMAGE_KEYS, tree_files, write_tar, write_tree

SAMPLE = Path(__file__).resolve().parents[1] / "ray_jobs" / "sample"


def test_the_shipped_sample_folder_lists_nested_keys_and_leaves_out_its_notes() -> None:
    listing = ray_jobs.list_source(str(SAMPLE))
    assert len(listing.keys) == 10 and listing.keys == sorted(listing.keys)
    assert "nature/birds/kaka.png" in listing.keys and "SOURCE.md" not in listing.keys
    assert sum(path.stat().st_size for path in SAMPLE.rglob("*")) < 300_000


def test_folders_globs_and_archives_list_the_same_keys_and_read_the_same_bytes(tmp_path) -> None:
    files = tree_files()
    folder = write_tree(tmp_path / "tree", files)
    tar = write_tar(tmp_path / "tree.tar", files)
    with zipfile.ZipFile(tmp_path / "tree.zip", "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    for source in (str(folder), f"file://{folder}", str(tar), str(tmp_path / "tree.zip"), f"tar://::{tar}"):
        listing = ray_jobs.list_source(source)
        assert listing.keys == IMAGE_KEYS, source
        assert listing.reader.read(listing.items) == [files[key] for key in IMAGE_KEYS], source
    assert ray_jobs.list_source(f"{folder}/crops/*.png").keys == [f"c{n}.png" for n in range(4)]
    inside = ray_jobs.list_source(f"tar://a/b::{tar}")  # a folder inside the tar: keys relative to it
    assert inside.keys == ["alpha.png", "odd.png"]
    assert inside.reader.read(inside.items) == [files["a/b/alpha.png"], files["a/b/odd.png"]]
    assert ray_jobs.list_source(f"{folder}/a/b/odd.png").keys == ["odd.png"]


def test_missing_items_are_errors_of_their_own() -> None:
    listing = ray_jobs.list_source(str(SAMPLE))
    gone = ray_jobs.SourceItem("gone.png", str(SAMPLE / "gone.png"))
    results = listing.reader.read([gone, listing.items[1]])
    assert isinstance(results[0], FileNotFoundError) and isinstance(results[1], bytes)


def test_kinds_and_refusals(tmp_path) -> None:
    assert [source_kind(url) for url in ("a/", "s3://b/x.TAR.GZ", "x.zip", "zip://::s3://b/x", "t.parquet")] == [
        "files", "tar", "zip", "zip", "parquet"
    ]
    with pytest.raises(ray_jobs.SourceError, match="No such source"):
        ray_jobs.list_source(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    with pytest.raises(ray_jobs.SourceError, match="holds no images"):
        ray_jobs.list_source(str(tmp_path / "empty"))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"key": ["a", "a"], "image": [b"x", b"y"]}), tmp_path / "twice.parquet")
    with pytest.raises(ray_jobs.SourceError, match=r"more than once \(e.g. \['a'\]\)"):
        ray_jobs.list_source(str(tmp_path / "twice.parquet"))
    pq.write_table(pa.table({"key": ["a"], "image": [1]}), tmp_path / "ints.parquet")
    with pytest.raises(ray_jobs.SourceError, match="holds int64, not image bytes"):
        ray_jobs.list_source(str(tmp_path / "ints.parquet"))
