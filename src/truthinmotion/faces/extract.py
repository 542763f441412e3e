"""Faces stage: sampled frame pairs, every face tracked through them, square crops.

For K evenly spaced time points t the frames t and t+1 are decoded as a stream. Faces are found
with MTCNN (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks", 2016; the facenet-pytorch weights, as in the original study) on whole
frames downscaled so their short side is ``detect_side``, at every ``detect_every``-th point.
Detections are linked into tracks by overlap; up to ``max_faces`` tracks are kept, the main one
(largest and most confident over time) first, then the others by the same weight. Each face is
then followed to every point by MTCNN's last stage (O-net), which regresses the box from where
its track predicts it on the full-resolution frame, in one batch: boxes as precise as
full-resolution MTCNN for a small fraction of its cost. Points where a face is lost are
interpolated inside its track. Both frames of a pair are cropped with the same square box,
``box_scale`` times the face box, resized to ``size``.

The artifact (``faces/<id>.npz``, schema 3) has a track axis T (1 to ``max_faces``, the main face
first): ``frame_index [K]``, ``boxes [T, K, 4]``, ``scores [T, K]``, ``detected [T, K]``, and the
crops ``[T, K, 2, S, S, 3]`` as one JPEG each (``crop_format``; see :mod:`..data.compact`), which
:meth:`Faces.load` and :func:`load_crops` decode. Schema 2 (the crops as a uint8 array) still
reads; schema 1 (no track axis: the main face alone) reads as T = 1.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..core.errors import StageError
from ..core.io import source_identity
from .mtcnn import FaceDetector, box_iou, crop_square
from .tracking import fill, hold, link, smooth, track_weight
from ..media.video import VideoInfo, probe, read_frames, sample_points
from .artifact import Faces, Track
from .config import FacesConfig

__all__ = ["check_memory", "extract_faces", "faces_from_frames"]

log = logging.getLogger(__name__)


def extract_faces(path: str | Path, cfg: FacesConfig, detector: FaceDetector) -> Faces:
    """Decode, detect, track and crop every face of one video (see the module docstring).

    1. Whole-frame MTCNN on frames downscaled to a ``detect_side`` short side, at every
       ``detect_every``-th time point: finds the faces and their tracks; the main one and up to
       ``max_faces - 1`` others seen at least ``min_track`` as often are kept.
    2. For each kept face, at every time point, MTCNN's last stage (O-net) on the
       full-resolution face at the track's predicted box, ``refine_steps`` times, one batch for
       the whole video: the box is regressed as the cascade would, without an image pyramid or
       a candidate search.
    3. Points where O-net no longer sees a face get a whole-frame detection; points still
       without that face are interpolated inside its track, NaN outside it.
    """
    info = probe(path)
    points = sample_points(info.frames, cfg.num_points)
    wanted = np.unique(np.concatenate([points, points + 1]))
    check_memory(info, len(wanted), cfg)
    frames = dict(read_frames(path, wanted, max_side=cfg.max_frame_side, rgb=False))  # BGR
    return faces_from_frames(frames, points, info, cfg, detector)


def check_memory(info: VideoInfo, frames: int, cfg: FacesConfig) -> None:
    """Refuse (``too_large``) a video whose ``frames`` kept frames would need more than
    ``cfg.max_memory_mb``."""
    keep = min(1.0, cfg.max_frame_side / max(info.width, info.height))
    need_mb = frames * round(info.width * keep) * round(info.height * keep) * 3 / 2**20
    if need_mb > cfg.max_memory_mb:
        raise StageError("too_large", f"{frames} frames of {info.width}x{info.height} need {need_mb:.0f} MB, over "
                                      f"max_memory_mb={cfg.max_memory_mb}: lower --points or max_frame_side")


def faces_from_frames(
    frames: dict[int, np.ndarray], points: np.ndarray, info: VideoInfo, cfg: FacesConfig, detector: FaceDetector,
) -> Faces:
    """Steps 1 to 3 of :func:`extract_faces` on decoded frames: ``frames`` maps every ``t`` and
    ``t + 1`` of ``points`` to a BGR frame ``[H, W, 3]`` as :func:`read_frames` keeps it (at most
    ``max_frame_side``). A pseudo-fake (:mod:`truthinmotion.synth`) is its source's frames, altered,
    through this same function: its crops are made exactly as a real video's."""
    path = info.path
    k = len(points)
    full_h, full_w = info.height, info.width
    keep_scale = frames[int(points[0])].shape[1] / full_w  # kept frames vs original pixels

    det_scale = min(1.0, cfg.detect_side / min(full_w, full_h))
    det_size = (max(1, round(full_w * det_scale)), max(1, round(full_h * det_scale)))
    whole: dict[int, np.ndarray] = {}  # point -> [n, 5] in original pixels

    def detect_whole(which: Sequence[int]) -> None:
        todo = [i for i in which if i not in whole]
        small = [
            cv2.cvtColor(cv2.resize(frames[int(points[i])], det_size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
            for i in todo
        ]
        for i, d in zip(todo, detector(small, cfg.batch_size) if todo else []):
            whole[i] = d * np.array([1 / det_scale] * 4 + [1], np.float32)

    detect_whole(sorted(set(range(0, k, cfg.detect_every)) | {k - 1}))
    tracks = link(whole)
    if not tracks:  # the face may appear only between the first pass's points
        detect_whole(range(k))
        tracks = link(whole)
    if not tracks:
        raise StageError("no_face", f"no face with probability >= {cfg.min_score} at {k} time points")
    tracks = sorted(tracks, key=track_weight, reverse=True)
    least = cfg.min_track * len(tracks[0])  # a further face must be seen about as often
    kept = [tracks[0]] + [t for t in tracks[1:] if len(t) >= least][: cfg.max_faces - 1]

    frames_t = [frames[int(t)] for t in points]
    followed = [_follow(track, k, frames_t, whole, detect_whole, keep_scale, cfg, detector) for track in kept]
    if followed[0] is None:
        raise StageError("no_face", f"the main face was lost at all {k} time points")
    followed = [f for f in followed if f is not None]
    results = []
    for boxes, scores, detected, _ in followed:
        crops = np.zeros((k, 2, cfg.size, cfg.size, 3), np.uint8)
        for i, t in enumerate(points):
            if np.isnan(boxes[i, 0]):
                continue
            for j in (0, 1):
                crop = crop_square(frames[int(t) + j], boxes[i] * keep_scale, cfg.box_scale, cfg.size)
                crops[i, j] = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        results.append(Track(boxes.astype(np.float32), scores.astype(np.float32), detected, crops))
    main = results[0]
    meta = {
        "stage": "faces",
        "video": str(path),
        "source": source_identity(path),
        "time_points": k,
        "frames": info.frames,
        "fps": info.fps,
        "width": full_w,
        "height": full_h,
        "whole_frame_detections": len(whole),
        "refined_points": followed[0][3],
        "refined_points_per_track": [f[3] for f in followed],
        "tracks": len(results),
        "tracks_found": len(tracks),
        "max_faces_per_frame": int(max((len(d) for d in whole.values()), default=0)),
        "coverage": float(np.mean(main.valid)),
        "config": cfg.to_dict(),
    }
    return Faces(points, main.boxes, main.scores, main.detected, main.crops, meta, results[1:])


def _follow(
    track: dict[int, np.ndarray], k: int, frames: list[np.ndarray], whole: dict[int, np.ndarray],
    detect_whole, keep_scale: float, cfg: FacesConfig, detector: FaceDetector,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """Follow one face to every point with MTCNN's O-net, from the box its track predicts:
    (boxes [k, 4], scores [k], detected [k], points O-net confirmed), or None where it is lost
    at every point."""
    pred = hold(track, k)
    boxes = pred * keep_scale
    for _ in range(cfg.refine_steps):
        boxes, probs = detector.refine(frames, boxes, bgr=True)
    refined: dict[int, np.ndarray] = {}
    for i in range(k):
        box = boxes[i] / keep_scale
        if probs[i] >= cfg.min_score and box_iou(box, pred[i]) >= 0.3:
            refined[i] = np.append(box, probs[i]).astype(np.float32)
    confirmed = len(refined)  # points where O-net itself confirmed the face
    lost = [i for i in range(k) if i not in refined]
    if lost:  # O-net lost it (fast motion, occlusion): look at the whole frame
        detect_whole(lost)
        for i in lost:
            if len(whole[i]):
                iou = box_iou(whole[i][:, :4], pred[i][None])
                j = int(np.argmax(iou))
                if iou[j] >= 0.3:
                    refined[i] = whole[i][j]
    if not refined:
        return None
    boxes, scores, detected = fill(refined, k)
    if cfg.smooth:
        boxes = smooth(boxes)
    return boxes, scores, detected, confirmed


# ---------------------------------------------------------------- stage
