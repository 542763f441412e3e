"""``tim benchmark``: one table comparing detector variants on cost and accuracy, in one run.

For each run directory: size on disk, parameters, latency at batch 1 (p50, p95), throughput at
the best of a few batch sizes, speed-up over the first run directory (the baseline, measured in
the same process on the same pictures) and frame/video AUC and accuracy on a split. Timing uses
real pictures of the baseline's own validation videos; only the detector is timed (faces and
features are the same for every variant).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..backends.weights import report_folder_for, resolve_folder
from ..core.config import Settings, require
from ..data.splits import SPLITS
from ..models.loading import inference_autocast, load_detector
from .compress import sample_inputs
from ..training.dataset import VideoDataset, collate
from ..core.metrics import binary_metrics, video_level
from ..models.detector import Detector
from ..core.io import atomic_write_text, dir_size
from ..backends.runtime import autocast_context
from ..training.loop import predict

__all__ = ["BenchmarkConfig", "BenchmarkResult", "benchmark_runs", "time_calls"]


@dataclass(frozen=True)
class BenchmarkConfig(Settings):
    """What ``tim benchmark`` measures: the section ``benchmark`` of a settings file."""

    split: str = "test"  # the videos whose AUC and accuracy are reported
    batches: tuple[int, ...] = (1, 8, 32)  # throughput is the best of these batch sizes
    repeats: int = 10  # timed calls at batch 1

    def check(self) -> None:
        require(self.split in SPLITS, f"split: expected one of {', '.join(SPLITS)}, got {self.split!r}")
        require(bool(self.batches) and all(isinstance(b, int) and b >= 1 for b in self.batches),
                f"batches: expected batch sizes of 1 or more, got {list(self.batches)}")
        require(self.repeats >= 1, f"repeats: expected 1 or more, got {self.repeats}")


@dataclass
class BenchmarkResult:
    rows: list[dict[str, Any]]
    markdown: str
    out_dir: Path

    def summary(self) -> str:
        return self.markdown + f"\nwritten to {self.out_dir / 'benchmark.md'} and benchmark.json"


def time_calls(model: Any, inputs: dict[str, torch.Tensor], batch: int, device: str, amp: str, repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``model`` on ``batch`` pictures (the inputs cycled), after
    a warm-up; CUDA is synchronised around each call."""
    n = len(next(iter(inputs.values())))
    idx = torch.arange(batch) % n
    x = {m: t[idx].to(device) for m, t in inputs.items()}

    def once() -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.no_grad(), autocast_context(device, amp):
            model(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t

    for _ in range(3):  # warm-up (and compilation for this batch size, for torch.compile variants)
        once()
    return [once() for _ in range(repeats)]


def benchmark_runs(
    run_dirs: Sequence[str | Path], *, device: str = "cpu", split: str = BenchmarkConfig.split,
    batches: Sequence[int] = BenchmarkConfig.batches, repeats: int = BenchmarkConfig.repeats,
    out_dir: str | Path | None = None,
) -> BenchmarkResult:
    report_folder_for(run_dirs[0], out_dir, "benchmark.md/json")
    runs = [resolve_folder(r, what="detector") for r in run_dirs]  # hub ids: their snapshots, checked first
    base_model = Detector.from_pretrained(runs[0])
    inputs = sample_inputs(base_model, "val", max_pictures=max(batches))
    work = Path(base_model.record.provenance.workdir or "")
    rows: list[dict[str, Any]] = []
    for run in runs:
        model = load_detector(run, device)
        amp = inference_autocast(model)
        lat = sorted(time_calls(model, inputs, 1, device, amp, repeats))
        thr = {b: b / float(np.median(time_calls(model, inputs, b, device, amp, max(3, repeats // 3)))) for b in batches}
        best_batch = max(thr, key=thr.get)
        ds = VideoDataset(work, split, model.cfg.modality, model.record.data, model.preprocess,
                          expect=model.record.feature_expect())
        pred = predict(model, DataLoader(ds, batch_size=4, collate_fn=collate), device, amp)
        _, vs, vl = video_level(pred["prob"], pred["video"], pred["label"], groups=ds.video_ids(pred["video"]))
        video = binary_metrics(vl, vs, model.record.rule("mean").threshold)
        best = run / "best" if (run / "best").is_dir() else run
        inf = model.record.inference
        params = inf.parameters or sum(p.numel() for p in model.parameters())
        rows.append({
            "variant": run.name, "method": inf.method, "runtime": inf.runtime,
            "size_mb": round(dir_size(best) / 1e6, 2), "parameters": int(params),
            "latency_p50_ms": round(1000 * float(np.percentile(lat, 50)), 2),
            "latency_p95_ms": round(1000 * float(np.percentile(lat, 95)), 2),
            "throughput": round(thr[best_batch], 1), "best_batch": best_batch,
            "frame_auc": binary_metrics(pred["label"], pred["prob"])["auc"], "video_auc": video["auc"],
            "video_acc": video["acc@thr"], "max_prob_diff": inf.max_prob_diff,
        })
    base = rows[0]
    for r in rows:
        r["speedup_latency"] = round(base["latency_p50_ms"] / r["latency_p50_ms"], 2)
        r["speedup_throughput"] = round(r["throughput"] / base["throughput"], 2)
    md = _markdown(rows, device, split, work)
    out = Path(out_dir) if out_dir else runs[0]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "benchmark.json", json.dumps({"device": device, "split": split, "rows": rows}, indent=2))
    atomic_write_text(out / "benchmark.md", md)
    return BenchmarkResult(rows, md, out)


def _markdown(rows: list[dict[str, Any]], device: str, split: str, work: Path) -> str:
    def f(x: Any) -> str:
        if x is None or (isinstance(x, float) and np.isnan(x)):
            return "n/a"
        return f"{x:.4f}" if isinstance(x, float) and abs(x) < 10 else str(x)

    lines = [
        f"Detector variants on {device} ({torch.get_num_threads()} threads); accuracy on `{split}` of {work}; "
        f"speed-ups against `{rows[0]['variant']}` measured in the same run.",
        "",
        "| variant | method | size MB | params | p50 ms (b=1) | p95 ms | pictures/s (batch) | speed-up b=1 | "
        "speed-up best | frame AUC | video AUC | video acc | max prob diff |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        diff = "n/a" if r["max_prob_diff"] is None else f"{r['max_prob_diff']:.1e}"
        lines.append(
            f"| {r['variant']} | {r['method']} | {r['size_mb']} | {r['parameters']:,} | {r['latency_p50_ms']} | "
            f"{r['latency_p95_ms']} | {r['throughput']} ({r['best_batch']}) | {r['speedup_latency']}x | "
            f"{r['speedup_throughput']}x | {f(r['frame_auc'])} | {f(r['video_auc'])} | {f(r['video_acc'])} | "
            f"{diff} |"
        )
    return "\n".join(lines) + "\n"
