"""What a video's score means: calibrated probability and a threshold for each aggregation.

A video's *score* aggregates its frames' probabilities (mean, median, max, top25). It is not a
probability that the video is fake: the training loss weights fakes by the class ratio, which
shifts every logit by about log(pos_weight), and aggregation changes the scale again (a max is
higher than a mean). After training, on the validation split, each aggregation gets:

- a **threshold** on its score (Youden's J, :func:`youden_threshold`), so ``--aggregation max``
  is not judged by a threshold chosen for the mean;
- a **calibration**: Platt scaling, ``p = sigmoid(a * logit(score) + b)``, fitted by maximum
  likelihood. Two parameters because both defects are there: the class weighting moves the
  logits (``b``) and aggregation and over-confidence stretch them (``a``); temperature scaling
  alone (``a``) cannot undo a shift. Isotonic regression was not chosen: validation splits hold
  tens to hundreds of videos, on which it overfits into a step function that ties many videos
  at the same probability and is flat outside the range it saw. A fit that does not rank fake
  above real (``a <= 0``) or a split without both classes gives no calibration (``identity``),
  and says so.

Frame-level accuracy uses a threshold chosen on validation frames the same way. The fit is stored
in the detector's record (``verdict``) and so travels with every compressed copy.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.metrics import AGGREGATIONS, video_level, youden_threshold

__all__ = ["Calibration", "VerdictRule", "brier", "expected_calibration_error", "fit_verdict_rules", "verdict_rule"]

log = logging.getLogger(__name__)

_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class Calibration:
    """``p = sigmoid(a * logit(score) + b)``; ``identity`` when a == 1 and b == 0."""

    a: float = 1.0
    b: float = 0.0
    method: str = "identity"  # platt | identity

    def __call__(self, scores: np.ndarray | float) -> np.ndarray:
        z = self.a * _logit(scores) + self.b
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function, without overflow for large -z

    @classmethod
    def fit(cls, scores: np.ndarray, labels: np.ndarray) -> "Calibration":
        """Platt scaling by Newton's method on the log-likelihood, with Platt's target smoothing
        (labels become (N+ + 1)/(N+ + 2) and 1/(N- + 2)) so that a separable split does not drive
        ``a`` to infinity."""
        labels = np.asarray(labels).astype(int)
        if len(np.unique(labels)) < 2:
            return cls()
        x = _logit(scores)
        n_pos, n_neg = int(labels.sum()), int((1 - labels).sum())
        t = np.where(labels == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
        def nll(a: float, b: float) -> float:  # cross-entropy against the smoothed targets, stably
            z = a * x + b
            return float(np.sum(np.logaddexp(0, z) - t * z))

        # Newton's method with backtracking (Lin, Lin and Weng, "A note on Platt's probabilistic
        # outputs", 2007): a full Newton step can overshoot and diverge.
        a, b = 1.0, 0.0
        current = nll(a, b)
        for _ in range(100):
            p = 1.0 / (1.0 + np.exp(-np.clip(a * x + b, -500, 500)))
            w = np.maximum(p * (1 - p), 1e-12)
            g = np.array([np.sum((p - t) * x), np.sum(p - t)])
            h = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]]) + 1e-9 * np.eye(2)
            step = np.linalg.solve(h, g)
            scale = 1.0
            while scale > 1e-10:
                trial = nll(a - scale * step[0], b - scale * step[1])
                if trial <= current + 1e-4 * scale * float(g @ -step):
                    break
                scale /= 2
            else:
                break
            a, b, current = a - scale * step[0], b - scale * step[1], trial
            if np.abs(scale * step).max() < 1e-9:
                break
        if not (math.isfinite(a) and math.isfinite(b)) or a <= 0:
            log.warning("calibration: the validation scores do not rank fake above real (a=%.3g); left uncalibrated", a)
            return cls()
        return cls(float(a), float(b), "platt")

    def record(self) -> dict[str, Any]:
        return {"method": self.method, "a": self.a, "b": self.b}

    @classmethod
    def from_record(cls, r: dict[str, Any] | None) -> "Calibration":
        r = r or {}
        return cls(float(r.get("a", 1.0)), float(r.get("b", 0.0)), r.get("method", "identity"))


@dataclass(frozen=True)
class VerdictRule:
    """How one aggregation's score becomes a verdict: threshold (on the score) and calibration."""

    aggregation: str
    threshold: float
    calibration: Calibration

    @property
    def probability_threshold(self) -> float:
        """The threshold on the calibrated probability (calibration is increasing: same verdicts)."""
        return float(self.calibration(self.threshold))

    def record(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "calibration": self.calibration.record()}


def fit_verdict_rules(frame_probs: np.ndarray, items: np.ndarray, labels: np.ndarray,
                      groups: np.ndarray | None = None) -> dict[str, Any]:
    """The ``verdict`` record of a detector, fitted on validation frame probabilities (``items``:
    each frame's face; ``groups``: its video, whose score is the maximum over its faces)."""
    rules = {}
    for how in AGGREGATIONS:
        _, scores, vlabels = video_level(frame_probs, items, labels, how, groups)
        rules[how] = VerdictRule(how, youden_threshold(vlabels, scores), Calibration.fit(scores, vlabels)).record()
    return {
        "fitted_on": "val",
        "videos": int(len(np.unique(items if groups is None else groups))),
        "frame_threshold": youden_threshold(labels, frame_probs),
        "aggregations": rules,
    }


def verdict_rule(verdict: dict[str, Any], aggregation: str) -> VerdictRule:
    """The rule a saved detector's ``verdict`` record holds for ``aggregation``. Detectors
    trained before calibration existed have one threshold (for the mean) and no calibration: it
    is used as it is."""
    record = verdict.get("aggregations", {}).get(aggregation)
    if record is None:
        return VerdictRule(aggregation, float(verdict.get("threshold", 0.5)), Calibration())
    return VerdictRule(aggregation, float(record["threshold"]), Calibration.from_record(record["calibration"]))


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """ECE with ``bins`` equal-width bins: sum over bins of |fake rate - mean probability| x share."""
    labels, probs = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    if len(labels) == 0:
        return float("nan")
    idx = np.minimum((probs * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(labels[m].mean() - probs[m].mean())
    return float(total)


def brier(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean squared difference between the probability and the label."""
    labels, probs = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    return float(np.mean((probs - labels) ** 2)) if len(labels) else float("nan")
