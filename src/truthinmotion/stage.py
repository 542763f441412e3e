"""Run one per-video stage over many videos: resumable, parallel, with progress and an error log.

A stage is a function ``fn(job) -> dict`` that writes its own artifact atomically and raises
:class:`~truthinmotion.io.StageError` for a video it cannot process. Workers are separate
processes (``spawn``, so no forked OpenMP state) that build their models once in ``init``.
Failures become rows of ``errors.csv``; every other video is still processed, and an interrupted
run keeps what finished.

Interrupts: workers ignore SIGINT (the terminal sends it to the whole process group) and turn
SIGTERM into ``KeyboardInterrupt``, so a worker that is ended cleans up its temporary file. The
main process answers Ctrl-C (or SIGTERM, see :func:`sigterm_as_interrupt`) by terminating the
workers at once: no wait for the videos in flight, which a re-run does again.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from .config import ConfigError
from .io import ErrorLog, StageError

__all__ = ["StageReport", "run_stage", "sigterm_as_interrupt"]

log = logging.getLogger(__name__)

_STATE: dict[str, Any] = {}


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


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def sigterm_as_interrupt() -> None:
    """Handle SIGTERM (``kill``, a scheduler, a container stop) as Ctrl-C: finally-blocks run,
    temporary files are removed, finished work is kept."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


def _init_worker(init: Callable[..., Any], args: tuple, threads: int) -> None:
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sigterm_as_interrupt()
    torch.set_num_threads(threads)
    try:
        _STATE["state"] = init(*args)
    except KeyboardInterrupt:  # terminated while starting: nothing to clean up, nothing to print
        os._exit(130)
    except Exception as err:  # noqa: BLE001 - raised in a pool initializer, the pool would respawn
        _STATE["init_error"] = err  # the worker forever; the first job reports it instead


def _call_packed(args: tuple) -> tuple[str, dict | None, str | None, str | None]:
    return _call(*args)


class _InitFailed(Exception):
    """A worker could not build its state: a problem of the settings, not of one video."""


def _call(fn: Callable[..., dict], job: Any) -> tuple[str, dict | None, str | None, str | None]:
    video_id = job[0]
    if "init_error" in _STATE:
        err = _STATE["init_error"]
        return video_id, None, _InitFailed.__name__, f"{type(err).__name__}: {err}"
    try:
        return video_id, fn(_STATE["state"], job), None, None
    except StageError as err:
        return video_id, None, err.status, err.reason
    except Exception as err:  # noqa: BLE001 - one bad video must not stop the batch
        log.debug("unexpected failure on %s:\n%s", video_id, traceback.format_exc())
        return video_id, None, "error", f"{type(err).__name__}: {err}"


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
) -> StageReport:
    """Run ``fn(state, job)`` for every job (``job[0]`` is the video id).

    ``init(*init_args)`` builds the per-process state (models) once per worker; ``workers <= 1``
    runs in this process. ``errors.csv`` is updated at the end, also after an interruption.
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
    try:
        if workers <= 1 or len(jobs) <= 1:
            _STATE["state"] = init(*init_args)
            for job in jobs:
                record(*_call(fn, job))
                bar.update(1)
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            pool = mp.get_context("spawn").Pool(min(workers, len(jobs)), _init_worker, (init, init_args, threads))
            try:
                for result in pool.imap_unordered(_call_packed, [(fn, job) for job in jobs]):
                    if result[2] == _InitFailed.__name__:
                        raise ConfigError(f"{stage}: a worker could not start: {result[3]}")
                    record(*result)
                    bar.update(1)
                pool.close()
            except BaseException:
                pool.terminate()  # at once: a second Ctrl-C must never be needed, nor hang
                raise
            finally:
                pool.join()
    finally:
        bar.close()
        _STATE.pop("state", None)
        errors.update(stage, attempted, failures)
        report.seconds = time.perf_counter() - start
    return report
