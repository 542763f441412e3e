"""Detector inference speed of the compressed variants, one set of weights, by batch size.

A flow+depth detector (DINOv2 small or base, random weights: speed does not depend on them) is
written as each variant with ``tim compress``'s own code and loaded the way ``tim detect`` loads
it; each is timed on the same random pictures at batches 1, 8, 32 and 64 (median of the timed
calls after a warm-up at that batch size) and compared with the fp32 detector in the same run.

  fp32            the trained detector as saved
  bf16, fp16      encoder weights in half precision, autocast (fp16: CUDA only)
  compile         torch.compile of the fp32 detector as `tim compress --method compile` ships it
  compile-static  torch.compile(dynamic=False): one graph per batch size
  onnx, int8      ONNX Runtime (on this onnxruntime build's providers)

    python benchmarks/inference.py [--device cpu|cuda] [--backbone dinov2-small] [--variants ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from truthinmotion.experiments.bench import time_calls
from truthinmotion.models.loading import inference_autocast, load_detector
from truthinmotion.experiments.compress import write_variant
from truthinmotion.models.detector import Detector
from truthinmotion.models.architecture import DetectorConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backbone", default="dinov2-small")
    ap.add_argument("--variants", default="fp32,bf16,compile,compile-static,int8")
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    model = Detector.build(DetectorConfig(backbone=args.backbone, modality="flow+depth"), init="random").eval()
    inputs = {m: torch.randn(64, 3, 224, 224) for m in model.cfg.modalities}
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants.split(","):
            method = {"fp32": None, "compile-static": "compile"}.get(name, name)
            path = Path(tmp) / name
            if method is None:
                model.save_pretrained(path)
            else:
                write_variant(model, method, path, {m: x[:2] for m, x in inputs.items()})
            variant = load_detector(path, args.device)
            if name == "compile-static":
                variant.forward = torch.compile(Detector.forward.__get__(variant), dynamic=False)
            amp = inference_autocast(variant)
            per_s = {b: round(b / float(np.median(time_calls(variant, inputs, b, args.device, amp, args.repeats))), 1)
                     for b in batches}
            rows.append({"variant": name, "pictures_per_s": per_s})
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["pictures_per_s"]
    for r in rows:
        r["speedup_vs_fp32"] = {b: round(r["pictures_per_s"][b] / base[b], 2) for b in batches}
    print(json.dumps({"benchmark": "inference", "device": args.device, "backbone": args.backbone,
                      "modality": "flow+depth", "weights": "random", "threads": torch.get_num_threads(),
                      "baseline": rows[0]["variant"], "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
