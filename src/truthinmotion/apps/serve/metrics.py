"""What ``GET /metrics`` says, in the Prometheus text format (version 0.0.4), and the JSON access
log: counters kept in this process, jobs counted from the job table when asked."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from typing import Any, Iterable, Mapping

access_log = logging.getLogger("truthinmotion.serve.access")


def _labels(**labels: str) -> str:
    def esc(v: str) -> str:
        return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}" if labels else ""


class Metrics:
    """Verdicts by model and label, seconds per scoring stage, requests by status: thread-safe."""

    def __init__(self, models: Iterable[str]):
        self.lock = threading.Lock()
        self.models = list(models)
        self.verdicts: Counter[tuple[str, str, str]] = Counter()  # (model, status, label)
        self.stage_seconds: Counter[str] = Counter()
        self.stage_count: Counter[str] = Counter()
        self.requests: Counter[tuple[str, int]] = Counter()  # (method, status)

    def scored(self, model: str, verdict: Any) -> None:
        with self.lock:
            self.verdicts[(model, verdict.status, verdict.label or "none")] += 1
            for stage, seconds in (verdict.timings or {}).items():
                self.stage_seconds[stage] += float(seconds)
                self.stage_count[stage] += 1

    def request(self, method: str, status: int) -> None:
        with self.lock:
            self.requests[(method, status)] += 1

    def text(self, jobs: Mapping[str, int], workers: int) -> str:
        """The exposition: ``jobs`` by status (the job table's), live ``workers``."""
        from .store import ACTIVE, FINISHED

        out = ["# HELP tim_jobs Jobs in the job table by status.", "# TYPE tim_jobs gauge"]
        out += [f"tim_jobs{_labels(status=s)} {jobs.get(s, 0)}" for s in (*ACTIVE, *FINISHED)]
        out += ["# HELP tim_queue_length Jobs waiting for a worker.", "# TYPE tim_queue_length gauge",
                f"tim_queue_length {jobs.get('queued', 0)}",
                "# HELP tim_workers Scoring threads alive.", "# TYPE tim_workers gauge", f"tim_workers {workers}"]
        with self.lock:
            out += ["# HELP tim_verdicts Verdicts given, by detector, status and label.", "# TYPE tim_verdicts counter"]
            out += [f"tim_verdicts_total{_labels(model=m, status=s, label=lab)} {n}"
                    for (m, s, lab), n in sorted(self.verdicts.items())]
            out += ["# HELP tim_stage_seconds Seconds spent per scoring stage.", "# TYPE tim_stage_seconds summary"]
            for stage in sorted(self.stage_count):
                out += [f"tim_stage_seconds_sum{_labels(stage=stage)} {self.stage_seconds[stage]:.6f}",
                        f"tim_stage_seconds_count{_labels(stage=stage)} {self.stage_count[stage]}"]
            out += ["# HELP tim_http_requests HTTP requests answered, by method and status.",
                    "# TYPE tim_http_requests counter"]
            out += [f"tim_http_requests_total{_labels(method=m, code=str(c))} {n}"
                    for (m, c), n in sorted(self.requests.items())]
        out += ["# HELP tim_models Detectors served.", "# TYPE tim_models gauge"]
        out += [f"tim_models{_labels(model=m)} 1" for m in self.models]
        return "\n".join(out) + "\n"


def log_access(**fields: Any) -> None:
    """One JSON line per request (method, path, status, job id, bytes, seconds): never a header,
    so never the token."""
    access_log.info(json.dumps(fields, sort_keys=True))
