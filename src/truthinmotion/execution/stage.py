"""Run one per-video stage over many videos: resumable, parallel, with progress and an error log.

A stage is a function ``fn(job) -> dict`` that writes its own artifact atomically and raises
:class:`~truthinmotion.core.errors.StageError` for a video it cannot process. Workers are separate
processes (``spawn``, so no forked OpenMP state), or Ray actors (:mod:`.engine`), that build
their models once in ``init``.
Failures become rows of ``errors.csv``; every other video is still processed, and an interrupted
run keeps what finished.

Interrupts: workers ignore SIGINT (the terminal sends it to the whole process group) and turn
SIGTERM into ``KeyboardInterrupt``, so a worker that is ended cleans up its temporary file. The
main process answers Ctrl-C (or SIGTERM, see :func:`sigterm_as_interrupt`) by terminating the
workers at once: no wait for the videos in flight, which a re-run does again.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from tqdm.auto import tqdm

from ..core.errors import ConfigError
from .engine import LOCAL, Engine
from ..core.io import ErrorLog
from ..core.errors import StageError
from .workers import InitFailed, _call_packed, call, forget_worker_state, start_worker

__all__ = ["StageReport", "run_stage"]

log = logging.getLogger(__name__)

@dataclass
class StageReport:
    """What one run of a stage did."""

    stage: str
    total: int  # videos selected for this stage
    skipped: int  # already done before this run
    processed: int  # finished now
    failed: dict[str, str] = field(default_factory=dict)  # video_id -> "status: reason"
    seconds: float = 0.0
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # video_id -> worker stats

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        text = (
            f"{self.stage}: {self.processed} processed, {self.skipped} already done, "
            f"{len(self.failed)} failed of {self.total} in {self.seconds:.1f}s"
        )
        for vid, reason in sorted(self.failed.items()):
            text += f"\n  {vid}: {reason}"
        return text


def _local_results(jobs: Sequence[tuple], fn: Callable, init: Callable, init_args: tuple, workers: int) -> Iterator[tuple]:
    if workers <= 1 or len(jobs) <= 1:
        state = init(*init_args)
        for job in jobs:
            yield call(fn, state, job)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = mp.get_context("spawn").Pool(min(workers, len(jobs)), start_worker, (init, init_args, threads))
    try:
        yield from pool.imap_unordered(_call_packed, [(fn, job) for job in jobs])
        pool.close()
    except BaseException:
        pool.terminate()  # at once: a second Ctrl-C must never be needed, nor hang
        raise
    finally:
        pool.join()


def _ray_results(jobs: Sequence[tuple], fn: Callable, init: Callable, init_args: tuple, workers: int,
                 engine: Engine, gpus: float) -> Iterator[tuple]:
    from .engine import StageActor, ray_map, ray_session

    with ray_session(engine) as ray:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = max(1, min(workers, len(jobs)))
        threads = max(1, cpus // actors)
        options = dict(actors=actors, batch_size=1, num_cpus=1, num_gpus=gpus)
        rows = [{"job": json.dumps(list(job))} for job in jobs]
        for row in ray_map(rows, [(StageActor, (init, init_args, fn, threads), options)], engine):
            yield tuple(json.loads(str(row["result"])))


def run_stage(
    stage: str,
    jobs: Sequence[tuple],
    fn: Callable[[Any, tuple], dict],
    *,
    init: Callable[..., Any],
    init_args: tuple = (),
    workers: int = 1,
    errors: ErrorLog,
    skipped: int = 0,
    progress: bool = True,
    engine: Engine = LOCAL,
    gpus: float = 0.0,
) -> StageReport:
    """Run ``fn(state, job)`` for every job (``job[0]`` is the video id).

    ``init(*init_args)`` builds the per-process state (models) once per worker: ``workers``
    processes here (``workers <= 1`` runs in this process), or ``workers`` Ray actors with
    ``gpus`` GPUs each (see :mod:`.engine`). ``errors.csv`` is updated at the end, also after an
    interruption. A worker that cannot build its state stops the stage with a ConfigError.
    """
    report = StageReport(stage=stage, total=len(jobs) + skipped, skipped=skipped, processed=0)
    start = time.perf_counter()
    failures: dict[str, StageError] = {}
    attempted: set[str] = set()

    def record(video_id: str, stats: dict | None, status: str | None, reason: str | None) -> None:
        attempted.add(video_id)
        if status is None:
            report.processed += 1
            report.stats[video_id] = stats or {}
        else:
            failures[video_id] = StageError(status, reason or "")
            report.failed[video_id] = f"{status}: {reason}"
            log.warning("%s failed on %s: %s: %s", stage, video_id, status, reason)

    bar = tqdm(total=len(jobs), desc=stage, unit="video", disable=not progress or not jobs)
    if engine.kind == "ray":
        results = _ray_results(jobs, fn, init, init_args, workers, engine, gpus)
    else:
        results = _local_results(jobs, fn, init, init_args, workers)
    try:
        for result in results:
            if result[2] == InitFailed.STATUS:
                raise ConfigError(f"{stage}: a worker could not start: {result[3]}")
            record(*result)
            bar.update(1)
    finally:
        results.close()  # stops the workers at once when the loop ended early
        bar.close()
        forget_worker_state()
        errors.update(stage, attempted, failures)
        report.seconds = time.perf_counter() - start
    return report
