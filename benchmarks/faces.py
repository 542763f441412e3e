"""Faces stage vs the baseline: MTCNN on every sampled frame at full resolution.

Both run in this process, on the same videos and the same K sampled time points, and both decode
their frames with the same streaming reader, so the ratio compares whole per-video work:

  baseline  facenet-pytorch MTCNN (default settings) called on frame t of every time point at
            full resolution; its most probable face is the reference box.
  batched   the same MTCNN on every time point at once, frames downscaled to the project's
            300-pixel short side and the project's minimum face and thresholds: the cost of
            detecting everywhere at the project's scale, so the gain of tracking shows on its own.
  project   ``extract_faces``: downscaled detection on a subset of points, tracking, smoothing,
            and the crops of both frames of every pair (work the baselines do not even do).

Prints JSON: sampled frames per second for each, the speed ratios, and the mean IoU of the
project's and the batched boxes against the baseline's (points where both found a face), per
video and overall.
Decoding the same frames is timed alone too: it is a floor both share (the videos' keyframes are
~250 frames apart, so seeking costs more than reading through), ``ratio_excluding_decode``
compares the face work alone, and ``ceiling_ratio_decode_only`` is the baseline's time over the
decoding alone: the most any face work could reach with this decoder.

    python benchmarks/faces.py [--data ../shared/data] [--points 32] [--repeats 1]
"""

from __future__ import annotations

import argparse
import glob
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from truthinmotion.faces.mtcnn import FaceDetector, box_iou
from truthinmotion.faces.config import FacesConfig
from truthinmotion.faces.extract import extract_faces
from truthinmotion.media.video import probe, read_frames, sample_points


def baseline(path: str, k: int, mtcnn) -> np.ndarray:
    """Most probable face box at each sampled point, MTCNN on full frames: ``[K, 4]`` (NaN: none)."""
    points = sample_points(probe(path).frames, k)
    boxes = np.full((len(points), 4), np.nan)
    frames = dict(read_frames(path, points))
    for i, t in enumerate(points):
        b, p = mtcnn.detect(frames[int(t)])
        if b is not None:
            boxes[i] = b[int(np.argmax(p))]
    return boxes


def batched(path: str, k: int, mtcnn, side: int) -> np.ndarray:
    """MTCNN on all K frames in one call at a ``side``-pixel short side: ``[K, 4]`` full-res boxes."""
    points = sample_points(probe(path).frames, k)
    frames = [f for _, f in read_frames(path, points)]
    h, w = frames[0].shape[:2]
    scale = min(1.0, side / min(h, w))
    size = (round(w * scale), round(h * scale))
    small = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    boxes = np.full((len(points), 4), np.nan)
    found, probs = mtcnn.detect(small)
    for i, (b, p) in enumerate(zip(found, probs)):
        if b is not None:
            boxes[i] = b[int(np.argmax(p))] / scale
    return boxes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--points", type=int, default=32)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    videos = sorted(glob.glob(f"{args.data}/ffpp/**/*.mp4", recursive=True))
    videos += sorted(glob.glob(f"{args.data}/dfdc/**/*.mp4", recursive=True))
    if not videos:
        raise SystemExit(f"no videos under {args.data}")
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True)
    cfg = FacesConfig(num_points=args.points)
    mtcnn_300 = MTCNN(keep_all=True, min_face_size=cfg.min_face, thresholds=[*cfg.thresholds, cfg.min_score])
    detector = FaceDetector(cfg.min_face, cfg.min_score, cfg.thresholds)
    # Warm both paths once so neither pays one-off start-up costs inside the timing.
    baseline(videos[0], 2, mtcnn)
    batched(videos[0], 2, mtcnn_300, cfg.detect_side)
    extract_faces(videos[0], cfg.updated({"num_points": 2}), detector)

    rows, t_base, t_batch, t_proj, t_dec, ious, ious_batch = [], 0.0, 0.0, 0.0, 0.0, [], []
    for v in videos:
        points = sample_points(probe(v).frames, args.points)
        td = time.perf_counter()
        for _ in read_frames(v, np.concatenate([points, points + 1]), rgb=False):
            pass
        t0 = time.perf_counter()
        ref = baseline(v, args.points, mtcnn)
        t1 = time.perf_counter()
        faces = extract_faces(v, cfg, detector)
        t2 = time.perf_counter()
        fast = batched(v, args.points, mtcnn_300, cfg.detect_side)
        t3 = time.perf_counter()
        both = ~np.isnan(ref[:, 0]) & faces.valid
        iou = box_iou(ref[both], faces.boxes[both].astype(np.float64))
        both_b = ~np.isnan(ref[:, 0]) & ~np.isnan(fast[:, 0])
        iou_b = box_iou(ref[both_b], fast[both_b])
        info = probe(v)
        rows.append({
            "video": Path(v).name,
            "resolution": f"{info.width}x{info.height}",
            "baseline_s": round(t1 - t0, 3),
            "batched_s": round(t3 - t2, 3),
            "project_s": round(t2 - t1, 3),
            "decode_s": round(t0 - td, 3),
            "ratio": round((t1 - t0) / (t2 - t1), 2),
            "ratio_vs_batched": round((t3 - t2) / (t2 - t1), 2),
            "mean_iou": round(float(iou.mean()), 4) if both.any() else None,
            "batched_mean_iou": round(float(iou_b.mean()), 4) if both_b.any() else None,
            "baseline_face_points": int((~np.isnan(ref[:, 0])).sum()),
            "project_face_points": int(faces.valid.sum()),
            "project_whole_frame_detections": faces.meta["whole_frame_detections"],
        })
        t_dec += t0 - td
        t_base += t1 - t0
        t_proj += t2 - t1
        t_batch += t3 - t2
        ious.extend(iou.tolist())
        ious_batch.extend(iou_b.tolist())
    n = len(videos) * args.points
    print(json.dumps({
        "benchmark": "faces",
        "videos": len(videos),
        "points_per_video": args.points,
        "threads": args.threads,
        "baseline_fps": round(n / t_base, 2),
        "batched_300_fps": round(n / t_batch, 2),
        "project_fps": round(n / t_proj, 2),
        "ratio": round(t_base / t_proj, 2),
        "ratio_vs_batched_300": round(t_batch / t_proj, 2),
        "decode_share_of_project": round(t_dec / t_proj, 3),
        "ratio_excluding_decode": round((t_base - t_dec) / (t_proj - t_dec), 2),
        # the ratio if finding, tracking and cropping faces took no time at all: decoding bounds it
        "ceiling_ratio_decode_only": round(t_base / t_dec, 2),
        "mean_iou": round(float(np.mean(ious)), 4),
        "batched_300_mean_iou": round(float(np.mean(ious_batch)), 4),
        "min_video_iou": min(r["mean_iou"] for r in rows if r["mean_iou"] is not None),
        "per_video": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
