"""Does a detector trained on pseudo-fakes catch a manipulation it never saw? Leave one kind out.

Real clips are cut from the shared real FF++ videos (``--clip-frames`` frames each, short side
360). ``tim synth`` makes one twin of every kind of every real clip (truthinmotion.synth: blend,
blend-drift, frame-wise, timing, and the frame-wise families warp, flicker, seam of
``benchmarks/learning.py``), on the frames the faces stage samples. Each held-out kind (one of the
four blend kinds) in turn: a detector is trained on real clips against the twins of every *other*
kind (``--fakes pseudo``), and tested on held-out real clips against held-out twins of the left-out
kind. Folds go over groups: a group is one source video (one person), so each fold tests on a
person no detector of that fold saw; 1 in 4 of the training people's clips validate.

The real fakes in ../shared are scored by the same detectors (trained on pseudo-fakes only), as
figures, not a claim: each FF++ fake's clips against the clips of its own original at the same
times (in the fold that tests that person); FF++ Face2Face 750_743 (no original on disk) and the
two DFDC fakes against the test fold's real clips. A shuffled-label control (training and
validation labels shuffled, flow) shows where chance puts the AUC on sets this small.

Everything runs through the library: index (csv), faces, synth, features (Farnebäck flow; depth
from a tiny Depth Anything V2 with RANDOM weights), train (tiny DINOv2 with RANDOM weights, every
block trained) and evaluate. Random weights: the figures say what these artefacts let a small
network learn from scratch on a few clips, not what a pretrained detector does on real data.

    python benchmarks/generalisation.py [--data ../shared/data] [--out /tmp/tim-generalisation]
        [--clips-per-video 4] [--modalities flow] [--folds 0] [--epochs 60]

Each detector trains for ``--epochs`` (60) without early stopping. On 2 shared cores, at 4 clips
per person, flow and its control over 3 folds (24 detectors) took 42 minutes, and the other
modalities on fold 0 (12 detectors) 33; the defaults (8 clips per person, four settings and the
control, 3 folds: 60 detectors) take hours. Finished runs are skipped, so the same command resumes.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from truthinmotion.backends.weights import save_random_model
from truthinmotion.core.errors import ConfigError
from truthinmotion.data.index import IndexConfig, index_dataset, read_manifest, write_manifest
from truthinmotion.data.pseudo import PSEUDO, is_pseudo
from truthinmotion.execution.preflight import preflight
from truthinmotion.experiments.evaluate import evaluate
from truthinmotion.faces.config import FacesConfig
from truthinmotion.faces.stage import run_faces
from truthinmotion.features import DepthConfig, FlowConfig, depth_anything_config, run_features
from truthinmotion.features.depth import check_depth
from truthinmotion.models.architecture import check_backbone
from truthinmotion.media.clips import write_video
from truthinmotion.media.video import probe, read_frames
from truthinmotion.synth.config import ALL_KINDS, KINDS, SynthConfig
from truthinmotion.synth.stage import run_synth
from truthinmotion.training.train import TrainConfig, train

CONTROL = "control: shuffled labels (flow)"


def _cut(src: Path, out: Path, name: str, clip_frames: int, clips: int, side: int) -> list[tuple[int, Path]]:
    """Clips ``(segment, path)`` of ``clip_frames`` frames from the start of ``src``, short side ``side``."""
    info = probe(src)
    scale = side / min(info.width, info.height)
    size = (round(info.width * scale) // 2 * 2, round(info.height * scale) // 2 * 2)
    frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA)
                       for _, f in read_frames(src, range(min(info.frames, clip_frames * clips)))])
    return [(seg, write_video(out / f"{name}_{seg:02d}.mp4", frames[seg * clip_frames:(seg + 1) * clip_frames]))
            for seg in range(len(frames) // clip_frames)]


def make_clips(out: Path, data: Path, clip_frames: int, clips: int) -> Path:
    """Real clips (group: their person), FF++ and DFDC fake clips at the same times; ``clips.csv``."""
    table = out / "clips.csv"
    if table.is_file():
        return table
    rows = []
    originals = sorted((data / "ffpp" / "original_sequences").glob("**/*.mp4"))
    if not originals:
        raise SystemExit(f"no real FF++ videos under {data}")
    for src in originals:
        for seg, path in _cut(src, out / "clips" / "real", src.stem, clip_frames, clips, 360):
            rows.append({"path": str(path), "label": 0, "video_id": f"real-{src.stem}_{seg:02d}", "group": src.stem,
                         "method": "real", "split": "train"})
    for src in sorted((data / "ffpp" / "manipulated_sequences").glob("*/c23/videos/*.mp4")):
        method = src.parts[-4]
        for seg, path in _cut(src, out / "clips" / method, src.stem, clip_frames, clips, 360):
            rows.append({"path": str(path), "label": 1, "video_id": f"{method}-{src.stem}_{seg:02d}",
                         "group": src.stem.split("_")[0], "method": method, "split": "train"})
    for src in sorted((data / "dfdc").glob("*/*.mp4")):
        for seg, path in _cut(src, out / "clips" / "DFDC", src.stem, clip_frames, clips, 360):
            rows.append({"path": str(path), "label": 1, "video_id": f"DFDC-{src.stem}_{seg:02d}",
                         "group": f"dfdc-{src.stem}", "method": "DFDC", "split": "train"})
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return table


def fold_manifest(base: list[dict], people: list[str], fold: int, held: str, shuffle: bool) -> list[dict]:
    """The rows of one (fold, held-out kind): the fold's person is test; the others train (1 clip in
    4 validates); twins follow their source; training and validation twins of every kind but
    ``held``, test twins of ``held`` only; dataset fakes only in test (of the test person, or of no
    person on disk: 750_743, DFDC)."""
    test = people[fold]
    split = {}
    for r in base:
        if r["label"] == 0 and not is_pseudo(r):
            seg = int(r["video_id"].rsplit("_", 1)[1])
            split[r["video_id"]] = "test" if r["group"] == test else ("val" if seg % 4 == 1 else "train")
    rows = []
    for r in base:
        if is_pseudo(r):
            s = split[r["source"]]
            if (r["method"] == PSEUDO + held) != (s == "test"):
                continue
        elif r["label"] == 0:
            s = split[r["video_id"]]
        elif r["group"] == test or r["group"] not in people:
            s = "test"
        else:
            continue
        rows.append({**r, "split": s})
    if shuffle:
        rng = np.random.default_rng(fold)
        for name in ("train", "val"):
            part = [r for r in rows if r["split"] == name]
            labels = [r["label"] for r in part]
            rng.shuffle(labels)
            for r, lab in zip(part, labels):
                r["label"] = lab
                r["method"] = "real" if lab == 0 else PSEUDO + "shuffled"  # --fakes pseudo keeps them all
                r.pop("source", None)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default="/tmp/tim-generalisation")
    ap.add_argument("--clip-frames", type=int, default=24)
    ap.add_argument("--clips-per-video", type=int, default=8)
    ap.add_argument("--points", type=int, default=16, help="time points per clip")
    # From scratch, a tiny detector needs many epochs: flow held out frame-wise, fold 0, gave video
    # AUC 0.75 after 20 epochs and 1.0 after 60 (4 clips per person).
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--modalities", default="flow,depth,rgb,flow+depth+rgb", help="comma-separated")
    ap.add_argument("--held-out", default=",".join(KINDS), help="kinds held out in turn, comma-separated")
    ap.add_argument("--pretrained", action="store_true",
                    help="pretrained DINOv2-small (its last block trained, the study's setting) and Depth Anything V2 "
                         "small, from the local cache or HF_HOME, at 224 px, instead of tiny random ones; "
                         "give another --out")
    ap.add_argument("--folds", default=None, help="folds to run, comma-separated (default: one per person)")
    ap.add_argument("--workers", type=int, default=1, help="processes for faces, synth and features")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    t0 = time.perf_counter()
    out = Path(args.out)
    if args.pretrained:  # before any clip is cut: the weights are found, or the error says where to put them
        try:
            preflight(models=[lambda: check_backbone("dinov2-small"),
                              lambda: check_depth(DepthConfig(model="depth-anything-v2-small"))])
        except ConfigError as err:
            raise SystemExit(f"--pretrained: {err}") from None
    table = make_clips(out, Path(args.data), args.clip_frames, args.clips_per_video)
    base = out / "work"
    size = 224 if args.pretrained else 112
    faces = FacesConfig(num_points=args.points, size=size)
    if not (base / "manifest.csv").is_file():
        index_dataset(table, base, IndexConfig(format="csv"))
    run_faces(base, faces, workers=args.workers, progress=False)
    made = run_synth(base, SynthConfig(kinds=ALL_KINDS, per_video=len(ALL_KINDS)), faces, workers=args.workers,
                     progress=False)
    depth_dir = out / "depth-anything-v2-tiny-random"
    if not args.pretrained and not (depth_dir / "config.json").is_file():
        from transformers import DepthAnythingForDepthEstimation

        torch.manual_seed(0)
        save_random_model(DepthAnythingForDepthEstimation(depth_anything_config("depth-anything-v2-tiny")), depth_dir)
    depth = DepthConfig(model="depth-anything-v2-small" if args.pretrained else str(depth_dir), input_size=size)
    run_features(base, FlowConfig(), depth, workers=args.workers, progress=False)
    rows = read_manifest(base)
    people = sorted({r["group"] for r in rows if r["label"] == 0 and not is_pseudo(r)})
    modalities = args.modalities.split(",")
    held_out = args.held_out.split(",")
    results: list[dict] = []
    folds = [int(f) for f in args.folds.split(",")] if args.folds else range(len(people))
    for fold in folds:
        for held in held_out:
            for setting in [*modalities, CONTROL]:
                control = setting == CONTROL
                modality = "flow" if control else setting
                work = out / "folds" / f"{fold}-{held}{'-shuffled' if control else ''}"
                if not (work / "manifest.csv").is_file():
                    work.mkdir(parents=True, exist_ok=True)
                    for sub in ("faces", "flow", "depth"):  # the same artifacts: linked, not copied
                        if not (work / sub).exists():
                            os.symlink((base / sub).resolve(), work / sub)
                    write_manifest(work, fold_manifest(rows, people, fold, held, control))
                run = out / "runs" / f"{fold}-{held}-{'control' if control else modality.replace('+', '-')}"
                if not (run / "best").is_dir():
                    model = (dict(backbone="dinov2-small", init="pretrained", train_blocks=1, lr=1e-4)
                             if args.pretrained else dict(backbone="dinov2-tiny", init="random", train_blocks=-1, lr=1e-3))
                    cfg = TrainConfig(**model, image_size=size, modality=modality, depth=depth.key, epochs=args.epochs,
                                      patience=args.epochs, batch_size=8, train_points=8, workers=0, progress=False,
                                      seed=fold, fakes="pseudo")
                    train(work, cfg, run)
                ev_work = out / "folds" / f"{fold}-{held}" if control else work  # the control is tested on true labels
                if control and not (ev_work / "manifest.csv").is_file():
                    raise SystemExit(f"{ev_work}: the control needs its fold's manifest")
                # the control's own manifest holds shuffled labels: its split is the fold's all the same
                m = evaluate(run, "test", ev_work, progress=False, out_dir=run / "eval",
                             allow_split_change=control).metrics
                row = {"fold": fold, "held_out": held, "setting": setting,
                       "test_person": people[fold],
                       "held_out_auc": m["per_method"][PSEUDO + held]["video"]["auc"],
                       "real_fakes": {k: v["video"]["auc"] for k, v in m["per_method"].items()
                                      if not k.startswith(PSEUDO)}}
                results.append(row)
                print(json.dumps(row), flush=True)
    settings = [*modalities, CONTROL]
    print(f"\ntwins: {made.twins.summary().splitlines()[0]}; clips: {len(people)} people x {args.clips_per_video}; "
          f"{args.epochs} epochs; "
          f"{'pretrained DINOv2-small and Depth Anything V2 small' if args.pretrained else 'RANDOM weights (tiny DINOv2, tiny Depth Anything V2)'}\n")
    print("| setting | " + " | ".join(f"held out: {k}" for k in held_out) + " | mean | min |")
    print("| --- | " + " | ".join("---:" for _ in held_out) + " | ---: | ---: |")
    summary = {}
    for s in settings:
        per = [float(np.mean([r["held_out_auc"] for r in results if r["setting"] == s and r["held_out"] == k]))
               for k in held_out]
        every = [r["held_out_auc"] for r in results if r["setting"] == s]
        summary[s] = {"per_kind": dict(zip(held_out, per)), "mean": float(np.mean(every)), "min": float(np.min(every))}
        print(f"| {s} | " + " | ".join(f"{v:.3f}" for v in per) + f" | {np.mean(every):.3f} | {np.min(every):.3f} |")
    methods = sorted({k for r in results for k in r["real_fakes"]})
    print("\nReal fakes of ../shared, scored by the detectors above (trained on pseudo-fakes only), video AUC "
          "against real clips (mean over folds and held-out kinds where the fake is tested):\n")
    print("| setting | " + " | ".join(methods) + " |")
    print("| --- | " + " | ".join("---:" for _ in methods) + " |")
    for s in settings:
        vals = []
        for k in methods:
            got = [r["real_fakes"][k] for r in results if r["setting"] == s and k in r["real_fakes"]]
            vals.append(f"{np.mean(got):.3f} ({len(got)})" if got else "")
        print(f"| {s} | " + " | ".join(vals) + " |")
    print(json.dumps({"benchmark": "generalisation", "minutes": round((time.perf_counter() - t0) / 60, 1),
                      "weights": "pretrained (DINOv2-small; Depth Anything V2 small)" if args.pretrained
                      else "random (tiny DINOv2; tiny Depth Anything V2)", "summary": summary,
                      "runs": results}, indent=2))


if __name__ == "__main__":
    main()
