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
  at the same probability and is flat outside the range it saw.

Platt scaling is used only where validation can support it (:func:`choose_calibration`): with
fewer than ``MIN_VIDEOS_PER_CLASS`` (10) validation videos of either class the score is left as
it is (``identity``): two parameters fitted on a handful of videos made the demo's probabilities
worse (ECE 0.13 -> 0.26 on 8 validation videos). With enough videos, identity and Platt scaling
are compared by ``CV_FOLDS``-fold cross-validated log-loss on the validation videos (folds
stratified by class and score), and Platt scaling is kept only when it predicts held-out videos
better. A split without both classes, or a fit that does not rank fake above real (``a <= 0``),
also gives ``identity``. Which was chosen and why is saved with the rule.

Frame-level accuracy uses a threshold chosen on validation frames the same way. The fit is stored
in the detector's record (``verdict``) and so travels with every compressed copy. Its
saved form, read and written here only::

    {"fitted_on": "val", "videos": int, "frame_threshold": float,
     "aggregations": {"mean": {"threshold": float,    # on the score
                               "calibration": {"method": "platt" | "identity", "a": float, "b": float,
                                               "reason": str}},   # why this method (absent before)
                      "median": ..., "max": ..., "top25": ...}}
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.metrics import AGGREGATIONS, video_level, youden_threshold

__all__ = ["CV_FOLDS", "MIN_VIDEOS_PER_CLASS", "Calibration", "VerdictRule", "brier", "check_verdict_record", "reliability_bins",
           "choose_calibration",
           "expected_calibration_error", "fit_verdict_rules", "verdict_rule"]

log = logging.getLogger(__name__)

_EPS = 1e-6
MIN_VIDEOS_PER_CLASS = 10  # below this many validation videos of a class, no calibration is fitted
CV_FOLDS = 10  # folds of the cross-validation that decides between identity and Platt scaling


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class Calibration:
    """``p = sigmoid(a * logit(score) + b)``; ``identity`` when a == 1 and b == 0."""

    a: float = 1.0
    b: float = 0.0
    method: str = "identity"  # platt | identity
    reason: str = ""  # why this method was chosen (empty in rules saved before the choice was recorded)

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
            return cls(reason="validation has videos of one class only")
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
            return cls(reason=f"the validation scores do not rank fake above real: Platt's a = {a:.3g}")
        return cls(float(a), float(b), "platt")

    def record(self) -> dict[str, Any]:
        return {"method": self.method, "a": self.a, "b": self.b, "reason": self.reason}

    @classmethod
    def from_record(cls, r: dict[str, Any] | None) -> "Calibration":
        r = r or {}
        return cls(float(r.get("a", 1.0)), float(r.get("b", 0.0)), r.get("method", "identity"), r.get("reason", ""))


def _log_loss(z: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of ``labels`` under probabilities ``sigmoid(z)``, stably."""
    return float(np.mean(np.logaddexp(0, z) - labels * z))


def choose_calibration(scores: np.ndarray, labels: np.ndarray) -> Calibration:
    """Identity or Platt scaling, as the validation videos (``scores``, ``labels``) can support:
    identity below ``MIN_VIDEOS_PER_CLASS`` of either class; otherwise the one with the lower
    ``CV_FOLDS``-fold cross-validated log-loss (identity on a tie). The reason is in the result."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(int)
    real, fake = int((labels == 0).sum()), int((labels == 1).sum())
    if min(real, fake) < MIN_VIDEOS_PER_CLASS:
        return Calibration(reason=f"{real} real and {fake} fake validation videos, fewer than the "
                                  f"{MIN_VIDEOS_PER_CLASS} of each class needed to fit a calibration and check it")
    # Videos dealt round the folds in score order, so every fold spans the range of scores. Not
    # stratified by class: folds with exactly the split's fake rate would reward Platt's
    # intercept for learning that rate, and identity would lose on well-calibrated scores.
    fold = np.empty(len(labels), int)
    fold[np.argsort(scores, kind="stable")] = np.arange(len(labels)) % CV_FOLDS
    x = _logit(scores)
    z = np.empty(len(labels))  # each video's Platt logit, fitted without its fold
    for k in range(CV_FOLDS):
        test = fold == k
        platt = Calibration.fit(scores[~test], labels[~test])
        z[test] = platt.a * x[test] + platt.b
    held_out = {"identity": _log_loss(x, labels), "platt": _log_loss(z, labels)}
    how = (f"{CV_FOLDS}-fold cross-validated log-loss on {real} real and {fake} fake validation videos: "
           f"platt {held_out['platt']:.4f}, identity {held_out['identity']:.4f}")
    if held_out["platt"] >= held_out["identity"]:
        return Calibration(reason=f"{how}; Platt scaling does not predict held-out videos better")
    platt = Calibration.fit(scores, labels)
    if platt.method != "platt":
        return platt
    return replace(platt, reason=f"{how}; Platt scaling predicts held-out videos better")


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
        rules[how] = VerdictRule(how, youden_threshold(vlabels, scores), choose_calibration(scores, vlabels)).record()
    chosen: dict[tuple[str, str], list[str]] = {}
    for how, r in rules.items():
        chosen.setdefault((r["calibration"]["method"], r["calibration"]["reason"]), []).append(how)
    log.info("calibration chosen on validation: %s", "; ".join(
        f"{method} for the {', '.join(hows)} ({reason})" for (method, reason), hows in chosen.items()))
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


def reliability_bins(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> np.ndarray:
    """Per non-empty bin of ``bins`` equal-width probability bins: (mean probability, fake rate,
    share of the items), ``[B, 3]``; what ECE sums and a reliability diagram draws."""
    labels, probs = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    idx = np.minimum((probs * bins).astype(int), bins - 1)
    count = np.bincount(idx, minlength=bins)
    used = count > 0
    mean_prob = np.bincount(idx, probs, minlength=bins)[used] / count[used]
    fake_rate = np.bincount(idx, labels, minlength=bins)[used] / count[used]
    return np.stack([mean_prob, fake_rate, count[used] / max(len(labels), 1)], axis=1)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """ECE with ``bins`` equal-width bins: sum over bins of |fake rate - mean probability| x share."""
    if len(labels) == 0:
        return float("nan")
    b = reliability_bins(labels, probs, bins)
    return float(np.sum(b[:, 2] * np.abs(b[:, 1] - b[:, 0])))


def brier(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean squared difference between the probability and the label."""
    labels, probs = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    return float(np.mean((probs - labels) ** 2)) if len(labels) else float("nan")


_VERDICT_KEYS = {"fitted_on", "videos", "frame_threshold", "aggregations", "threshold"}
_RULE_KEYS = {"threshold", "calibration"}
_CALIBRATION_KEYS = {"method", "a", "b", "reason"}


def check_verdict_record(verdict: dict[str, Any]) -> dict[str, Any]:
    """``verdict`` if it is a verdict record as this module writes it (see the module docstring;
    ``threshold`` alone: a detector from before calibration); a ConfigError naming a key it does
    not know."""
    def known(mapping: Any, keys: set[str], where: str) -> None:
        if not isinstance(mapping, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(mapping).__name__}")
        unknown = sorted(set(mapping) - keys)
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; allowed: {', '.join(sorted(keys))}")

    known(verdict, _VERDICT_KEYS, "verdict")
    for how, rule in verdict.get("aggregations", {}).items():
        if how not in AGGREGATIONS:
            raise ConfigError(f"verdict.aggregations: {how!r} is not one of {', '.join(AGGREGATIONS)}")
        known(rule, _RULE_KEYS, f"verdict.aggregations.{how}")
        known(rule.get("calibration", {}), _CALIBRATION_KEYS, f"verdict.aggregations.{how}.calibration")
    return verdict
