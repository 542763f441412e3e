"""Training throughput: pictures per second for detector training steps.

DINOv2 small- and base-sized encoders (random weights: speed does not depend on them), one
(flow) and two (flow+depth) modalities, the study's freeze policy (last block + head), fp32 and
autocast. The baseline of the ratios is fp32, small, one modality, measured in the same run.
Inputs are random normalised pictures: this measures the model step, not data loading.

    python benchmarks/train.py [--device cpu|cuda] [--batch 16] [--steps 3] [--autocast bf16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from truthinmotion.models.detector import Detector
from truthinmotion.models.architecture import DetectorConfig
from truthinmotion.backends.runtime import autocast_context


def step_rate(backbone: str, modality: str, amp: str, batch: int, steps: int, device: str) -> float:
    torch.manual_seed(0)
    model = Detector.build(DetectorConfig(backbone=backbone, modality=modality), init="random").to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = {m: torch.randn(batch, 3, 224, 224, device=device) for m in model.cfg.modalities}
    y = torch.randint(0, 2, (batch,), device=device).float()

    def step() -> None:
        with autocast_context(device, amp):
            out = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logit.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--autocast", default="bf16", choices=["bf16", "fp16"])
    args = ap.parse_args()
    rows = []
    for backbone in ("dinov2-small", "dinov2-base"):
        for modality in ("flow", "flow+depth"):
            for amp in ("off", args.autocast):
                rate = step_rate(backbone, modality, amp, args.batch, args.steps, args.device)
                rows.append({"backbone": backbone, "modality": modality, "autocast": amp, "pictures_per_s": round(rate, 2)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    base = rows[0]["pictures_per_s"]
    for r in rows:
        r["vs_small_flow_fp32"] = round(r["pictures_per_s"] / base, 3)
    print(json.dumps({"benchmark": "train", "device": args.device, "threads": torch.get_num_threads(),
                      "batch": args.batch, "steps": args.steps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
