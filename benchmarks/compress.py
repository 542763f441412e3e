"""PyTorch fp32 vs ONNX Runtime fp32 vs dynamic int8 (and bf16 autocast) for detectors.

Detectors of DINOv2 small and base sizes on flow (random backbone weights, head trained for two
epochs on the demo's generated clips, so that AUC means something), compressed with
``tim compress`` and compared with ``tim benchmark``: latency at batch 1, throughput, size, and
AUC on the test videos, all against the fp32 PyTorch detector measured in the same run.

    python benchmarks/compress.py [--out /tmp/tim-compress] [--backbones dinov2-small,dinov2-base]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from truthinmotion.experiments.bench import benchmark_runs
from truthinmotion.experiments.compress import compress
from truthinmotion.apps.demo import make_demo_data
from truthinmotion.faces.config import FacesConfig
from truthinmotion.faces.stage import run_faces
from truthinmotion.features import FlowConfig, run_features
from truthinmotion.data.index import IndexConfig, index_dataset
from truthinmotion.training.train import TrainConfig, train, train_status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/tim-compress")
    ap.add_argument("--backbones", default="dinov2-small,dinov2-base")
    # bf16 autocast is a GPU method: on CPUs without bf16 units it is several times slower.
    ap.add_argument("--methods", default="onnx,int8")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    work = out / "work"
    if not (work / "manifest.csv").is_file():
        index_dataset(make_demo_data(out / "data", clips=20), work, IndexConfig(format="folder"))
    run_faces(work, FacesConfig(num_points=16), progress=False)
    run_features(work, FlowConfig(), None, progress=False)
    results = {}
    for backbone in args.backbones.split(","):
        run = out / "runs" / backbone
        cfg = TrainConfig(backbone=backbone, init="random", modality="flow", train_blocks=0, epochs=2,
                          batch_size=6, train_points=6, lr=1e-3, flow_max=4.0, workers=0, progress=False)
        if train_status(run, cfg) != "done":
            train(work, cfg, run)
        variants = [run]
        for method in args.methods.split(","):
            compress(run, method, out / "runs" / f"{backbone}-{method}", device=args.device)
            variants.append(out / "runs" / f"{backbone}-{method}")
        results[backbone] = benchmark_runs(variants, device=args.device, split="test", out_dir=out / backbone).rows
    print(json.dumps({"benchmark": "compress", "device": args.device, "results": results}, indent=2))


if __name__ == "__main__":
    main()
