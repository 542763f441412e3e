"""The comparisons of ``benchmarks/gpu_check.sh``: what ran on the GPU against the same on the CPU.

    python benchmarks/gpu_compare.py faces WORK_GPU WORK_CPU      # face boxes: IoU
    python benchmarks/gpu_compare.py depth WORK_GPU WORK_CPU NAME # depth maps: mean |difference|
    python benchmarks/gpu_compare.py evaluate DIR_GPU DIR_CPU     # metrics.json: video scores
    python benchmarks/gpu_compare.py detect GPU.json CPU.json     # verdicts: probabilities
    python benchmarks/gpu_compare.py train RUN_DIR                # metrics.csv: finite losses

Each prints one JSON line with the figures and ``"pass"``, and exits 1 when the check fails, so
the shell script can count failures. The tolerances are those of the same computation in another
order and precision on another device, not of different results.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x2, y2 = np.minimum(a[:, 2], b[:, 2]), np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def faces(gpu: Path, cpu: Path) -> dict:
    ious, found = [], [0, 0]
    for g in sorted((gpu / "faces").glob("*.npz")):
        bg, bc = np.load(g)["boxes"], np.load(cpu / "faces" / g.name)["boxes"]
        both = ~np.isnan(bg[:, 0]) & ~np.isnan(bc[:, 0])
        found[0] += int((~np.isnan(bg[:, 0])).sum())
        found[1] += int((~np.isnan(bc[:, 0])).sum())
        ious += _iou(bg[both], bc[both]).tolist()
    mean = float(np.mean(ious)) if ious else 0.0
    return {"check": "faces", "points_gpu": found[0], "points_cpu": found[1], "mean_iou": round(mean, 4),
            "min_iou": round(float(np.min(ious)), 4) if ious else None,
            "pass": bool(ious) and mean > 0.95 and abs(found[0] - found[1]) <= 0.02 * max(found)}


def _unit(maps: np.ndarray) -> np.ndarray:
    """Each map min-max scaled to 0..1: depth is relative, and the detector sees it so."""
    m = maps.astype(np.float32)
    lo = m.min(axis=(-2, -1), keepdims=True)
    return (m - lo) / np.maximum(m.max(axis=(-2, -1), keepdims=True) - lo, 1e-6)


def depth(gpu: Path, cpu: Path, name: str) -> dict:
    diffs = []
    for g in sorted((gpu / "depth" / name).glob("*.npz")):
        a, b = np.load(g)["depth"], np.load(cpu / "depth" / name / g.name)["depth"]
        diffs.append(float(np.abs(_unit(a) - _unit(b)).mean()))
    worst = max(diffs) if diffs else math.inf
    # CUDA runs the depth model under fp16 autocast: a mean difference of a few hundredths of
    # the map's range is that; a different result would differ by tenths.
    return {"check": "depth", "videos": len(diffs), "worst_mean_abs_diff": round(worst, 4),
            "pass": bool(diffs) and worst <= 0.03}


def evaluate(gpu: Path, cpu: Path) -> dict:
    mg, mc = (json.loads((d / "metrics.json").read_text()) for d in (gpu, cpu))
    sg = {v["video_id"]: v["score"] for v in mg["videos"]}
    sc = {v["video_id"]: v["score"] for v in mc["videos"]}
    diff = max(abs(sg[k] - sc[k]) for k in sg) if sg and sg.keys() == sc.keys() else math.inf
    return {"check": "evaluate", "videos": len(sg), "max_score_diff": round(diff, 4),
            "pass": diff <= 0.02}


def detect(gpu: Path, cpu: Path) -> dict:
    vg, vc = (json.loads(p.read_text()) for p in (gpu, cpu))
    statuses = sorted({v["status"] for v in vg + vc})
    diffs = [abs(a["probability"] - b["probability"]) for a, b in zip(vg, vc)
             if a["probability"] is not None and b["probability"] is not None]
    diff = max(diffs) if diffs else math.inf
    return {"check": "detect", "verdicts": len(vg), "statuses": statuses, "max_probability_diff": round(diff, 4),
            "pass": len(diffs) == len(vg) == len(vc) and diff <= 0.02}


def train(run: Path) -> dict:
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    losses = [float(r[k]) for r in rows for k in ("train_loss", "val_loss")]
    return {"check": "train", "run": run.name, "epochs": len(rows), "losses": [round(x, 4) for x in losses],
            "pass": bool(rows) and all(math.isfinite(x) for x in losses) and (run / "best").is_dir()}


def main() -> int:
    kind, *args = sys.argv[1:]
    fn = {"faces": faces, "depth": depth, "evaluate": evaluate, "detect": detect, "train": train}[kind]
    try:
        result = fn(*[Path(a) if i < 2 else a for i, a in enumerate(args)])
    except (OSError, KeyError, ValueError, StopIteration) as e:
        result = {"check": kind, "error": f"{type(e).__name__}: {e}", "pass": False}
    print(json.dumps(result))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
