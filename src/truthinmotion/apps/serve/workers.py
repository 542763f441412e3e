"""The scoring threads of the service, their health, and the sweeps that keep the data
directory to what its jobs hold.

Each worker thread holds its models and scores one job at a time. A job's own failure (the
video, the model) fails that job and the worker goes on; a failure of the service around it
(the job store cannot be read or written) stops the worker: ``/healthz`` then says which and why,
and the job it held is failed rather than left ``running``. A janitor thread removes what
expired (``keep_hours`` after a job ended) and fails the jobs of stopped workers. At start,
files in ``uploads/`` and ``reports/`` that no job holds (left by a crash mid-upload or
mid-delete) are removed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .config import ServeConfig
from .metrics import Metrics
from .store import Jobs

log = logging.getLogger(__name__)


@dataclass
class Worker:
    name: str
    scorers: dict[str, Any]  # name -> this worker's Scorer of that detector
    thread: threading.Thread | None = None
    job: str | None = None  # the id of the job it is scoring
    stopped: str | None = None  # why its thread stopped, when it did


def _model_card(scorer: Any) -> str | None:
    """The model card (``README.md``) beside a detector's weights: an exported folder has one."""
    run = getattr(getattr(getattr(scorer, "model", None), "record", None), "provenance", None)
    card = Path(run.run) / "README.md" if run is not None and run.run else None
    return card.read_text() if card is not None and card.is_file() else None


class Service:
    """The jobs, the worker threads and the files of one data directory.

    ``scorers``: models already loaded: one per worker, of the one detector (named ``default``),
    or a mapping of detector names to one per worker each (default: loaded here from
    ``cfg.models``, after a preflight of every one). The first detector is the default of jobs.
    ``clock``: seconds, for job dates and expiry. ``after_claim(job)`` runs in the worker between
    claiming a job and scoring it (tests pause a worker there).
    """

    def __init__(self, cfg: ServeConfig, scorers: Sequence[Any] | None = None,
                 clock: Callable[[], float] = time.time):
        from ...backends.weights import check_folder
        from ...execution.preflight import preflight
        from ...inference.scorer import Scorer

        self.cfg, self.clock = cfg, clock
        if scorers is None:  # every detector resolves, or the service does not start
            preflight(models=[lambda n=n, r=r: check_folder(r, what=f"--model {n}") for n, r in cfg.models.items()])
        self.uploads, self.reports = cfg.data_dir / "uploads", cfg.data_dir / "reports"
        for folder in (self.uploads, self.reports):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)
        self.jobs = Jobs(cfg.data_dir / "jobs.sqlite", clock)
        requeued = self.jobs.recover()
        if requeued:
            log.info("%d jobs were running when the server stopped: queued again", requeued)
        self.remove_strays()
        self.expire()
        if scorers is None:
            # each detector loaded once; every worker thread has a preparer of its own
            first = {n: Scorer(r, cfg.device) for n, r in cfg.models.items()}
            per_model = {n: [s, *(s.sibling() for _ in range(cfg.workers - 1))] for n, s in first.items()}
        elif isinstance(scorers, Mapping):
            per_model = {n: list(s) for n, s in scorers.items()}
        else:
            per_model = {"default": list(scorers)}
        self.default = next(iter(per_model))
        self.models = {n: {**s[0].model_info, "card": _model_card(s[0])} for n, s in per_model.items()}
        self.model_info = self.models[self.default]
        self.metrics = Metrics(self.models)
        self.after_claim: Callable[[dict[str, Any]], None] = lambda job: None
        self.wake, self.stop = threading.Event(), threading.Event()
        workers = len(next(iter(per_model.values())))
        self.workers = [Worker(f"scorer-{i}", {n: s[i] for n, s in per_model.items()}) for i in range(workers)]
        for w in self.workers:
            w.thread = threading.Thread(target=self._work, args=(w,), daemon=True, name=w.name)
            w.thread.start()
        self.janitor = threading.Thread(target=self._sweep_often, daemon=True, name="janitor")
        self.janitor.start()

    def upload(self, job_id: str) -> Path:
        return self.uploads / f"{job_id}.video"

    def report(self, job_id: str) -> Path:
        return self.reports / f"{job_id}.html"

    def health(self) -> dict[str, Any]:
        """``status`` ``ok``, or ``failing`` with the threads that stopped and why."""
        threads = [(w.name, w.thread, w.stopped) for w in self.workers] + [("janitor", self.janitor, None)]
        dead = [{"thread": name, "error": why or "stopped"} for name, t, why in threads
                if not t.is_alive() and not self.stop.is_set()]
        alive = sum(w.thread.is_alive() for w in self.workers)
        return {"status": "failing", "workers": alive, "stopped": dead} if dead else {"status": "ok", "workers": alive}

    def _work(self, w: Worker) -> None:
        try:
            while not self.stop.is_set():
                job = self.jobs.claim()
                if job is None:
                    self.wake.wait(0.5)
                    self.wake.clear()
                    continue
                w.job = job["id"]
                self.after_claim(job)
                self._score(w, job)
                w.job = None
        except BaseException as err:  # noqa: BLE001 - the service around the job failed: stop, and say so
            w.stopped = f"{type(err).__name__}: {err}"
            log.exception("worker %s stopped", w.name)
            self._release(w)

    def _score(self, w: Worker, job: dict[str, Any]) -> None:
        from ...inference.verdict import to_json

        upload = self.upload(job["id"])
        name = job.get("model") or self.default  # jobs queued before several detectors: the default
        try:
            try:
                if name not in w.scorers:  # queued before a restart that dropped its detector
                    raise LookupError(f"the detector {name!r} is no longer served (serving {', '.join(w.scorers)})")
                verdict, evidence = w.scorers[name].score(upload, evidence=4)
                verdict.video = job["name"]  # the client's name, for display only
                self._write_report(verdict, evidence, w.scorers[name].model_info, self.report(job["id"]))
                outcome = {"status": "done", "verdict": to_json([verdict])}
                self.metrics.scored(name, verdict)
            except Exception as err:  # noqa: BLE001 - a job fails, the service goes on
                log.exception("job %s failed", job["id"])
                outcome = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
            if not self.jobs.finish(job["id"], **outcome):
                log.info("job %s was deleted while it was scored: its files are removed", job["id"])
                self._remove_files(job["id"])
        finally:
            if not self.cfg.keep_uploads:
                upload.unlink(missing_ok=True)

    def _write_report(self, verdict: Any, evidence: Any, model_info: dict[str, Any], out: Path) -> None:
        from ...reports.page import write_report

        # Written under a name no client asks for, made private, then renamed: the page (face
        # crops) is never readable by others, not even for a moment.
        tmp = out.with_name(f".{out.name}.partial")
        write_report(verdict, evidence, model_info, tmp)
        tmp.chmod(0o600)
        os.replace(tmp, out)

    def _release(self, w: Worker) -> None:
        """The job of a stopped worker: failed (or removed, if it was being deleted)."""
        if w.job is None:
            return
        try:
            outcome = self.jobs.abandon(w.job, f"the worker scoring it stopped ({w.stopped})")
            if outcome == "deleted":
                self._remove_files(w.job)
            elif outcome == "failed":
                self.report(w.job).unlink(missing_ok=True)  # a page written before the failure
            w.job = None
        except Exception:  # noqa: BLE001 - the janitor tries again
            log.exception("the job %s of worker %s is still marked running", w.job, w.name)

    def _remove_files(self, job_id: str) -> None:
        self.report(job_id).unlink(missing_ok=True)
        self.upload(job_id).unlink(missing_ok=True)

    def sweep(self) -> None:
        """Fail the jobs of stopped workers; remove what expired."""
        for w in self.workers:
            if w.job is not None and not w.thread.is_alive():
                self._release(w)
        self.expire()

    def expire(self) -> None:
        """Remove the jobs that ended ``keep_hours`` ago, with their files."""
        for job_id in self.jobs.expire(self.clock() - self.cfg.keep_hours * 3600):
            self._remove_files(job_id)
            log.info("job %s expired: removed with its files", job_id)

    def _sweep_often(self) -> None:
        while not self.stop.wait(self.cfg.sweep_seconds):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - tried again next time
                log.exception("sweeping the data directory failed")

    def remove_strays(self) -> int:
        """Remove the files of ``uploads/`` and ``reports/`` that no job holds (before any upload
        or worker starts). How many."""
        held, done = self.jobs.ids()
        strays = [p for p in self.uploads.iterdir() if p.suffix != ".video" or p.stem not in held]
        strays += [p for p in self.reports.iterdir() if p.suffix != ".html" or p.stem not in done]
        for p in strays:
            p.unlink(missing_ok=True)
        if strays:
            log.info("removed %d files no job holds from %s", len(strays), self.cfg.data_dir)
        return len(strays)

    def close(self) -> None:
        self.stop.set()
        self.wake.set()
