"""Detection metrics: ROC AUC, average precision, EER, accuracy; frame and video level.

AUC and AP come from scikit-learn (imported where used: `tim` parses its options with
AGGREGATIONS and nothing more). The equal error rate is where the false positive rate equals
the false negative rate on the ROC curve, interpolated linearly between its points. A video's
score aggregates its frames' probabilities (mean by default, as in the study).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

__all__ = ["AGGREGATIONS", "binary_metrics", "eer", "video_level", "youden_threshold"]

# Each aggregates the last axis ([..., n] -> [...]): one video's points, or a block of videos
# with n points each, with the same numpy reductions, so both give bit-identical scores.
_ROWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda p: np.mean(p, axis=-1),
    "median": lambda p: np.median(p, axis=-1),
    "max": lambda p: np.max(p, axis=-1),
    # Mean of the top quarter: robust to a few high frames, unlike max.
    "top25": lambda p: np.mean(np.sort(p, axis=-1)[..., -max(1, int(math.ceil(p.shape[-1] / 4))):], axis=-1),
}
AGGREGATIONS: dict[str, Callable[[np.ndarray], float]] = {
    how: (lambda p, rows=rows: float(rows(np.asarray(p)))) for how, rows in _ROWS.items()
}


def _both_classes(labels: np.ndarray) -> bool:
    return len(np.unique(labels)) == 2


def eer(labels: np.ndarray, scores: np.ndarray) -> float:
    """Equal error rate (NaN when one class is absent)."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if not _both_classes(labels):
        return float("nan")
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1 - tpr
    diff = fpr - fnr  # increases from <= 0 to >= 0 along the curve
    i = int(np.flatnonzero(diff >= 0)[0])
    if i == 0 or diff[i] == 0:
        return float(fpr[i])
    # Linear interpolation between points i-1 and i where fpr - fnr changes sign.
    t = -diff[i - 1] / (diff[i] - diff[i - 1])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Threshold maximising TPR - FPR (balanced accuracy); 0.5 when one class is absent.

    Every threshold between the lowest score called fake and the next lower score gives the same
    point of the ROC curve; the midpoint is returned (the widest margin on both sides), not the
    score of one validation video, which new videos would fall just below half the time.
    """
    labels, scores = np.asarray(labels), np.asarray(scores)
    if not _both_classes(labels):
        return 0.5
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    i = int(np.argmax(tpr - fpr))
    upper = float(min(thr[i], 1.0))
    return (upper + float(thr[i + 1])) / 2 if i + 1 < len(thr) else upper


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """count, accuracy at ``threshold`` and at 0.5, AUC, AP, EER (NaN where undefined)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    both = _both_classes(labels)
    return {
        "count": int(len(labels)),
        "real": int((labels == 0).sum()),
        "fake": int((labels == 1).sum()),
        "acc@0.5": float(np.mean((scores >= 0.5) == labels)) if len(labels) else float("nan"),
        "acc@thr": float(np.mean((scores >= threshold) == labels)) if len(labels) else float("nan"),
        "auc": float(roc_auc_score(labels, scores)) if both else float("nan"),
        "ap": float(average_precision_score(labels, scores)) if both else float("nan"),
        "eer": eer(labels, scores),
    }


def video_level(
    probs: np.ndarray, videos: np.ndarray, labels: np.ndarray, how: str = "mean", groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate frame probabilities per video: (video ids in first-seen order, scores, labels).

    ``videos`` gives each frame's item. With ``groups`` (each frame's video, when items are the
    faces of videos), each face is aggregated on its own and a video's score is the maximum over
    its faces: one manipulated face among real ones makes the video fake.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation {how!r} not one of {', '.join(AGGREGATIONS)}")
    probs = np.asarray(probs)
    # Linear in frames (sorts), not a mask over every frame per item: DFDC's test split is
    # 5,000 videos x 32 points (benchmarks/aggregation.py times both).
    ids, first, item = _first_seen(np.asarray(videos))
    counts = np.bincount(item, minlength=len(ids))
    starts = np.cumsum(counts) - counts
    frames = np.argsort(item, kind="stable")  # grouped by item, each item's frames in their order
    scores = np.empty(len(ids))
    # Items with the same number of points form one [items, n] block: a handful of lengths at most.
    for n in np.unique(counts):
        block = np.flatnonzero(counts == n)
        scores[block] = _ROWS[how](probs[frames[starts[block, None] + np.arange(n)]])
    vlabels = np.asarray(labels)[first]
    if groups is None:
        return ids, scores, vlabels
    gids, gfirst, group = _first_seen(np.asarray(groups)[first])
    gscores = np.full(len(gids), -np.inf)
    np.maximum.at(gscores, group, scores)
    return gids, gscores, vlabels[gfirst]


def _first_seen(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct values in order of first appearance, the index of each one's first
    appearance, and each element's position among them."""
    ids, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    seen = np.argsort(first)
    rank = np.empty_like(seen)
    rank[seen] = np.arange(len(seen))
    return ids[seen], first[seen], rank[inverse.reshape(-1)]
