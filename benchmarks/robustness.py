"""How do a detector's verdicts hold up to the DeeperForensics-1.0 perturbations, resizing and a
bitrate cap? And what does a perturbed video cost?

A detector is trained by ``tim run`` on the demo's generated clips (truthinmotion.media.clips: a
real-style clip moves the whole portrait smoothly, a fake-style one re-renders the face in every
frame), with the demo's settings: Farnebäck flow, depth from a tiny Depth Anything V2 and a tiny
DINOv2, both with RANDOM weights unless the small pretrained ones are in the local cache. Then
``tim robustness`` (truthinmotion.experiments.robustness) scores every test clip clean and under
every perturbation and level asked (levels 1, 3 and 5 by default), each copy through the whole
pipeline; 30% of the clips are test clips. Printed: the table of
robustness.md, and as JSON the seconds per copy (making it, scoring it) against the seconds of
scoring a clean clip in the same run (the baseline: one machine's absolute times mean little on
another).

    nice -n 10 python benchmarks/robustness.py [--out /tmp/tim-robustness] [--clips 12] [--levels 1,3,5]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from truthinmotion.apps.demo import demo_config, make_demo_data
from truthinmotion.experiments.pipeline import run_study
from truthinmotion.experiments.robustness import CLEAN, RobustnessConfig, markdown_table, run_robustness
from truthinmotion.media.perturb import parse_levels, parse_perturbations


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="/tmp/tim-robustness")
    p.add_argument("--clips", type=int, default=12, help="generated clips per class")
    p.add_argument("--frames", type=int, default=40, help="frames per clip")
    p.add_argument("--points", type=int, default=8, help="time points per clip")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--perturbations", type=parse_perturbations, default=parse_perturbations("all"))
    p.add_argument("--levels", type=parse_levels, default=parse_levels("1,3,5"))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    t0 = time.perf_counter()
    data = make_demo_data(out / "data", clips=args.clips, frames=args.frames)
    cfg, pretrained = demo_config(out, args.points, args.epochs)
    cfg = cfg.with_sections({"index": {"ratios": [0.5, 0.2, 0.3]}})  # more test clips than the demo's
    run = run_study(data, out, cfg, run_name="robustness", progress=False)
    trained = time.perf_counter() - t0
    result = run_robustness(out / "runs" / "robustness", out / "work",
                            RobustnessConfig(perturbations=args.perturbations, levels=args.levels), progress=False)
    lines = [json.loads(x) for x in (result.out_dir / "verdicts.jsonl").read_text().splitlines()]
    clean = [x["seconds"]["score"] for x in lines if x["perturbation"] == CLEAN and "score" in x["seconds"]]
    per_type = {}
    for code in args.perturbations:
        mine = [x for x in lines if x["perturbation"] == code]
        make = [x["seconds"]["perturb"] for x in mine if "perturb" in x["seconds"]]
        score = [x["seconds"]["score"] for x in mine if "score" in x["seconds"]]
        per_type[code] = {"copies": len(mine), "make_s": round(float(np.mean(make)), 3) if make else None,
                          "score_s": round(float(np.mean(score)), 3) if score else None}
    print(f"weights: {'pretrained small models' if pretrained else 'tiny DINOv2 and Depth Anything V2, RANDOM'}; "
          f"{run.evaluation.metrics['overall']['video']['count']} test clips of {2 * args.clips} "
          f"({args.frames} frames, 256 px); trained in {trained:.0f} s")
    print(markdown_table(result.table))
    print(json.dumps({"clean_score_s": round(float(np.mean(clean)), 3), "per_type": per_type,
                      "robustness_s": round(time.perf_counter() - t0 - trained, 1),
                      "scored_now": result.scored, "reused": result.reused}, indent=1))


if __name__ == "__main__":
    main()
