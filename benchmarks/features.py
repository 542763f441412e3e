"""Features throughput on 224-px face crops: flow pairs/s and depth maps/s.

Flow: farneback and dis (OpenCV, CPU) and raft-small (torchvision, random weights: speed does
not depend on the weights); depth: a Depth Anything V2 small-sized model (random weights) at
input 518 (the model's default) and 224 (the crops' own size). Farneback is the baseline of the
ratios. Crops are real face crops of a shared FF++ video where ../shared is present, else of a
generated clip. Prints JSON.

    python benchmarks/features.py [--device cpu|cuda] [--pairs 32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from truthinmotion.faces.mtcnn import FaceDetector
from truthinmotion.faces.config import FacesConfig
from truthinmotion.faces.extract import extract_faces
from truthinmotion.features import DepthConfig, DepthEstimator, FlowConfig, FlowEstimator

SHARED_VIDEO = Path(__file__).resolve().parents[2] / "shared/data/ffpp/original_sequences/youtube/c23/videos/004.mp4"


def crops(n: int) -> tuple[np.ndarray, str]:
    cfg = FacesConfig(num_points=n)
    if SHARED_VIDEO.is_file():
        return extract_faces(SHARED_VIDEO, cfg, FaceDetector.from_config(cfg)).crops, SHARED_VIDEO.name
    import tempfile

    from truthinmotion.media.clips import synth_clip, write_video

    path = write_video(Path(tempfile.mkdtemp()) / "clip.mp4", synth_clip(False, frames=n + 2, size=256))
    return extract_faces(path, cfg, FaceDetector.from_config(cfg)).crops, "generated clip"


def rate(fn, items: np.ndarray, repeats: int, device: str) -> float:
    fn(items[:2])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn(items)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return len(items) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    pairs, source = crops(args.pairs)
    out: dict = {"benchmark": "features", "device": args.device, "threads": torch.get_num_threads(),
                 "crops": source, "crop_size": int(pairs.shape[2])}
    flow = {}
    for method in ("farneback", "dis", "raft-small"):
        cfg = FlowConfig(method=method, init="random")
        flow[method] = rate(FlowEstimator(cfg, args.device), pairs, args.repeats, args.device)
    out["flow_pairs_per_s"] = {k: round(v, 2) for k, v in flow.items()}
    out["flow_speed_vs_farneback"] = {k: round(v / flow["farneback"], 2) for k, v in flow.items()}
    depth = {}
    for size in (518, 224):
        cfg = DepthConfig(model="depth-anything-v2-small", init="random", input_size=size)
        depth[f"input_{size}"] = rate(DepthEstimator(cfg, args.device), pairs[:, 0], args.repeats, args.device)
    out["depth_maps_per_s"] = {k: round(v, 2) for k, v in depth.items()}
    out["depth_224_vs_518"] = round(depth["input_224"] / depth["input_518"], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
