"""Worker processes and actors: how they start (signals, threads, state built once), what a
worker that cannot build its models reports, and one job run with its failure as a status."""

from __future__ import annotations

import logging
import os
import signal
import traceback
from typing import Any, Callable


from ..core.errors import StageError

__all__ = ["InitFailed", "call", "forget_worker_state", "sigterm_as_interrupt", "start_worker", "worker_state"]

log = logging.getLogger(__name__)


_STATE: dict[str, Any] = {}


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def sigterm_as_interrupt() -> None:
    """Handle SIGTERM (``kill``, a scheduler, a container stop) as Ctrl-C: finally-blocks run,
    temporary files are removed, finished work is kept."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


class InitFailed:
    """The state of a worker whose models could not be built: a problem of the settings, not of
    one video. Every job it gets reports it, and the stage stops."""

    STATUS = "init_failed"

    def __init__(self, reason: str):
        self.reason = reason


def start_worker(init: Callable[..., Any], args: tuple, threads: int) -> None:
    """A pool initializer: signals as a worker needs them, ``threads`` torch threads, and the state
    ``init(*args)`` (see :func:`worker_state`); one that fails becomes :class:`InitFailed`."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sigterm_as_interrupt()
    torch.set_num_threads(threads)
    try:
        _STATE["state"] = init(*args)
    except KeyboardInterrupt:  # terminated while starting: nothing to clean up, nothing to print
        os._exit(130)
    except Exception as err:  # noqa: BLE001 - raised in a pool initializer, the pool would respawn
        _STATE["state"] = InitFailed(f"{type(err).__name__}: {err}")  # the worker forever


def worker_state() -> Any:
    """What :func:`start_worker` built in this worker process."""
    return _STATE["state"]


def _call_packed(args: tuple) -> tuple[str, dict | None, str | None, str | None]:
    fn, job = args
    return call(fn, worker_state(), job)


def call(fn: Callable[..., dict], state: Any, job: Any) -> tuple[str, dict | None, str | None, str | None]:
    """``fn(state, job)`` as (video id, stats, None, None), or (video id, None, status, reason)."""
    video_id = job[0]
    if isinstance(state, InitFailed):
        return video_id, None, InitFailed.STATUS, state.reason
    try:
        return video_id, fn(state, job), None, None
    except StageError as err:
        return video_id, None, err.status, err.reason
    except Exception as err:  # noqa: BLE001 - one bad video must not stop the batch
        log.debug("unexpected failure on %s:\n%s", video_id, traceback.format_exc())
        return video_id, None, "error", f"{type(err).__name__}: {err}"


def forget_worker_state() -> None:
    """Drop what :func:`start_worker` (or a stage run in this process) kept."""
    _STATE.pop("state", None)
