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

With ``--data ../shared/data`` the clips are cut from the shared FF++ and DFDC videos instead, at
their own size (short side 480 to 1080): up to ``--clips`` clips of ``--frames`` frames from each
video (as many as it has), a near-lossless re-encode (libx264 CRF 18) of the c23 or DFDC source, a
clip's group its person and time, so a real clip and its fakes at the same times never cross
splits. FF++ person 634 (its original and FaceSwap 634_660) and DFDC widuwuoiur are the test
videos (``--test-clips`` clips each); the other people train (1 clip in 4 validates). The detector is ``tim run``'s on those
clips with the demo's settings, so its accuracy is not the point: the table shows what each
perturbation does to its verdicts on real footage and what a perturbed copy of a real video
costs.

With ``--augment CODES``, a second detector is trained on the same work directory with the same
settings plus ``--augment CODES`` (perturbed copies of every training clip, levels
``--augment-levels``), and both tables are printed, then their video AUC side by side.

    nice -n 10 python benchmarks/robustness.py [--out /tmp/tim-robustness] [--clips 12] [--levels 1,3,5]
        [--augment all --augment-levels 1-5] [--data ../shared/data --clips 8 --test-clips 4 --frames 32]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from truthinmotion.apps.demo import demo_config, make_demo_data
from truthinmotion.experiments.pipeline import run_study
from truthinmotion.experiments.robustness import CLEAN, RobustnessConfig, markdown_table, run_robustness
from truthinmotion.core.io import atomic_path, atomic_write_text
from truthinmotion.data.formats import FFPP_METHODS, FORMATS
from truthinmotion.data.index import IndexConfig
from truthinmotion.media.perturb import parse_levels, parse_perturbations, require_av

TEST_GROUPS = ("634", "dfdc-widuwuoiur")  # FF++ 634 with its FaceSwap fake, and a DFDC fake


def shared_videos(data: Path) -> list[tuple[Path, int, str, str]]:
    """(path, label, method, person) of every shared FF++ and DFDC video, labels as the library's own
    ffpp and dfdc formats read them (DFDC's from its metadata.json)."""
    videos = []
    for fmt in ("ffpp", "dfdc"):
        cfg = IndexConfig(format=fmt, methods=FFPP_METHODS)
        for r in FORMATS[fmt](data / fmt, cfg)[0]:
            stem = Path(r.path).stem
            person = f"dfdc-{stem}" if fmt == "dfdc" else stem.split("_")[0]
            videos.append((Path(r.path), r.label, "DFDC" if fmt == "dfdc" else ("real" if not r.label else r.method),
                           person))
    return videos


def cut_clips(src: Path, paths: list[Path], frames: int) -> list[Path]:
    """Consecutive clips of ``frames`` frames from the start of ``src``, one decoding pass, each at
    the source's size and rate (libx264 CRF 18, a near-lossless re-encode of the c23 source),
    written atomically; as many of ``paths`` as the video has frames for."""
    av = require_av()
    done: list[Path] = []
    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        decoded = inp.decode(stream)
        for dst in paths:
            with atomic_path(dst, suffix=".mp4") as tmp:
                with av.open(str(tmp), "w") as out:
                    ostream = out.add_stream("libx264", rate=rate)
                    ostream.width, ostream.height, ostream.pix_fmt = stream.width, stream.height, "yuv420p"
                    ostream.options = {"crf": "18", "preset": "fast"}
                    n = 0
                    for frame in decoded:
                        new = frame.reformat(format="yuv420p")
                        new.pts, new.time_base = n, 1 / rate
                        out.mux(ostream.encode(new))
                        n += 1
                        if n == frames:
                            break
                    out.mux(ostream.encode())
                if n < frames:  # the video ended: this clip is not made (the temporary goes)
                    tmp.unlink()
                    return done
            done.append(dst)
    return done


def shared_clips(data: Path, out: Path, clips: int, test_clips: int, frames: int) -> Path:
    """``clips.csv``: up to ``clips`` clips of every shared FF++ and DFDC video (``test_clips`` of a
    test video), grouped by person and time; the groups of TEST_GROUPS are test, the others train
    (1 clip in 4 validates). Cut once: another cut of the same folder is refused."""
    table, recipe = out / "clips.csv", {"clips": clips, "test_clips": test_clips, "frames": frames}
    made = out / "clips.json"
    if table.is_file():
        before = json.loads(made.read_text()) if made.is_file() else None
        if before != recipe:
            raise SystemExit(f"{out} holds clips cut with {before}, not {recipe}: give another --out")
        return table
    rows = []
    for path, label, method, person in shared_videos(data):
        test = person in TEST_GROUPS
        want = [out / "clips" / method / f"{path.stem}_{seg:02d}.mp4" for seg in range(test_clips if test else clips)]
        for seg, clip in enumerate(cut_clips(path, want, frames)):
            rows.append({"path": str(clip), "label": label, "video_id": f"{method}-{path.stem}_{seg:02d}",
                         "method": method, "group": person if test else f"{person}_{seg:02d}",
                         "split": "test" if test else ("val" if seg % 4 == 1 else "train")})
    if not rows:
        raise SystemExit(f"no FF++ or DFDC videos under {data}")
    with atomic_path(table) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(made, json.dumps(recipe))
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="/tmp/tim-robustness")
    p.add_argument("--clips", type=int, default=12,
                   help="generated clips per class; with --data, clips per shared video (as many as it has)")
    p.add_argument("--frames", type=int, default=40, help="frames per clip")
    p.add_argument("--points", type=int, default=8, help="time points per clip")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--perturbations", type=parse_perturbations, default=parse_perturbations("all"))
    p.add_argument("--levels", type=parse_levels, default=parse_levels("1,3,5"))
    p.add_argument("--augment", type=parse_perturbations, default=None,
                   help="also train with --augment of these types, and compare")
    p.add_argument("--augment-levels", type=parse_levels, default=parse_levels("1-5"))
    p.add_argument("--augment-copies", type=int, default=1)
    p.add_argument("--data", default=None, help="cut the clips from the shared FF++ and DFDC videos here instead")
    p.add_argument("--test-clips", type=int, default=4, help="with --data: clips per test video (at most)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    t0 = time.perf_counter()
    cfg, pretrained = demo_config(out, args.points, args.epochs)
    if args.data:
        data = shared_clips(Path(args.data), out / "data", args.clips, args.test_clips, args.frames)
        cfg = cfg.with_sections({"index": {"format": "csv"}})
    else:
        data = make_demo_data(out / "data", clips=args.clips, frames=args.frames)
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
          f"{run.evaluation.metrics['overall']['video']['count']} test clips ({args.frames} frames, "
          f"{'cut from ' + args.data if args.data else '256 px, generated'}); trained in {trained:.0f} s")
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
