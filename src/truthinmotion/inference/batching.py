"""Scoring many videos: CPU workers feeding a model stage that scores several videos per batch,
on this machine or on Ray, and a JSON-lines log of verdicts that a re-run resumes from.

Per video the CPU stages (decoding, faces, flow) and the model stages (depth, detector) take
comparable time on a CPU; on a GPU the models are fast and starve on one video's few dozen
pictures. So with ``workers`` > 1 (or on Ray) the CPU stages run in worker processes (actors)
and the model stage in one place (the main process, or one actor per ``gpus``), scoring the
prepared videos together: depth over all their crops, the detector ``batch_size`` pictures at a
time. Verdicts come out as videos finish. With ``--report``, pages need each video's own
gradients, so the model stage then takes videos one at a time.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ..core.errors import ConfigError
from ..execution.engine import LOCAL, Engine
from ..execution.workers import InitFailed, start_worker, worker_state

__all__ = ["stream_verdicts"]

log = logging.getLogger(__name__)

def _preparer(run_dir: str) -> Any:
    from .scorer import Preparer

    return Preparer.from_run(run_dir, "cpu")


def _prepare(path: str) -> Any:
    """In a worker started by :func:`..execution.workers.start_worker` with :func:`_preparer`."""
    from .scorer import Prepared

    preparer = worker_state()
    if isinstance(preparer, InitFailed):
        return Prepared(path, InitFailed.STATUS, preparer.reason)
    return preparer(path)


def _started(prepared: Iterable[Any]) -> Iterator[Any]:
    """The prepared videos, or a ConfigError when the workers could not build their models."""
    for item in prepared:
        if item.status == InitFailed.STATUS:
            raise ConfigError(f"detect: a worker could not start: {item.reason}")
        yield item


def _groups(prepared: Iterable[Any], batch_size: int, alone: bool) -> Iterator[list[Any]]:
    """Prepared videos in groups of about ``batch_size`` pictures (one by one when ``alone``)."""
    group, points = [], 0
    for item in prepared:
        group.append(item)
        points += item.points
        if alone or points >= batch_size:
            yield group
            group, points = [], 0
    if group:
        yield group


def stream_verdicts(
    paths: Sequence[Path], run_dir: str | Path, *, device: str = "cpu", aggregation: str = "mean",
    workers: int = 1, batch_size: int = 64, evidence: int = 0, pages: dict[str, str] | None = None,
    engine: Engine = LOCAL, runtime: str = "auto", early_stop: float | None = None,
    depth_precision: str | None = None,
) -> Iterator[tuple[Any, Any]]:
    """(verdict, evidence or None) of every video, as they finish (in input order locally; in
    finishing order on Ray). On Ray the model actor writes the evidence pages itself, to
    ``pages`` (video -> file, on storage every machine sees), and yields no evidence."""
    if not paths:  # every video already has a verdict (a re-run): no models, no workers
        return
    if engine.kind == "ray":
        yield from _ray_verdicts(paths, run_dir, device, aggregation, workers, batch_size, evidence, pages, engine,
                                 (runtime, early_stop, depth_precision))
        return
    from .scorer import Scorer

    if workers <= 1:
        scorer = Scorer(run_dir, device, aggregation, batch_size, runtime=runtime, early_stop=early_stop,
                        depth_precision=depth_precision)
        for group in _groups((scorer.prepare(p) for p in paths), batch_size, alone=evidence > 0):
            yield from scorer.finish(group, evidence)
        return
    scorer = Scorer(run_dir, device, aggregation, batch_size, prepare=False, runtime=runtime, early_stop=early_stop,
                    depth_precision=depth_precision)
    threads = max(1, (os.cpu_count() or 1) // (workers + 1))
    pool = mp.get_context("spawn").Pool(min(workers, len(paths)), start_worker, (_preparer, (str(run_dir),), threads))
    try:
        prepared = _started(pool.imap(_prepare, [str(p) for p in paths]))
        for group in _groups(prepared, batch_size, alone=evidence > 0):
            yield from scorer.finish(group, evidence)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


class _PrepareActor:
    def __init__(self, run_dir: str, threads: int):
        import torch

        from .scorer import Preparer

        torch.set_num_threads(threads)
        self.preparer = Preparer.from_run(run_dir, "cpu")

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[bytes]]:
        import pickle

        return {"prepared": [pickle.dumps(self.preparer(str(p))) for p in batch["path"]]}


class _ModelActor:
    def __init__(self, run_dir: str, device: str, aggregation: str, batch_size: int, evidence: int,
                 pages: dict[str, str] | None, options: tuple[str, float | None, str | None]):
        from .scorer import Scorer

        runtime, early_stop, depth_precision = options
        self.scorer = Scorer(run_dir, device, aggregation, batch_size, prepare=False, runtime=runtime,
                             early_stop=early_stop, depth_precision=depth_precision)
        self.evidence, self.pages = evidence, pages

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        import pickle

        items = [pickle.loads(b) for b in batch["prepared"]]
        groups = [[p] for p in items] if self.evidence else [items]
        out = []
        for group in groups:
            for verdict, found in self.scorer.finish(group, self.evidence):
                if self.pages:  # written here, where the evidence is
                    from ..reports.page import write_report

                    write_report(verdict, found, self.scorer.model_info, Path(self.pages[verdict.video]))
                out.append(json.dumps(asdict(verdict)))
        return {"result": out}


def _ray_verdicts(paths, run_dir, device, aggregation, workers, batch_size, evidence, pages, engine, options):
    from .verdict import Verdict
    from ..models.detector import read_record
    from ..execution.engine import ray_map, ray_session

    with ray_session(engine) as ray:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        on_gpu = device.startswith("cuda")
        # The model actor takes a CPU of its own on a CPU-only cluster (it computes there), none
        # beside its GPU; the CPU actors get the rest, so every actor can be placed.
        model_cpus = 0 if on_gpu else 1
        actors = max(1, min(workers, len(paths), cpus - model_cpus))
        threads = max(1, cpus // (actors + model_cpus))
        per_video = read_record(run_dir).faces.num_points  # points a video gives
        stages = [
            (_PrepareActor, (str(run_dir), threads), dict(actors=actors, batch_size=1, num_cpus=1)),
            (_ModelActor, (str(run_dir), device, aggregation, batch_size, evidence, pages, options),
             dict(actors=1, batch_size=max(1, batch_size // per_video), num_cpus=model_cpus,
                  num_gpus=engine.gpus if on_gpu else 0.0)),
        ]
        for row in ray_map([{"path": str(p)} for p in paths], stages, engine):
            yield Verdict(**json.loads(str(row["result"]))), None
