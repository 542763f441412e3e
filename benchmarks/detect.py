"""`tim detect` cost per video, per stage, on the shared 1080p videos.

Detectors on flow+depth with 32 time points (the study's setting), weights random (speed does not
depend on them), saved to a temporary run directory and loaded the way `tim detect` loads them:

  tiny       dinov2-tiny + a tiny Depth Anything V2 (input 112): the pipeline's fixed costs
  small-518  dinov2-small + Depth Anything V2 small at its default input 518: the baseline
  small-224  dinov2-small + Depth Anything V2 small at input 224 (the crops' own size)
  small-224-int8  the same with the detector as ONNX Runtime dynamic int8 (`tim compress --method int8`)

The small detectors share one set of weights (same seed), so the input size of depth is the only
difference between small-224 and small-518, and int8 the only one between small-224-int8 and
small-224: each speed option is reported with its effect on the verdicts' probabilities (the
largest and mean absolute difference against its reference). The weights are random and recorded
as such: these figures are of the computation, not of accuracy.

Prints JSON: seconds per stage for each video and detector, the video's duration, the speed-up
of each detector over small-518 in the same run, the effects on scores, and what `--report`
adds: the small-224 verdict again with its evidence (6 time points with saliency) and the page
written, against the verdict alone.

    python benchmarks/detect.py [--device cpu|cuda] [--detectors tiny,small-224,small-518] [--data DIR]
"""

from __future__ import annotations

import argparse
import glob
import json
import tempfile
import time
from pathlib import Path

import torch

from truthinmotion.compress import write_variant
from truthinmotion.detect import Scorer
from truthinmotion.report import write_report
from truthinmotion.features import depth_anything_config
from truthinmotion.models import Detector, DetectorConfig
from truthinmotion.video import probe
from truthinmotion.weights import save_random_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETUPS = {
    "tiny": ("dinov2-tiny", "depth-anything-v2-tiny", 112),
    "small-518": ("dinov2-small", "depth-anything-v2-small", 518),
    "small-224": ("dinov2-small", "depth-anything-v2-small", 224),
    "small-224-int8": ("dinov2-small", "depth-anything-v2-small", 224),
}


def make_run(root: Path, name: str) -> Path:
    from transformers import DepthAnythingForDepthEstimation

    backbone, depth, size = SETUPS[name]
    depth_dir = root / depth
    if not depth_dir.is_dir():
        torch.manual_seed(0)
        save_random_model(DepthAnythingForDepthEstimation(depth_anything_config(depth)), depth_dir)
    features = {
        "flow": {"method": "farneback", "pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3,
                 "poly_n": 5, "poly_sigma": 1.2},
        "depth": {"model": str(depth_dir), "init": "pretrained", "input_size": size},
    }
    torch.manual_seed(1)  # the same detector weights for every small setup
    model = Detector.build(DetectorConfig(backbone=backbone, modality="flow+depth"), init="random",
                           extra={"features": features}).eval()
    if name.endswith("-int8"):
        example = {m: torch.randn(2, 3, 224, 224) for m in model.cfg.modalities}
        write_variant(model, "int8", root / name, example)
        return root / name
    return model.save_pretrained(root / name)


# (option, reference): the detectors that differ by one speed option only
EFFECTS = [("small-224", "small-518"), ("small-224-int8", "small-224")]


def score_effects(probs: dict[tuple[str, str], float | None], videos: list[str]) -> dict[str, dict]:
    """Per speed option: the largest and mean |probability difference| against its reference."""
    effects = {}
    for option, ref in EFFECTS:
        diffs = [abs(probs[option, v] - probs[ref, v]) for v in videos
                 if probs.get((option, v)) is not None and probs.get((ref, v)) is not None]
        if diffs:
            effects[f"{option} vs {ref}"] = {"videos": len(diffs), "max_abs_diff": round(max(diffs), 4),
                                             "mean_abs_diff": round(sum(diffs) / len(diffs), 4)}
    return effects


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--detectors", default="tiny,small-224,small-224-int8,small-518")
    ap.add_argument("--data", default=str(DATA), help="folder searched for 1080p videos (../shared/data)")
    ap.add_argument("--report", default="small-224", help="detector whose evidence page is also timed ('' : none)")
    args = ap.parse_args()
    videos = [v for v in sorted(glob.glob(f"{args.data}/**/*.mp4", recursive=True))
              if max(probe(v).width, probe(v).height) >= 1920]
    if not videos:
        raise SystemExit(f"no 1080p videos under {args.data}")
    rows, totals, probs, pages = [], {}, {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.detectors.split(","):
            scorer = Scorer(make_run(Path(tmp), name), device=args.device)
            scorer(videos[0])  # warm-up: first calls allocate and pick kernels
            totals[name] = 0.0
            for v in videos:
                verdict = scorer(v)
                info = probe(v)
                rows.append({"detector": name, "video": Path(v).name, "resolution": f"{info.width}x{info.height}",
                             "video_seconds": round(info.frames / info.fps, 2), "status": verdict.status,
                             **{f"{k}_s": round(t, 3) for k, t in verdict.timings.items()}})
                totals[name] += verdict.timings["total"]
                probs[name, Path(v).name] = verdict.probability
                if name == args.report:  # the same video again, with evidence and its page
                    t = time.perf_counter()
                    again, evidence = scorer.score(v, evidence=4)
                    write_report(again, evidence, scorer.model_info, Path(tmp) / f"{Path(v).stem}.html")
                    with_page = time.perf_counter() - t
                    pages.append({"video": Path(v).name, "verdict_s": round(verdict.timings["total"], 3),
                                  "with_report_s": round(with_page, 3),
                                  "overhead": round(with_page / verdict.timings["total"] - 1, 3)})
    base = totals.get("small-518")
    print(json.dumps({
        "benchmark": "detect", "device": args.device, "threads": torch.get_num_threads(),
        "time_points": 32, "modality": "flow+depth", "weights": "random (detector and depth model)",
        "score_effects": score_effects(probs, [Path(v).name for v in videos]),
        "report_overhead": {"detector": args.report, "videos": pages,
                            "mean": round(sum(p["overhead"] for p in pages) / len(pages), 3) if pages else None},
        "mean_seconds_per_video": {k: round(t / len(videos), 3) for k, t in totals.items()},
        "speedup_vs_small_518": {k: round(base / t, 2) for k, t in totals.items()} if base else None,
        "rows": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
