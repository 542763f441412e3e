"""Small work directories with a known signal, built through the project's own stages.

Each video is a random texture seen at K time points; frames t and t+1 differ by a smooth global
motion. In a fake video a central disc moves on its own between t and t+1 (a temporal artefact
of frame-wise face swaps), so its flow carries a local inconsistency a detector can learn. Face
crops are written as the faces stage writes them; flow comes from the real features stage.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from truthinmotion.faces.artifact import Faces, Track
from truthinmotion.features import FlowConfig, run_features
from truthinmotion.core.io import WorkDir


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    big = cv2.GaussianBlur(rng.normal(0, 1, (size * 2, size * 2, 3)), (0, 0), 4)
    small = cv2.GaussianBlur(rng.normal(0, 1, (size * 2, size * 2, 3)), (0, 0), 1.5)
    img = big / big.std() * 40 + small / small.std() * 20 + 128
    return np.clip(img, 0, 255).astype(np.uint8)


def _shift(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.array([[1, 0, dx], [0, 1, dy]], np.float64)
    return cv2.warpAffine(img, m, img.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def synthetic_pairs(fake: bool, k: int, size: int, rng: np.random.Generator, region: str = "disc") -> np.ndarray:
    """``[k, 2, size, size, 3]`` uint8 crop pairs; a fake's own motion is in ``region``: a
    central ``disc``, or an ellipse inside the ``left`` half only."""
    tex = _texture(rng, size)
    yy, xx = np.mgrid[0:size, 0:size]
    if region == "left":
        disc = ((((xx - size / 4) / (size * 0.2)) ** 2 + ((yy - size / 2) / (size * 0.35)) ** 2) < 1)[..., None]
    else:
        disc = (((xx - size / 2) ** 2 + (yy - size / 2) ** 2) < (size * 0.25) ** 2)[..., None]
    out = np.empty((k, 2, size, size, 3), np.uint8)
    for i in range(k):
        ox, oy = rng.uniform(0, size, 2)
        vx, vy = rng.normal(0, 1.0, 2)
        a = _shift(tex, -ox, -oy)[:size, :size]
        b = _shift(tex, -ox - vx, -oy - vy)[:size, :size]
        if fake:
            jx, jy = rng.normal(0, 1.0, 2) + np.sign(rng.normal(0, 1, 2)) * 1.5
            b = np.where(disc, _shift(tex, -ox - vx - jx, -oy - vy - jy)[:size, :size], b)
        out[i] = (a, b)
    return out


def make_workdir(
    root: Path, n_per_class: int = 24, k: int = 6, size: int = 56, seed: int = 0,
    splits: tuple[int, int, int] = (12, 8, 4), shuffle_labels: bool | tuple[str, ...] = False, depth=None,
    second_face: bool = False, region: str = "disc", faces_config: dict | None = None,
) -> Path:
    """A work directory with manifest, faces and farneback flow; ``splits`` counts per class.

    ``shuffle_labels``: True shuffles every label (no signal left), a tuple of split names the
    labels of those splits only (noisy training labels, clean validation and test).
    ``second_face``: every video also shows a real-style face (a second track) at half its points.
    ``faces_config``: the faces settings the artifacts say they were made with (what a detector
    trained on them samples from a video in ``tim detect``); the defaults by default."""
    rng = np.random.default_rng(seed)
    work = WorkDir(root)
    rows = []
    for label in (0, 1):
        names = ["train"] * splits[0] + ["val"] * splits[1] + ["test"] * splits[2]
        assert len(names) == n_per_class
        for j, split in enumerate(names):
            vid = f"{'fake' if label else 'real'}{j:03d}"
            pairs = synthetic_pairs(bool(label), k, size, rng, region)
            boxes = np.tile(np.array([[0, 0, size, size]], np.float32), (k, 1))
            more = []
            if second_face:
                half = np.arange(k) < k // 2
                other = np.where(half[:, None], boxes + size, np.nan).astype(np.float32)
                more = [Track(other, half.astype(np.float32), half, synthetic_pairs(False, k, size, rng) * half[:, None, None, None, None])]
            Faces(np.arange(k) * 2, boxes, np.ones(k, np.float32), np.ones(k, bool), pairs,
                  {"stage": "faces", "config": faces_config or {}}, more).save(work.faces(vid))
            method = "swap" if label else "real"
            rows.append({"video_id": vid, "path": f"/synthetic/{vid}.mp4", "label": label, "dataset": "synthetic",
                         "method": method, "group": vid, "split": split})
    if shuffle_labels:
        names = ("train", "val", "test") if shuffle_labels is True else shuffle_labels
        chosen = [r for r in rows if r["split"] in names]
        labels = [r["label"] for r in chosen]
        rng.shuffle(labels)
        for r, lab in zip(chosen, labels):
            r["label"] = lab
    root.mkdir(parents=True, exist_ok=True)
    with open(work.manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    report = run_features(root, FlowConfig(), depth, progress=False)
    assert report.ok, report.summary()
    return root
