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
crops ``[T, K, 2, S, S, 3]`` as one JPEG each (``crop_format``; see :mod:`.compact`), which
:meth:`Faces.load` and :func:`load_crops` decode. Schema 2 (the crops as a uint8 array) still
reads; schema 1 (no track axis: the main face alone) reads as T = 1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ..data.compact import CROP_FORMATS, unpack_crops, pack_crops
from ..core.config import Settings, require
from ..core.errors import StageError
from ..core.io import WorkDir, check_settings, clean_temporaries, load_npz, save_npz, source_identity
from .mtcnn import FaceDetector, box_iou, crop_square
from ..execution.engine import LOCAL, Engine
from ..execution.preflight import estimate, preflight
from .tracking import fill, hold, link, smooth, track_weight
from ..media.video import probe, read_frames, sample_points

__all__ = [
    "FaceDetector",
    "Faces",
    "Track",
    "FacesConfig",
    "box_iou",
    "crop_square",
    "extract_faces",
    "load_crops",
    "run_faces",
    "with_track_axis",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FacesConfig(Settings):
    num_points: int = 32  # K time points per video, evenly spaced; each gives the pair (t, t+1)
    size: int = 224  # S: side of the square crops, in pixels
    box_scale: float = 1.3  # crop side = box_scale x the longer side of the face box (study: 1.3)
    detect_side: int = 300  # frames are downscaled to this short side for detection
    min_face: int = 24  # smallest face MTCNN looks for, in pixels of the detection frame
    min_score: float = 0.9  # detections less confident than this are ignored (MTCNN's O-net)
    thresholds: tuple[float, float] = (0.7, 0.8)  # MTCNN P-net and R-net candidate thresholds
    detect_every: int = 8  # whole-frame pass: every n-th time point (plus the last)
    refine_steps: int = 3  # O-net passes that follow the face from its predicted box at each point
    smooth: bool = False  # 1-2-1 smoothing over neighbouring points (a pair shares its box anyway)
    batch_size: int = 16  # frames per MTCNN call
    max_faces: int = 4  # tracks kept per video, the main face first
    min_track: float = 0.25  # a further track needs this share of the main track's detections
    max_frame_side: int = 1920  # kept frames are downscaled to this long side (bounds memory)
    compress: bool = True  # zlib-compress the artifact's arrays (crops: only crop_format raw)
    crop_format: str = "jpeg"  # jpeg (default), png (lossless, 5x the bytes) or raw (the array)
    crop_quality: int = 95  # JPEG quality of the stored crops
    # Decoded frames a video may hold in memory at once (2 per time point, each at most
    # max_frame_side on its long side, 3 bytes a pixel): a video that would need more is refused
    # with status too_large rather than exhausting the machine. 32 points of 1080p need ~400 MB.
    max_memory_mb: int = 4096

    def check(self) -> None:
        require(1 <= self.num_points <= 1024, "num_points: 1 to 1024 (a video gives at most one per frame pair)")
        require(self.max_memory_mb >= 64, "max_memory_mb: at least 64")
        require(16 <= self.size <= 1024, "size: 16 to 1024 pixels")
        require(1.0 <= self.box_scale <= 3.0, "box_scale: 1.0 to 3.0")
        require(self.detect_side >= 64, "detect_side: at least 64 pixels")
        require(self.min_face >= 12, "min_face: at least 12 pixels (MTCNN's smallest window)")
        require(0.0 < self.min_score < 1.0, "min_score: between 0 and 1")
        require(
            len(self.thresholds) == 2 and all(0.0 < t < 1.0 for t in self.thresholds),
            "thresholds: two numbers between 0 and 1 (P-net, R-net)",
        )
        require(self.detect_every >= 1, "detect_every: at least 1")
        require(1 <= self.refine_steps <= 5, "refine_steps: 1 to 5")
        require(self.batch_size >= 1, "batch_size: at least 1")
        require(1 <= self.max_faces <= 16, "max_faces: 1 to 16")
        require(0.0 < self.min_track <= 1.0, "min_track: above 0, at most 1")
        require(self.max_frame_side >= self.size, "max_frame_side: at least size")
        require(self.crop_format in CROP_FORMATS, f"crop_format: one of {', '.join(CROP_FORMATS)}")
        require(50 <= self.crop_quality <= 100, "crop_quality: 50 to 100")


# ---------------------------------------------------------------- extraction


SCHEMA = 3  # faces artifacts with a track axis and compact crops (see the module docstring)


@dataclass
class Track:
    """One face through the K time points of a video."""

    boxes: np.ndarray  # [K, 4] float32: face box x1, y1, x2, y2 in original pixels, NaN: no face
    scores: np.ndarray  # [K] float32: MTCNN probability (interpolated where not detected)
    detected: np.ndarray  # [K] bool: the box came from a detection at this point
    crops: np.ndarray  # [K, 2, S, S, 3] uint8 RGB: frames t and t+1, same square box

    @property
    def valid(self) -> np.ndarray:
        """``[K]`` bool: time points with this face."""
        return ~np.isnan(self.boxes[:, 0])


@dataclass
class Faces:
    """Face crops of one video: the main face in the fields below (shapes use K time points and
    crop side S), any further faces in ``more``; :attr:`tracks` lists them all."""

    frame_index: np.ndarray  # [K] int64: t of each pair (t, t+1)
    boxes: np.ndarray  # [K, 4] float32: the main face's box in original pixels, NaN: no face
    scores: np.ndarray  # [K] float32: MTCNN probability (interpolated where not detected)
    detected: np.ndarray  # [K] bool: the box came from a detection at this point
    crops: np.ndarray  # [K, 2, S, S, 3] uint8 RGB: frames t and t+1, same square box
    meta: dict[str, Any] = field(default_factory=dict)
    more: list[Track] = field(default_factory=list)  # the other faces, by weight

    @property
    def valid(self) -> np.ndarray:
        """``[K]`` bool: time points with the main face."""
        return ~np.isnan(self.boxes[:, 0])

    @property
    def tracks(self) -> list[Track]:
        return [Track(self.boxes, self.scores, self.detected, self.crops), *self.more]

    def save(self, path: Path, compress: bool = True, crop_format: str = "jpeg", crop_quality: int = 95) -> None:
        tracks = self.tracks
        boxes = np.stack([t.boxes for t in tracks])
        both = np.repeat(~np.isnan(boxes[..., :1]), 2, -1)  # [T, K, 2]: both crops of a pair with a face
        crops = pack_crops(np.stack([t.crops for t in tracks]), both, crop_format, crop_quality)
        save_npz(
            path, {**self.meta, "schema": SCHEMA}, compress=compress and crop_format == "raw",
            frame_index=self.frame_index, boxes=boxes, scores=np.stack([t.scores for t in tracks]),
            detected=np.stack([t.detected for t in tracks]), **crops,
        )

    @classmethod
    def load(cls, path: Path) -> "Faces":
        a, meta = load_npz(path)
        a = with_track_axis(a, meta)
        crops = unpack_crops(a)
        main, *more = [Track(a["boxes"][i], a["scores"][i], a["detected"][i], crops[i]) for i in range(len(a["boxes"]))]
        return cls(a["frame_index"], main.boxes, main.scores, main.detected, main.crops, meta, more)


def with_track_axis(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """Faces or features arrays of any schema with the track axis first (schema 1 had the main
    face alone); an unknown schema asks for the artifacts to be made again."""
    schema = meta.get("schema", 1)
    if schema in (2, SCHEMA):
        return arrays
    if schema == 1:
        return {k: v if k == "frame_index" else v[None] for k, v in arrays.items()}
    stage = meta.get("stage", "faces")
    command = "faces" if stage == "faces" else "features"
    raise StageError("error", f"{stage} artifact of schema {schema}, this version reads 1 to {SCHEMA}: "
                              f"run `tim {command} --overwrite` with this version")


def load_crops(path: Path, track: int, points: np.ndarray, frame: int = 0) -> np.ndarray:
    """Crops ``[n, S, S, 3]`` of one face at ``points`` (indices into K), frame t (0) or t+1 (1)
    of each pair: only those pictures are decoded."""
    a, meta = load_npz(path, ("crops", "crops_data", "crops_ends", "crops_shape", "boxes"))
    a = with_track_axis(a, meta)
    k = a["boxes"].shape[1]
    return unpack_crops(a, (track * k + np.asarray(points, np.int64)) * 2 + frame)


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
    k = len(points)
    wanted = np.unique(np.concatenate([points, points + 1]))
    keep = min(1.0, cfg.max_frame_side / max(info.width, info.height))
    need_mb = len(wanted) * round(info.width * keep) * round(info.height * keep) * 3 / 2**20
    if need_mb > cfg.max_memory_mb:
        raise StageError("too_large", f"{len(wanted)} frames of {info.width}x{info.height} need {need_mb:.0f} MB, over "
                                      f"max_memory_mb={cfg.max_memory_mb}: lower --points or max_frame_side")
    frames = dict(read_frames(path, wanted, max_side=cfg.max_frame_side, rgb=False))  # BGR
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


def _init(cfg: FacesConfig, device: str) -> tuple[FacesConfig, FaceDetector]:
    return cfg, FaceDetector.from_config(cfg, device)


def _one(state: tuple[FacesConfig, FaceDetector], job: tuple[str, str, str]) -> dict:
    cfg, detector = state
    video_id, path, out = job
    faces = extract_faces(path, cfg, detector)
    faces.save(Path(out), cfg.compress, cfg.crop_format, cfg.crop_quality)
    return {"coverage": faces.meta["coverage"], "tracks": faces.meta["tracks"]}


def run_faces(
    workdir: str | Path,
    cfg: FacesConfig = FacesConfig(),
    *,
    workers: int = 1,
    device: str = "cpu",
    limit: int | None = None,
    only: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    space_check: bool = True,
    engine: Engine = LOCAL,
):
    """Crop faces for every video of ``WORKDIR/manifest.csv`` not already done.

    Before any video: the output directory must be writable and, unless not ``space_check``, its
    disk must hold the estimated crops (:mod:`.preflight`).

    ``faces/settings.json`` records the settings: other settings are refused unless
    ``overwrite``. A video whose file changed since its crops were made (another path, size or
    modification time, e.g. after a re-index) is done again.
    """
    from ..data.index import read_manifest, select_rows
    from ..execution.stage import run_stage

    work = WorkDir(Path(workdir))
    rows = select_rows(read_manifest(workdir), only, limit)
    folder = work.root / "faces"
    jobs = [(r["video_id"], r["path"], str(work.faces(r["video_id"]))) for r in rows]
    todo = [j for j in jobs if overwrite or not _current(Path(j[2]), j[1])]
    need = estimate(len(todo), cfg.num_points, cfg.size, ("faces",)).total_bytes
    preflight(outputs=[folder], space=(folder, need, "the face crops") if space_check and todo else None)
    check_settings(folder, cfg.to_dict(), overwrite)
    removed = clean_temporaries(folder)
    if removed:
        log.info("removed %d unfinished temporary files of an interrupted run", removed)
    return run_stage(
        "faces", todo, _one, init=_init, init_args=(cfg, device), workers=workers,
        errors=work.errors, skipped=len(jobs) - len(todo), progress=progress,
        engine=engine, gpus=engine.gpus if device.startswith("cuda") else 0.0,
    )


def _current(artifact: Path, video: str) -> bool:
    """Whether ``artifact`` exists and was made from ``video`` as it is now."""
    if not artifact.is_file():
        return False
    try:
        made_from = load_npz(artifact, ())[1].get("source")
        now = source_identity(video)
    except (OSError, ValueError):
        return False
    if made_from != now:
        log.info("%s: its video changed since the crops were made (%s); recomputing", artifact.name, now["path"])
        return False
    return True
