"""Detection metrics: ROC AUC, average precision, EER, accuracy; frame and video level.

AUC and AP come from scikit-learn. The equal error rate is where the false positive rate equals
the false negative rate on the ROC curve, interpolated linearly between its points. A video's
score aggregates its frames' probabilities (mean by default, as in the study).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

__all__ = ["AGGREGATIONS", "binary_metrics", "eer", "video_level", "youden_threshold"]

AGGREGATIONS: dict[str, Callable[[np.ndarray], float]] = {
    "mean": lambda p: float(np.mean(p)),
    "median": lambda p: float(np.median(p)),
    "max": lambda p: float(np.max(p)),
    # Mean of the top quarter: robust to a few high frames, unlike max.
    "top25": lambda p: float(np.mean(np.sort(p)[-max(1, int(math.ceil(len(p) / 4))):])),
}


def _both_classes(labels: np.ndarray) -> bool:
    return len(np.unique(labels)) == 2


def eer(labels: np.ndarray, scores: np.ndarray) -> float:
    """Equal error rate (NaN when one class is absent)."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if not _both_classes(labels):
        return float("nan")
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
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    i = int(np.argmax(tpr - fpr))
    upper = float(min(thr[i], 1.0))
    return (upper + float(thr[i + 1])) / 2 if i + 1 < len(thr) else upper


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """count, accuracy at ``threshold`` and at 0.5, AUC, AP, EER (NaN where undefined)."""
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
    videos = np.asarray(videos)
    ids, first = np.unique(videos, return_index=True)
    order = np.argsort(first)
    ids, first = ids[order], first[order]
    agg = AGGREGATIONS[how]
    scores = np.array([agg(np.asarray(probs)[videos == v]) for v in ids])
    vlabels = np.asarray(labels)[first]
    if groups is None:
        return ids, scores, vlabels
    item_group = np.asarray(groups)[first]
    gids, gfirst = np.unique(item_group, return_index=True)
    gids = gids[np.argsort(gfirst)]
    gscores = np.array([scores[item_group == g].max() for g in gids])
    glabels = np.array([vlabels[item_group == g][0] for g in gids])
    return gids, gscores, glabels
