"""PyTorch fp32 vs ONNX Runtime fp32 vs dynamic int8 (and bf16 autocast) for detectors.

Detectors of DINOv2 small and base sizes on flow (random backbone weights, head trained for two
epochs on the demo's generated clips, so that AUC means something), compressed with
``tim compress`` and compared with ``tim benchmark``: latency at batch 1, throughput, size, and
AUC on the test videos, all against the fp32 PyTorch detector measured in the same run.

The speed table that ends the output times the variants again, loaded as ``tim detect`` loads
them, in ``--rounds`` interleaved rounds (every variant once per round, so that the load other
processes put on a shared machine falls on all of them alike): latency at batch 1 (median of
``--repeats`` calls) and pictures/s at the best of batches 1, 8, 16 and 32, each as a ratio to
PyTorch fp32 in the same round; the median of the rounds with their range, and the load average.

    python benchmarks/compress.py [--out /tmp/tim-compress] [--backbones dinov2-small,dinov2-base]
                                  [--speed-only]   (the speed table again, of the variants already made)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from truthinmotion.apps.demo import make_demo_data
from truthinmotion.data.index import IndexConfig, index_dataset
from truthinmotion.experiments.bench import benchmark_runs, time_calls
from truthinmotion.experiments.compress import compress, sample_inputs
from truthinmotion.faces.config import FacesConfig
from truthinmotion.faces.stage import run_faces
from truthinmotion.features import FlowConfig, run_features
from truthinmotion.models.detector import Detector
from truthinmotion.models.loading import inference_autocast, load_detector
from truthinmotion.training.train import TrainConfig, train, train_status

BATCHES = (1, 8, 16, 32)
NAMES = {"onnx": "onnxruntime-fp32", "int8": "onnxruntime-int8"}


def speed(variants: dict[str, Path], rounds: int, repeats: int) -> list[dict]:
    """Batch-1 latency and best-batch throughput of each variant, as ratios to the first one (the
    PyTorch fp32 run), round by round on the same real pictures."""
    inputs = sample_inputs(Detector.from_pretrained(next(iter(variants.values()))), "val", max(BATCHES))
    models = {name: load_detector(path, "cpu") for name, path in variants.items()}
    per_round: dict[str, list[dict]] = {name: [] for name in models}
    loads = []
    for _ in range(rounds):
        loads.append(os.getloadavg()[0])
        for name, model in models.items():
            amp = inference_autocast(model)
            latency = float(np.median(time_calls(model, inputs, 1, "cpu", amp, repeats)))
            per_s = {b: b / float(np.median(time_calls(model, inputs, b, "cpu", amp, max(3, repeats // 3))))
                     for b in BATCHES}
            best = max(per_s, key=per_s.get)
            per_round[name].append({"latency_ms": 1000 * latency, "per_s": per_s[best], "batch": best})
    base = per_round[next(iter(models))]
    rows = []
    for name, runs in per_round.items():
        lat_x = [b["latency_ms"] / r["latency_ms"] for b, r in zip(base, runs)]
        thr_x = [r["per_s"] / b["per_s"] for b, r in zip(base, runs)]
        rows.append({
            "variant": name,
            "latency_b1_ms": round(float(np.median([r["latency_ms"] for r in runs])), 1),
            "latency_x": round(float(np.median(lat_x)), 2), "latency_x_range": [round(min(lat_x), 2), round(max(lat_x), 2)],
            "per_s": round(float(np.median([r["per_s"] for r in runs])), 1),
            "best_batch": [r["batch"] for r in runs],
            "per_s_x": round(float(np.median(thr_x)), 2), "per_s_x_range": [round(min(thr_x), 2), round(max(thr_x), 2)],
        })
    return [{"rounds": rounds, "repeats": repeats, "threads": torch.get_num_threads(),
             "load_1min": [round(x, 2) for x in loads]}, *rows]


def table(rows: list[dict]) -> str:
    head, *rows = rows
    lines = [(f"{head['threads']} threads, {head['rounds']} rounds, load {head['load_1min']}; ratios to "
              f"{rows[0]['variant']} in the same round: median [range]"),
             "| variant | b=1 ms | b=1 speed-up | pictures/s (batch) | throughput speed-up |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['latency_b1_ms']} | {r['latency_x']}x {r['latency_x_range']} | "
                     f"{r['per_s']} ({','.join(map(str, sorted(set(r['best_batch']))))}) | "
                     f"{r['per_s_x']}x {r['per_s_x_range']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/tim-compress")
    ap.add_argument("--backbones", default="dinov2-small,dinov2-base")
    # bf16 autocast is a GPU method: on CPUs without bf16 units it is several times slower.
    ap.add_argument("--methods", default="onnx,int8")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the speed table (5)")
    ap.add_argument("--repeats", type=int, default=10, help="timed calls at batch 1 per round (10)")
    ap.add_argument("--speed-only", action="store_true", help="only the speed table, of the variants made before")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    if args.speed_only:
        for backbone in args.backbones.split(","):
            variants = {"pytorch-fp32": out / "runs" / backbone}
            variants.update({NAMES.get(m, m): out / "runs" / f"{backbone}-{m}" for m in args.methods.split(",")})
            rows = speed(variants, args.rounds, args.repeats)
            print(json.dumps({"benchmark": "compress", "backbone": backbone, "speed": rows}, indent=2))
            print(f"\n{backbone} on the CPU\n{table(rows)}")
        return
    work = out / "work"
    if not (work / "manifest.csv").is_file():
        index_dataset(make_demo_data(out / "data", clips=20), work, IndexConfig(format="folder"))
    run_faces(work, FacesConfig(num_points=16), progress=False)
    run_features(work, FlowConfig(), None, progress=False)
    results, speeds = {}, {}
    for backbone in args.backbones.split(","):
        run = out / "runs" / backbone
        cfg = TrainConfig(backbone=backbone, init="random", modality="flow", train_blocks=0, epochs=2,
                          batch_size=6, train_points=6, lr=1e-3, flow_max=4.0, workers=0, progress=False)
        if train_status(run, cfg) != "done":
            train(work, cfg, run)
        variants = {"pytorch-fp32": run}
        for method in args.methods.split(","):
            compress(run, method, out / "runs" / f"{backbone}-{method}", device=args.device)
            variants[NAMES.get(method, method)] = out / "runs" / f"{backbone}-{method}"
        results[backbone] = benchmark_runs(list(variants.values()), device=args.device, split="test",
                                           out_dir=out / backbone).rows
        if args.device == "cpu":
            speeds[backbone] = speed(variants, args.rounds, args.repeats)
    print(json.dumps({"benchmark": "compress", "device": args.device, "results": results, "speed": speeds}, indent=2))
    for backbone, rows in speeds.items():
        print(f"\n{backbone} on the CPU\n{table(rows)}")


if __name__ == "__main__":
    main()
