"""Joining or starting Ray, and how many workers of which kind a job gets.

A job joins a cluster only when told to (an address, or ``RAY_ADDRESS``); otherwise it starts its own
local instance, so that a cluster another program started on this machine (``ray start``) is never
joined by accident, nor the job taken down with it. That instance keeps Ray's default, token
authentication, without the warning Ray logs about that default on every start.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pillow_diffcodec.errors import InvalidParameterError

from .errors import ClusterError

# Ray's module that logs "Token authentication is enabled for this Ray cluster" when it starts an instance
TOKEN_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"


@dataclass(frozen=True)
class RaySession:
    """A connection to Ray made for one call: ``started`` is True when this call ran ``ray.init``."""

    started: bool
    seconds: float  # how long joining or starting took

    def close(self) -> None:
        """Disconnect (and stop a local instance) if this session started it; leave the caller's own alone."""
        if self.started:
            import ray

            ray.shutdown()


def connect(address: str | None = None) -> RaySession:
    """Use the Ray connection the caller already has; otherwise join ``address`` (or ``RAY_ADDRESS``),
    or with neither start a new local instance sized to this machine (never one found running)."""
    import ray

    _keep_arrow_fallback_quiet()
    if ray.is_initialized():
        return RaySession(started=False, seconds=0.0)
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # workers use this interpreter as it is
    address = address or os.environ.get("RAY_ADDRESS")
    start = time.perf_counter()
    try:
        with _quiet_token_notice():
            ray.init(address=address or "local", include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ClusterError(f"Cannot join or start {where}: {exc}") from exc
    return RaySession(started=True, seconds=time.perf_counter() - start)


@contextlib.contextmanager
def _quiet_token_notice() -> Iterator[None]:
    """Hide the warnings of Ray's token set-up module (that token authentication is on by default) while
    Ray starts; its errors still show."""
    logger = logging.getLogger(TOKEN_SETUP_LOGGER)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _keep_arrow_fallback_quiet() -> None:
    """Choose Ray Data's default explicitly: images of different shapes in one block (L next to RGB) are
    stored as pickled objects. Left unset, Ray Data does the same but logs "Failed to convert column
    'image' into pyarrow array ... falling back" from a worker of every dataset that reads an archive."""
    from ray.data import DataContext

    context = DataContext.get_current()
    if context.enable_fallback_to_arrow_object_ext_type is None:
        context.enable_fallback_to_arrow_object_ext_type = True


@dataclass(frozen=True)
class WorkerPlan:
    """How many encoder (or decoder) actors to run and what each asks Ray for."""

    count: int
    num_cpus: float
    num_gpus: float

    @property
    def device(self) -> str:
        """The torch device inside an actor: Ray shows each GPU actor its own GPUs as cuda:0..."""
        return "cuda" if self.num_gpus > 0 else "cpu"

    def actor_options(self) -> dict[str, Any]:
        """Options for ``ActorClass.options(...)``: resources, and no restarts (the driver retries shards)."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "max_restarts": 0}

    def room(self) -> int:
        """How many more actors of this kind the cluster can place right now."""
        import ray

        free = ray.available_resources()
        fits = math.floor(free.get("CPU", 0.0) / self.num_cpus) if self.num_cpus else math.inf
        if self.num_gpus:
            fits = min(fits, math.floor(free.get("GPU", 0.0) / self.num_gpus))
        return int(min(fits, self.count))


def plan_workers(num_gpus: float | None = None, num_workers: int | None = None) -> WorkerPlan:
    """One actor per CPU, or with GPUs one per ``num_gpus`` GPUs (default 1 each when the cluster has GPUs).

    ``num_gpus=0`` keeps the work on CPUs; fractions pack several actors onto one GPU. ``num_workers``
    caps the number of actors (it may not exceed what the cluster holds).
    """
    import ray

    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    if num_gpus is not None and (isinstance(num_gpus, bool) or not 0 <= num_gpus <= 64):
        raise InvalidParameterError(f"Expected num_gpus (per worker) in [0, 64], got {num_gpus!r}")
    per_worker = (1.0 if gpus else 0.0) if num_gpus is None else float(num_gpus)
    if per_worker:
        if gpus < per_worker:
            raise ClusterError(f"Each worker asks for {per_worker:g} GPU(s), but the Ray cluster has {gpus:g}")
        capacity = min(math.floor(gpus / per_worker), math.floor(cpus)) if cpus >= 1 else math.floor(gpus / per_worker)
        cpus_each = 1.0 if cpus >= 1 else 0.0
    else:
        capacity, cpus_each = math.floor(cpus), 1.0
    if capacity < 1:
        raise ClusterError(f"The Ray cluster has no room for one worker (it has {cpus:g} CPUs, {gpus:g} GPUs)")
    if num_workers is not None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise InvalidParameterError(f"Expected num_workers to be a positive int, got {num_workers!r}")
        if num_workers > capacity:
            raise ClusterError(
                f"num_workers={num_workers}, but the Ray cluster holds {capacity} worker(s) of "
                f"{cpus_each:g} CPU and {per_worker:g} GPU each ({cpus:g} CPUs, {gpus:g} GPUs)"
            )
        capacity = num_workers
    return WorkerPlan(count=capacity, num_cpus=cpus_each, num_gpus=per_worker)
