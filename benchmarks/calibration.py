"""Does calibration make the probability mean what it says? ECE and Brier before and after, held out.

The demo's generated clips (real stages: MTCNN, Farnebäck flow, tiny random-weight Depth
Anything V2 and DINOv2, as `tim demo` uses), one real clip to three fakes as in FaceForensics++
(so the loss's class weighting shifts the scores), split 0.4/0.3/0.3 by several seeds. Each
seed trains a detector; its calibration is fitted on the validation split during training and
measured on the test split, which it never saw: expected calibration error (15 bins) and Brier
score of the video score before calibration and of the calibrated probability after, with the
method training chose and why (identity below 10 validation videos of a class: ``--fakes 48``
leaves about 5 real ones, so pass ``--fakes 120`` or more to see Platt scaling weighed).

    python benchmarks/calibration.py [--out /tmp/tim-calibration] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from truthinmotion.apps.demo import demo_config, make_demo_data
from truthinmotion.experiments.evaluate import evaluate
from truthinmotion.faces.stage import run_faces
from truthinmotion.features import run_features
from truthinmotion.data.index import IndexConfig, index_dataset
from truthinmotion.training.train import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/tim-calibration")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--fakes", type=int, default=48)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    data = make_demo_data(out / "data", clips=args.fakes)
    for extra in sorted((data / "real").glob("*.mp4"))[args.fakes // 3:]:  # one real to three fakes
        extra.unlink()
    cfg, _ = demo_config(out)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        work = out / f"work-{seed}"
        if not (work / "manifest.csv").is_file():
            index_dataset(data, work, IndexConfig(format="folder", ratios=(0.4, 0.3, 0.3), seed=seed))
            if seed != 0 and (out / "work-0" / "faces").is_dir():  # the same videos: reuse the crops and features
                for sub in ("faces", "flow", "depth"):
                    shutil.copytree(out / "work-0" / sub, work / sub, dirs_exist_ok=True)
        run_faces(work, cfg.faces, progress=False)
        run_features(work, cfg.flow, cfg.depth, progress=False)
        run = out / f"run-{seed}"
        if not (run / "best").is_dir():
            train(work, cfg.train.updated({"seed": seed, "progress": False, "depth": cfg.depth.key}), run)
        m = evaluate(run, "test", out_dir=out / f"eval-{seed}", progress=False).metrics
        c = m["calibration"]
        rows.append({"seed": seed, "test_videos": m["overall"]["video"]["count"],
                     "test_real": m["overall"]["video"]["real"], "video_auc": round(m["overall"]["video"]["auc"], 4),
                     "calibration": {k: round(v, 3) for k, v in c.items() if isinstance(v, float)},
                     "method": c["method"], "why": c["reason"],
                     **{k: round(c[k], 4) for k in ("ece_before", "ece_after", "brier_before", "brier_after")}})
        print(json.dumps(rows[-1]), flush=True)
    mean = {k: round(float(np.mean([r[k] for r in rows])), 4)
            for k in ("ece_before", "ece_after", "brier_before", "brier_after")}
    print(json.dumps({"benchmark": "calibration", "weights": "random (tiny DINOv2 and Depth Anything V2)",
                      "split": "test (held out; calibration fitted on val)", "mean": mean, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
