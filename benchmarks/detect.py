"""`tim detect` cost per video, per stage, on the shared 1080p videos, against the study's way.

Detectors on flow+depth with 32 time points (the study's setting), weights random (speed does not
depend on them), saved to a temporary run directory and loaded the way `tim detect` loads them:

  study           the baseline: the small models (DINOv2-S on flow+depth, Depth Anything V2-S at
                  224) run the study's way. Every frame decoded with OpenCV as a stream,
                  facenet-pytorch MTCNN (default settings) on both full-resolution frames of each
                  pair, each frame cropped with its own most probable face, Farneback flow, then
                  each crop alone through depth and each point alone through the detector, fp32
                  PyTorch.
  tiny            dinov2-tiny + a tiny Depth Anything V2 (input 112): the pipeline's fixed costs
  small-518       dinov2-small + Depth Anything V2 small at its default input 518
  small-224-torch dinov2-small + Depth Anything V2 small at input 224, both in PyTorch (`--runtime torch`)
  small-224       the same with `tim detect`'s default CPU runtime, ONNX Runtime fp32
  small-224-int8  the same with the detector as ONNX Runtime dynamic int8 (`tim compress --method int8`)
  small-224-int8-depth   small-224 with depth in ONNX Runtime dynamic int8 (`--depth-precision int8`)
  small-224-int8-both    int8 detector and int8 depth
  small-224-early small-224 with `--early-stop 0.01` (the detector's threshold, 0.5: random weights
                  give means near it, so it scores every point: the cost of the check)
  small-224-early-clear  the same with the detector's threshold at 0.1, so that every video is
                  decided on half its points: the time of a clear video, and how far its score
                  (the mean of half the points) moves from small-224's

The small detectors share one set of weights (same seed), so each speed option differs from its
reference by one thing, and is reported with its effect on the verdicts' scores (the largest and
mean absolute difference of the video score, the mean of the per-point probabilities, and the
largest per-point difference). The weights are random and recorded as such: these figures are of
the computation, not of accuracy.

Prints JSON: seconds per stage for each video and detector, the video's duration, the speed-up of
each detector over the study's way in the same run, the effects on scores, and what `--report`
adds: the small-224 verdict again with its evidence (4 time points with saliency) and the page
written, against the verdict alone.

    python benchmarks/detect.py [--device cpu|cuda] [--detectors study,small-224,...] [--data DIR]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from truthinmotion.experiments.compress import write_variant
from truthinmotion.models.inputs import encode_pictures, to_backbone
from truthinmotion.inference.scorer import Scorer
from truthinmotion.inference.verdict import Verdict
from truthinmotion.faces.mtcnn import crop_square
from truthinmotion.reports.page import write_report
from truthinmotion.features import depth_anything_config
from truthinmotion.models.detector import Detector
from truthinmotion.models.architecture import DetectorConfig
from truthinmotion.media.video import probe, read_frames, sample_points
from truthinmotion.backends.weights import save_random_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETUPS = {  # backbone, depth model, depth input size, runtime
    "study": ("dinov2-small", "depth-anything-v2-small", 224, "torch"),
    "tiny": ("dinov2-tiny", "depth-anything-v2-tiny", 112, "auto"),
    "small-518": ("dinov2-small", "depth-anything-v2-small", 518, "auto"),
    "small-224-torch": ("dinov2-small", "depth-anything-v2-small", 224, "torch"),
    "small-224": ("dinov2-small", "depth-anything-v2-small", 224, "auto"),
    "small-224-int8": ("dinov2-small", "depth-anything-v2-small", 224, "auto"),
    "small-224-int8-depth": ("dinov2-small", "depth-anything-v2-small", 224, "auto"),
    "small-224-int8-both": ("dinov2-small", "depth-anything-v2-small", 224, "auto"),
    "small-224-early": ("dinov2-small", "depth-anything-v2-small", 224, "auto"),
    "small-224-early-clear": ("dinov2-small", "depth-anything-v2-small", 224, "auto"),
}
EARLY_STOP = {"small-224-early": 0.01, "small-224-early-clear": 0.01}
DEPTH_PRECISION = {"small-224-int8-depth": "int8", "small-224-int8-both": "int8"}


def make_run(root: Path, name: str) -> Path:
    from transformers import DepthAnythingForDepthEstimation

    backbone, depth, size, _ = SETUPS[name]
    depth_dir = root / depth
    if not depth_dir.is_dir():
        torch.manual_seed(0)
        save_random_model(DepthAnythingForDepthEstimation(depth_anything_config(depth)), depth_dir)
    from truthinmotion.features.depth import DepthConfig
    from truthinmotion.features.flow import FlowConfig
    from truthinmotion.models.record import DetectorRecord

    cfg = DetectorConfig(backbone=backbone, modality="flow+depth")
    record = DetectorRecord(cfg, {}, flow=FlowConfig(), depth=DepthConfig(model=str(depth_dir), input_size=size),
                            verdict={"threshold": 0.1} if name.endswith("-clear") else {})
    torch.manual_seed(1)  # the same detector weights for every small setup
    model = Detector.build(cfg, init="random", record=record).eval()
    if name.endswith("-int8") or name.endswith("-int8-both"):
        example = {m: torch.randn(2, 3, 224, 224) for m in model.cfg.modalities}
        write_variant(model, "int8", root / name, example)
        return root / name
    return model.save_pretrained(root / name)


class StudyWay:
    """The baseline: a run's small models used the study's way (see the module docstring);
    ``__call__(path) -> Verdict`` with the score (mean probability) and per-stage timings."""

    def __init__(self, run: Path, device: str):
        from facenet_pytorch import MTCNN

        self.models = Scorer(run, device=device, runtime="torch")
        self.mtcnn = MTCNN(keep_all=True, device=device)
        self.device = device

    def __call__(self, path: str) -> Verdict:
        s, tm = self.models, {}
        t = time.perf_counter()
        points = sample_points(probe(path).frames, 32)
        frames = dict(read_frames(path, np.concatenate([points, points + 1])))
        tm["decode"] = time.perf_counter() - t
        t = time.perf_counter()
        pairs, kept = [], []
        for p in points:
            crops = []
            for frame in (frames[int(p)], frames[int(p) + 1]):
                boxes, probs = self.mtcnn.detect(frame)
                if boxes is None:
                    break
                crops.append(crop_square(frame, boxes[int(np.argmax(probs))], 1.3, 224))
            if len(crops) == 2:
                pairs.append(crops)
                kept.append(int(p))
        pairs = np.array(pairs)
        tm["faces"] = time.perf_counter() - t
        t = time.perf_counter()
        flow = s.preparer.flow(pairs)
        tm["flow"] = time.perf_counter() - t
        t = time.perf_counter()
        depth = np.concatenate([s.depth(pairs[i:i + 1, 0]) for i in range(len(pairs))])
        tm["depth"] = time.perf_counter() - t
        t = time.perf_counter()
        probs = []
        with torch.no_grad():
            for i in range(len(pairs)):
                pics = encode_pictures({"flow": flow[i:i + 1], "depth": depth[i:i + 1]}, s.model.cfg.modalities,
                                       s.data_cfg, 1.3)
                x = {m: v.to(self.device) for m, v in to_backbone(pics, s.model.preprocess).items()}
                probs.append(torch.sigmoid(s.model(x).logit).item())
        tm["detector"] = time.perf_counter() - t
        tm["total"] = sum(tm.values())
        by_point = dict(zip(kept, probs))
        return Verdict(video=path, status="ok", score=float(np.mean(probs)), frame_index=[int(p) for p in points],
                       frame_scores=[by_point.get(int(p)) for p in points], timings=tm)


# (option, reference): the detectors that differ by one speed option only; the first compares
# the whole of `tim detect`'s way (faces, batching, runtime) with the study's
EFFECTS = [("small-224", "study"), ("small-224", "small-224-torch"), ("small-224-int8", "small-224"),
           ("small-224", "small-518"), ("small-224-int8-depth", "small-224"), ("small-224-int8-both", "small-224"),
           ("small-224-early", "small-224"), ("small-224-early-clear", "small-224")]


def score_effects(verdicts: dict[tuple[str, str], Verdict], videos: list[str]) -> dict[str, dict]:
    """Per speed option, against its reference: the largest and mean |difference| of the video
    scores, and the largest difference of one time point's probability."""
    effects = {}
    for option, ref in EFFECTS:
        pairs = [(verdicts[option, v], verdicts[ref, v]) for v in videos
                 if (option, v) in verdicts and (ref, v) in verdicts
                 and verdicts[option, v].score is not None and verdicts[ref, v].score is not None]
        if not pairs:
            continue
        diffs = [abs(a.score - b.score) for a, b in pairs]
        points = [abs(x - y) for a, b in pairs for x, y in zip(a.frame_scores, b.frame_scores)
                  if x is not None and y is not None]
        effects[f"{option} vs {ref}"] = {
            "videos": len(diffs), "max_abs_score_diff": round(max(diffs), 6),
            "mean_abs_score_diff": round(sum(diffs) / len(diffs), 6),
            "max_abs_point_diff": round(max(points), 6) if points else None}
    return effects


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--detectors", default="study,small-224,small-224-torch,small-224-int8,small-224-int8-depth,"
                                           "small-224-int8-both,small-224-early,small-224-early-clear,small-518,tiny")
    ap.add_argument("--data", default=str(DATA), help="folder searched for 1080p videos (../shared/data)")
    ap.add_argument("--report", default="small-224", help="detector whose evidence page is also timed ('' : none)")
    args = ap.parse_args()
    videos = [v for v in sorted(glob.glob(f"{args.data}/**/*.mp4", recursive=True))
              if max(probe(v).width, probe(v).height) >= 1920]
    if not videos:
        raise SystemExit(f"no 1080p videos under {args.data}")
    rows, totals, verdicts, pages = [], {}, {}, []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("TIM_CACHE_DIR", str(Path(tmp) / "cache"))  # ONNX exports, made once per setup
        for name in args.detectors.split(","):
            run = make_run(Path(tmp), name)
            scorer = (StudyWay(run, args.device) if name == "study" else
                      Scorer(run, args.device, runtime=SETUPS[name][3], early_stop=EARLY_STOP.get(name),
                             depth_precision=DEPTH_PRECISION.get(name)))
            scorer(videos[0])  # warm-up: first calls allocate and pick kernels
            totals[name] = 0.0
            for v in videos:
                verdict = scorer(v)
                info = probe(v)
                rows.append({"detector": name, "video": Path(v).name, "resolution": f"{info.width}x{info.height}",
                             "video_seconds": round(info.frames / info.fps, 2), "status": verdict.status,
                             "points_scored": sum(x is not None for x in verdict.frame_scores),
                             **{f"{k}_s": round(t, 3) for k, t in verdict.timings.items()}})
                totals[name] += verdict.timings["total"]
                verdicts[name, Path(v).name] = verdict
                if name == args.report:  # the same video again, with evidence and its page
                    t = time.perf_counter()
                    again, evidence = scorer.score(v, evidence=4)
                    write_report(again, evidence, scorer.model_info, Path(tmp) / f"{Path(v).stem}.html")
                    with_page = time.perf_counter() - t
                    pages.append({"video": Path(v).name, "verdict_s": round(verdict.timings["total"], 3),
                                  "with_report_s": round(with_page, 3),
                                  "overhead": round(with_page / verdict.timings["total"] - 1, 3)})
    base = totals.get("study")
    print(json.dumps({
        "benchmark": "detect", "device": args.device, "threads": torch.get_num_threads(),
        "time_points": 32, "modality": "flow+depth", "weights": "random (detector and depth model)",
        "score_effects": score_effects(verdicts, [Path(v).name for v in videos]),
        "report_overhead": {"detector": args.report, "videos": pages,
                            "mean": round(sum(p["overhead"] for p in pages) / len(pages), 3) if pages else None},
        "mean_seconds_per_video": {k: round(t / len(videos), 3) for k, t in totals.items()},
        "speedup_vs_study": {k: round(base / t, 2) for k, t in totals.items()} if base else None,
        "rows": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
