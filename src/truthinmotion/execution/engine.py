"""Where per-video work runs: this machine's processes (``local``) or a Ray cluster (``ray``).

With Ray, the videos are a Ray Data dataset and the work is ``map_batches`` over it, one video
per call, by actors that build their models once (one MTCNN, depth model or detector per actor;
``gpus`` per actor on CUDA, fractions allowed, so several actors can share a GPU). Execution is
streaming: results come back as videos finish, and Ray bounds what is in flight, so memory
does not grow with the dataset. Every guarantee of the local stages holds because the work is
the same function: each video writes its own artifact atomically on storage every worker sees,
failures come back as statuses for ``errors.csv``, and a re-run skips finished videos.

``--ray-address`` joins a running cluster (``ray start --head`` on one machine, ``ray start
--address HEAD:6379`` on the others); without it a Ray of this machine's CPUs is started for the
command and stopped after it. Ray is an optional dependency: ``pip install 'truthinmotion[ray]'``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from ..core.errors import ConfigError

__all__ = ["ENGINES", "LOCAL", "Engine", "StageActor", "ray_map", "ray_session", "require_ray"]

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Engine:
    kind: str = "local"  # local | ray
    address: str | None = None  # Ray: a running cluster ("auto", "HOST:6379"); None starts one here
    gpus: float = 1.0  # Ray on CUDA: GPUs per actor (0.5: two actors share a GPU)

    def __post_init__(self) -> None:
        if self.kind not in ENGINES:
            raise ConfigError(f"engine: {self.kind!r} not one of {', '.join(ENGINES)}")
        if self.gpus < 0:
            raise ConfigError("GPUs per Ray actor: 0 or more")


LOCAL = Engine()


def require_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is a separate part of the ray package
    except ImportError:
        raise ConfigError("--engine ray needs Ray (Ray Data): pip install 'truthinmotion[ray]'") from None
    return ray


@contextlib.contextmanager
def ray_session(engine: Engine) -> Iterator[Any]:
    """Ray, connected: to ``engine.address``, to a Ray already running in this process, or a
    local one started now (and stopped at the end)."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        if engine.address:
            ray.init(address=engine.address, **kwargs)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
        started = True
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the stage's own bar counts videos
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def ray_map(
    rows: Sequence[dict[str, Any]], stages: Sequence[tuple[type, tuple, dict[str, Any]]], engine: Engine,
) -> Iterator[dict[str, Any]]:
    """Stream ``rows`` through actor ``stages`` (class, constructor args, options: ``actors``, the
    pool's size, and ``map_batches``'s own such as ``batch_size``, ``num_cpus``, ``num_gpus``);
    yield output rows as they are ready. Call inside :func:`ray_session`."""
    import ray.data

    ds = ray.data.from_items(list(rows))
    for cls, args, options in stages:
        options = dict(options)
        pool = ray.data.ActorPoolStrategy(size=options.pop("actors"))
        ds = ds.map_batches(cls, fn_constructor_args=args, batch_format="numpy", compute=pool, **options)
    yield from ds.iter_rows()


class StageActor:
    """A Ray actor running one stage's ``fn(state, job)`` on a batch of jobs (JSON lists), with
    the state ``init(*init_args)`` builds once; the results are those of the local engine."""

    def __init__(self, init: Callable[..., Any], init_args: tuple, fn: Callable, threads: int):
        import torch

        from .workers import InitFailed

        torch.set_num_threads(threads)
        self.fn = fn
        try:
            self.state: Any = init(*init_args)
        except Exception as err:  # noqa: BLE001 - reported once per job, the driver stops the stage
            self.state = InitFailed(f"{type(err).__name__}: {err}")

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        from .workers import call

        return {"result": [json.dumps(call(self.fn, self.state, tuple(json.loads(str(job))))) for job in batch["job"]]}
