"""Face tracks: detections at sampled time points linked into tracks, weighed, and filled in.

A track is a ``{point: [x1, y1, x2, y2, probability]}`` mapping over the K time points of a
video, in original pixels.
"""

from __future__ import annotations

import numpy as np

from .mtcnn import box_iou

__all__ = ["fill", "hold", "link", "smooth", "track_weight"]


def link(dets: dict[int, np.ndarray], min_iou: float = 0.3) -> list[dict[int, np.ndarray]]:
    """Greedy linking of per-point detections into tracks: each a {point: [5]} mapping."""
    tracks: list[dict[int, np.ndarray]] = []
    for k in sorted(dets):
        free = list(range(len(tracks)))
        for det in sorted(dets[k], key=lambda d: -d[4]):
            if not free:
                tracks.append({k: det})
                continue
            last = np.stack([tracks[t][max(tracks[t])][:4] for t in free])
            ious = box_iou(last, det[None, :4])
            # A face seen again after a miss may have moved further: fall back to centre distance.
            j = int(np.argmax(ious))
            if ious[j] < min_iou:
                size = max(det[2] - det[0], det[3] - det[1])
                centre = (det[:2] + det[2:4]) / 2
                dist = np.linalg.norm((last[:, :2] + last[:, 2:4]) / 2 - centre, axis=1)
                j = int(np.argmin(dist))
                if dist[j] > 0.5 * size:
                    tracks.append({k: det})
                    continue
            tracks[free.pop(j)][k] = det
    return tracks


def track_weight(track: dict[int, np.ndarray]) -> float:
    """Largest and most confident over time: sum of probability x sqrt(area) of its detections."""
    return float(sum(d[4] * np.sqrt(max((d[2] - d[0]) * (d[3] - d[1]), 0.0)) for d in track.values()))


def fill(track: dict[int, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes ``[k, 4]``, scores ``[k]`` and detected ``[k]``: detections, interpolated inside the
    track's span, NaN (score 0) outside it."""
    pts = np.array(sorted(track))
    boxes = hold(track, k)
    scores = np.interp(np.arange(k), pts, [track[p][4] for p in pts])
    outside = (np.arange(k) < pts[0]) | (np.arange(k) > pts[-1])
    boxes[outside], scores[outside] = np.nan, 0.0
    detected = np.zeros(k, bool)
    detected[pts] = True
    return boxes, scores, detected


def smooth(boxes: np.ndarray) -> np.ndarray:
    """Weights 1-2-1 over neighbouring points, on valid boxes only (NaN stays NaN)."""
    valid = ~np.isnan(boxes[:, 0])
    out = boxes.copy()
    for i in np.flatnonzero(valid):
        idx = [j for j in (i - 1, i, i + 1) if 0 <= j < len(boxes) and valid[j]]
        w = np.array([2.0 if j == i else 1.0 for j in idx])
        out[i] = (boxes[idx] * w[:, None]).sum(0) / w.sum()
    return out


def hold(track: dict[int, np.ndarray], k: int) -> np.ndarray:
    """Predicted box at every point ``[k, 4]``: interpolated inside the track, held outside it."""
    pts = np.array(sorted(track))
    vals = np.stack([track[p][:4] for p in pts])
    return np.stack([np.interp(np.arange(k), pts, vals[:, c]) for c in range(4)], 1)
