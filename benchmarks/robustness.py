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

With ``--augment CODES``, a second detector is trained on the same work directory with the same
settings plus ``--augment CODES`` (perturbed copies of every training clip, levels
``--augment-levels``), and both tables are printed, then their video AUC side by side.

    nice -n 10 python benchmarks/robustness.py [--out /tmp/tim-robustness] [--clips 12] [--levels 1,3,5]
        [--augment all --augment-levels 1-5]
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
    p.add_argument("--augment", type=parse_perturbations, default=None,
                   help="also train with --augment of these types, and compare")
    p.add_argument("--augment-levels", type=parse_levels, default=parse_levels("1-5"))
    p.add_argument("--augment-copies", type=int, default=1)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    t0 = time.perf_counter()
    data = make_demo_data(out / "data", clips=args.clips, frames=args.frames)
    cfg, pretrained = demo_config(out, args.points, args.epochs)
    cfg = cfg.with_sections({"index": {"ratios": [0.5, 0.2, 0.3]}})  # more test clips than the demo's
    run = run_study(data, out, cfg, run_name="robustness", progress=False)
    trained = time.perf_counter() - t0
    rcfg = RobustnessConfig(perturbations=args.perturbations, levels=args.levels)
    result = run_robustness(out / "runs" / "robustness", out / "work", rcfg, progress=False)
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
    if args.augment:
        t1 = time.perf_counter()
        aug = cfg.with_sections({"train": {"augment": list(args.augment), "augment_levels": list(args.augment_levels),
                                           "augment_copies": args.augment_copies}})
        run_aug = run_study(data, out, aug, run_name="augment", progress=False)
        trained_aug = time.perf_counter() - t1
        with_aug = run_robustness(out / "runs" / "augment", out / "work", rcfg, progress=False)
        print(f"\nwith --augment {','.join(args.augment)} --augment-levels "
              f"{','.join(map(str, args.augment_levels))} ({args.augment_copies} per training clip): "
              f"{run_aug.evaluation.metrics['overall']['video']['count']} test clips; copies made and trained "
              f"in {trained_aug:.0f} s")
        print(markdown_table(with_aug.table))
        print("side by side: video AUC, the same test clips and copies")
        print("| perturbation | level | without --augment | with --augment |\n| --- | ---: | ---: | ---: |")
        print(f"| clean | 0 | {_auc(result.table['clean'])} | {_auc(with_aug.table['clean'])} |")
        for a, b in zip(result.table["rows"], with_aug.table["rows"]):
            print(f"| {a['perturbation']} | {a['level']} | {_auc(a['perturbed'])} | {_auc(b['perturbed'])} |")


def _auc(figures: dict) -> str:
    return "n/a" if figures["auc"] is None else f"{figures['auc']:.3f}"


if __name__ == "__main__":
    main()
