"""Which encodings let a detector learn? Real clips against the same clips with frame-wise artefacts.

Real clips are cut from the shared real FF++ videos (24 frames each, short side 360). Each has a
fake twin whose face region (MTCNN boxes, a feathered ellipse) is altered frame by frame the way
frame-wise synthesis does, one kind per twin, in turn:

  warp     an independent small affine warp of the face each frame (about 1.5 px, 3%, 1.5 degrees)
  flicker  an independent colour gain on the face each frame (about 6% per channel)
  timing   the face taken from a neighbouring frame (t-2 .. t+2, never t) each frame: resampled timing
  seam     the face shifted 1.5 px with a blending mask whose edge moves each frame

The twins are made by the package's pseudo-fake kinds (truthinmotion.synth.kinds), over every frame
of a clip; ``benchmarks/generalisation.py`` uses the same kinds on the sampled frames.

A real clip and its twin share a group, so no split separates them. The groups are dealt into
``--folds`` folds; each fold is the test split once (15% of the other groups validate, the rest
train), so every clip is tested once and each setting reports the mean test AUC over the folds.
Everything runs through the library: `tim index` (csv), faces, features (Farnebäck flow; depth from a tiny Depth Anything V2
with RANDOM weights, so depth figures say nothing about pretrained depth), train (tiny DINOv2,
random weights, every block trained: nothing pretrained to keep) and evaluate on the held-out
test split. A shuffled-label control (the default flow encoding, training and validation labels
shuffled) shows how far from 0.5 chance alone moves the AUC on splits this size.

    python benchmarks/learning.py [--data ../shared/data] [--folds 3] [--out /tmp/tim-learning]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from truthinmotion.faces.mtcnn import FaceDetector
from truthinmotion.faces.config import FacesConfig
from truthinmotion.faces.stage import run_faces
from truthinmotion.features import DepthConfig, FlowConfig, depth_anything_config, run_features
from truthinmotion.experiments.evaluate import evaluate
from truthinmotion.data.index import IndexConfig, index_dataset
from truthinmotion.media.clips import write_video
from truthinmotion.training.train import TrainConfig, train
from truthinmotion.media.video import probe, read_frames
from truthinmotion.backends.weights import save_random_model
from truthinmotion.synth.config import SynthConfig
from truthinmotion.synth.kinds import make_twin

KINDS = ("warp", "flicker", "timing", "seam")
# Every encoding setting is given in full, so a change of the library's defaults cannot move a row.
_STUDY_FLOW = {"flow_encoding": "hsv-per-picture", "flow_relative": False}
_FIXED = {"flow_encoding": "hsv-fixed", "flow_max": 4.0, "flow_relative": False}
_POLAR = {"flow_encoding": "polar-log", "flow_max": 4.0, "flow_relative": False}
_RELATIVE = {**_FIXED, "flow_relative": True}
SETTINGS = {  # name: (modality, data settings)
    "flow hsv-per-picture (study)": ("flow", _STUDY_FLOW),
    "flow hsv-fixed 4px": ("flow", _FIXED),
    "flow polar-log 4px": ("flow", _POLAR),
    "flow hsv-fixed 4px relative": ("flow", _RELATIVE),
    "depth crop-minmax (study)": ("depth", {"depth_encoding": "crop-minmax"}),
    "depth face-minmax": ("depth", {"depth_encoding": "face-minmax"}),
    "flow+depth hsv-fixed 4px relative, face-minmax": ("flow+depth", {**_RELATIVE, "depth_encoding": "face-minmax"}),
    "flow+depth hsv-per-picture, crop-minmax (study)": ("flow+depth", {**_STUDY_FLOW, "depth_encoding": "crop-minmax"}),
}


def _face_boxes(frames: np.ndarray, detector: FaceDetector, every: int = 4) -> np.ndarray:
    """The most probable face's box in every frame ``[T, 4]``, detected every ``every`` frames
    and interpolated (NaN where none was ever found)."""
    idx = list(range(0, len(frames), every)) + [len(frames) - 1]
    found = detector(list(frames[idx]), 16)
    pts, boxes = [], []
    for i, d in zip(idx, found):
        if len(d):
            pts.append(i)
            boxes.append(d[int(np.argmax(d[:, 4])), :4])
    if not pts:
        return np.full((len(frames), 4), np.nan)
    boxes = np.array(boxes)
    return np.stack([np.interp(np.arange(len(frames)), pts, boxes[:, c]) for c in range(4)], 1)


def make_fake(frames: np.ndarray, boxes: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """The clip with its face altered frame by frame (see the module docstring): the package's
    pseudo-fake kinds (truthinmotion.synth.kinds) over every frame of the clip."""
    twin, _, _ = make_twin(kind, dict(enumerate(frames)), np.arange(len(frames) - 1), boxes[:-1], SynthConfig(), rng,
                           last=len(frames) - 1)
    return np.stack([twin[i] for i in range(len(frames))])


def make_data(out: Path, data: Path, clip_frames: int, per_video: int, side: int) -> Path:
    """Real clips and their fake twins, and ``clips.csv`` for ``tim index --format csv``."""
    table = out / "clips.csv"
    if table.is_file():
        return table
    detector = FaceDetector.from_config(FacesConfig())
    sources = sorted((data / "ffpp" / "original_sequences").glob("**/*.mp4"))
    if not sources:
        raise SystemExit(f"no real FF++ videos under {data}")
    rng = np.random.default_rng(0)
    rows, n = [], 0
    for src in sources:
        info = probe(src)
        scale = side / min(info.width, info.height)
        size = (round(info.width * scale) // 2 * 2, round(info.height * scale) // 2 * 2)
        frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA)
                           for _, f in read_frames(src, range(min(info.frames, clip_frames * per_video)))])
        for seg in range(len(frames) // clip_frames):
            clip = frames[seg * clip_frames:(seg + 1) * clip_frames]
            boxes = _face_boxes(clip, detector)
            if np.isnan(boxes[:, 0]).any():
                continue
            kind = KINDS[n % len(KINDS)]
            n += 1
            group = f"{src.stem}_{seg:02d}"
            real = write_video(out / "clips" / "real" / f"{group}.mp4", clip)
            fake = write_video(out / "clips" / kind / f"{group}.mp4", make_fake(clip, boxes, kind, rng))
            rows += [{"path": str(real), "label": 0, "video_id": f"real-{group}", "group": group, "method": "real"},
                     {"path": str(fake), "label": 1, "video_id": f"{kind}-{group}", "group": group, "method": kind}]
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default="/tmp/tim-learning")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--clip-frames", type=int, default=24)
    ap.add_argument("--clips-per-video", type=int, default=14)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--points", type=int, default=16, help="time points per clip")
    ap.add_argument("--settings", help="comma-separated names of SETTINGS (default: all)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    out = Path(args.out)
    table = make_data(out, Path(args.data), args.clip_frames, args.clips_per_video, side=360)
    depth_dir = out / "depth-anything-v2-tiny-random"
    if not (depth_dir / "config.json").is_file():
        from transformers import DepthAnythingForDepthEstimation

        torch.manual_seed(0)
        save_random_model(DepthAnythingForDepthEstimation(depth_anything_config("depth-anything-v2-tiny")), depth_dir)
    depth = DepthConfig(model=str(depth_dir), input_size=112)
    names = args.settings.split(",") if args.settings else list(SETTINGS) + ["control: shuffled labels"]
    results: dict[str, list[dict]] = {n: [] for n in names}
    base_work = out / "work-0"
    with open(table, newline="") as f:
        clips = list(csv.DictReader(f))
    groups = sorted({c["group"] for c in clips})
    np.random.default_rng(0).shuffle(groups)
    for seed in range(args.folds):
        work = out / f"work-{seed}"
        if not (work / "manifest.csv").is_file():
            test = set(groups[seed::args.folds])
            rest = [g for g in groups if g not in test]
            val = set(rest[: max(2, round(0.15 * len(rest)))])
            fold = out / f"fold-{seed}.csv"
            with open(fold, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=[*clips[0], "split"])
                w.writeheader()
                w.writerows({**c, "split": "test" if c["group"] in test else "val" if c["group"] in val else "train"}
                            for c in clips)
            index_dataset(fold, work, IndexConfig(format="csv"))
            if work != base_work and (base_work / "depth").is_dir():  # the same clips: reuse crops and features
                for sub in ("faces", "flow", "depth"):
                    shutil.copytree(base_work / sub, work / sub, dirs_exist_ok=True)
        run_faces(work, FacesConfig(num_points=args.points), progress=False)
        run_features(work, FlowConfig(), depth, progress=False)
        for name in names:
            control = name.startswith("control")
            modality, data = SETTINGS["flow hsv-fixed 4px relative"] if control else SETTINGS[name]
            run = out / "runs" / f"{seed}-{name.replace(' ', '_').replace('(', '').replace(')', '').replace('+', 'p')}"
            if control:  # the same clips, with every training and validation label shuffled
                work_c = out / f"work-{seed}-shuffled"
                if not (work_c / "manifest.csv").is_file():
                    shutil.copytree(work, work_c, dirs_exist_ok=True)
                    with open(work_c / "manifest.csv", newline="") as f:
                        rows = list(csv.DictReader(f))
                    rng = np.random.default_rng(seed)
                    for split in ("train", "val"):
                        part = [r for r in rows if r["split"] == split]
                        labels = [r["label"] for r in part]
                        rng.shuffle(labels)
                        for r, lab in zip(part, labels):
                            r["label"] = lab
                    with open(work_c / "manifest.csv", "w", newline="") as f:
                        w = csv.DictWriter(f, fieldnames=list(rows[0]))
                        w.writeheader()
                        w.writerows(rows)
            if not (run / "best").is_dir():
                cfg = TrainConfig(backbone="dinov2-tiny", init="random", image_size=112, modality=modality, train_blocks=-1,
                                  depth=depth.key, epochs=args.epochs, patience=args.epochs, batch_size=8,
                                  train_points=8, lr=1e-3, workers=0, progress=False, seed=seed, **data)
                train(work_c if control else work, cfg, run)
            m = evaluate(run, "test", work, progress=False, out_dir=run / "eval").metrics["overall"]
            results[name].append({"fold": seed, "video_auc": m["video"]["auc"], "frame_auc": m["frame"]["auc"],
                                  "test_videos": m["video"]["count"]})
            print(json.dumps({"setting": name, **results[name][-1]}), flush=True)
    rows = []
    for name, rs in results.items():
        rows.append({"setting": name, "video_auc": round(float(np.mean([r["video_auc"] for r in rs])), 3),
                     "video_auc_min": round(float(np.min([r["video_auc"] for r in rs])), 3),
                     "frame_auc": round(float(np.mean([r["frame_auc"] for r in rs])), 3), "folds": len(rs)})
    print("\n| setting | video AUC (mean) | video AUC (min) | frame AUC (mean) | folds |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['setting']} | {r['video_auc']} | {r['video_auc_min']} | {r['frame_auc']} | {r['folds']} |")
    print(json.dumps({"benchmark": "learning", "minutes": round((time.perf_counter() - t0) / 60, 1),
                      "weights": "random (tiny DINOv2; tiny Depth Anything V2)", "rows": rows,
                      "runs": results}, indent=2))


if __name__ == "__main__":
    main()
