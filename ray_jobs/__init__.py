"""Ray bulk jobs: whole image datasets into zarr archives, and archives back out, on every worker of a cluster.

    import ray_jobs
    report = ray_jobs.bulk_compress("s3://bucket/photos/", "s3://bucket/photos.zarr", quality=40,
                                    storage_options=options)
    dataset = ray_jobs.read_archive("s3://bucket/photos.zarr", storage_options=options)   # a Ray Dataset
    ray_jobs.extract_archive("s3://bucket/photos.zarr", "restored/", storage_options=options)

The same jobs run from the command line as ``diffcodec bulk`` and ``diffcodec bulk-extract``.
Depends on :mod:`storage` and :mod:`pillow_diffcodec`; neither depends on this package.
"""

from __future__ import annotations

from .bulk import bulk_compress
from .errors import ClusterError, IncompleteJobError, SourceError
from .reading import extract_archive, read_archive
from .report import BulkReport, read_report
from .sources import Listing, SourceItem, list_source

__all__ = [
    "BulkReport",
    "ClusterError",
    "IncompleteJobError",
    "Listing",
    "SourceError",
    "SourceItem",
    "bulk_compress",
    "extract_archive",
    "list_source",
    "read_archive",
    "read_report",
]
