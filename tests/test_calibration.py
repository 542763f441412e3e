"""Calibrated probabilities and thresholds that match the aggregation."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from truthinmotion.experiments.evaluate import evaluate
from truthinmotion.inference.scorer import Scorer
from truthinmotion.models.calibration import (
    MIN_VIDEOS_PER_CLASS, Calibration, brier, choose_calibration, expected_calibration_error, fit_verdict_rules, verdict_rule,
)
from truthinmotion.models.detector import read_record


def _skewed(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scores of a detector that is right in ranking but over-confident and shifted towards fake
    (as a loss that weights fakes more makes it): true P(fake) = sigmoid(z), score = sigmoid(3z + 2)."""
    z = rng.normal(0, 1.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return 1 / (1 + np.exp(-(3 * z + 2))), labels


def test_platt_scaling_lowers_calibration_error_on_held_out_scores():
    rng = np.random.default_rng(0)
    fit_s, fit_l = _skewed(300, rng)
    test_s, test_l = _skewed(2000, rng)
    cal = Calibration.fit(fit_s, fit_l)
    assert cal.method == "platt"
    assert cal.a == pytest.approx(1 / 3, abs=0.1) and cal.b == pytest.approx(-2 / 3, abs=0.25)
    before, after = expected_calibration_error(test_l, test_s), expected_calibration_error(test_l, cal(test_s))
    assert after < 0.5 * before and after < 0.05
    assert brier(test_l, cal(test_s)) < brier(test_l, test_s)
    # increasing: the ranking (and so AUC and every verdict at the matching threshold) is kept
    order = np.argsort(test_s)
    assert np.all(np.diff(cal(test_s)[order]) >= 0)


def _calibrated(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scores that are already probabilities: P(fake) = score."""
    z = rng.normal(0, 1.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return 1 / (1 + np.exp(-z)), labels


def test_few_validation_videos_get_no_calibration_and_the_rule_says_why():
    """4 videos of each class: even for scores Platt scaling would correct, the rule is identity,
    and the saved rule says it is because of the number of videos."""
    rng = np.random.default_rng(3)
    scores, labels = _skewed(400, rng)
    few = np.concatenate([np.flatnonzero(labels == 0)[:4], np.flatnonzero(labels == 1)[:4]])
    assert Calibration.fit(scores[few], labels[few]).method == "platt"  # what used to be saved
    cal = choose_calibration(scores[few], labels[few])
    assert cal.method == "identity" and cal(0.3) == pytest.approx(0.3)
    assert "4 real and 4 fake validation videos" in cal.reason
    assert f"fewer than the {MIN_VIDEOS_PER_CLASS} of each class" in cal.reason
    # ... in the detector's saved verdict record, for every aggregation (one point per video)
    rules = fit_verdict_rules(scores[few], np.arange(8), labels[few])["aggregations"]
    for rule in rules.values():
        assert rule["calibration"]["method"] == "identity" and "4 real and 4 fake" in rule["calibration"]["reason"]
    assert verdict_rule({"aggregations": rules}, "mean").calibration.reason == cal.reason
    # the minimum is per class: many fakes do not make up for few real videos
    some = np.concatenate([np.flatnonzero(labels == 0)[:MIN_VIDEOS_PER_CLASS - 1], np.flatnonzero(labels == 1)])
    assert choose_calibration(scores[some], labels[some]).method == "identity"


def test_cross_validation_keeps_platt_only_where_it_predicts_held_out_videos_better():
    """200 validation videos: miscalibrated scores (over-confident, shifted) get Platt scaling
    every time; scores that are already calibrated keep identity in most draws (Platt's two
    fitted parameters only add noise there), and the reason gives both held-out log-losses."""
    skewed = [choose_calibration(*_skewed(200, np.random.default_rng(seed))) for seed in range(20)]
    assert all(c.method == "platt" for c in skewed)
    assert "cross-validated log-loss" in skewed[0].reason and "predicts held-out videos better" in skewed[0].reason
    assert skewed[0].a == pytest.approx(1 / 3, abs=0.1)  # the fit on all videos, not one fold's
    calibrated = [choose_calibration(*_calibrated(200, np.random.default_rng(seed))) for seed in range(20)]
    kept = [c for c in calibrated if c.method == "identity"]
    assert len(kept) >= 16
    assert all("cross-validated log-loss" in c.reason and "does not predict held-out videos better" in c.reason
               for c in kept)


def test_no_calibration_without_both_classes_or_a_ranking():
    assert Calibration.fit(np.array([0.2, 0.7, 0.9]), np.array([1, 1, 1])).method == "identity"
    reversed_ = Calibration.fit(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1]))
    assert reversed_.method == "identity" and reversed_(0.3) == pytest.approx(0.3)


def test_expected_calibration_error_by_hand():
    # two bins used: [0.1] x2 with no fakes (gap 0.1), [0.9] x2 with one fake (gap 0.4)
    assert expected_calibration_error(np.array([0, 0, 1, 0]), np.array([0.1, 0.1, 0.9, 0.9])) == pytest.approx(0.25)


def test_thresholds_follow_the_aggregation():
    """A fake shows in a few frames only: its max is high, its mean low. The max's threshold is
    chosen on maxima, not reused from the mean."""
    rng = np.random.default_rng(1)
    probs, videos, labels = [], [], []
    for v in range(40):
        fake = v % 2
        p = rng.uniform(0.05, 0.3, 16)
        if fake:
            p[:3] = rng.uniform(0.7, 0.95, 3)
        probs += list(p)
        videos += [v] * 16
        labels += [fake] * 16
    rules = fit_verdict_rules(np.array(probs), np.array(videos), np.array(labels))["aggregations"]
    assert set(rules) == {"mean", "median", "max", "top25"}
    assert rules["max"]["threshold"] > 0.5 > rules["mean"]["threshold"]
    assert rules["mean"]["threshold"] != rules["median"]["threshold"]


def test_trained_detector_carries_its_verdict_rules_to_evaluate_and_detect(run_dir, clips, tmp_path):
    record = read_record(run_dir)
    verdict = record.verdict
    assert set(verdict["aggregations"]) == {"mean", "median", "max", "top25"} and verdict["fitted_on"] == "val"
    # the mean's threshold is the one validation chose for the kept epoch
    assert verdict["aggregations"]["mean"]["threshold"] == pytest.approx(record.provenance.trained["val"]["threshold"])

    result = evaluate(run_dir, "test", aggregation="max", out_dir=tmp_path / "ev", progress=False)
    m = result.metrics
    rule = record.rule("max")
    assert m["threshold"] == pytest.approx(rule.threshold) and m["frame_threshold"] == verdict["frame_threshold"]
    for v in m["videos"]:
        assert v["probability"] == pytest.approx(float(rule.calibration(v["score"])))
    assert {"ece_before", "ece_after", "brier_before", "brier_after"} <= set(m["calibration"])
    assert (tmp_path / "ev" / "reliability.png").stat().st_size > 1000
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "Expected calibration error" in report
    # A validation split this small cannot support a calibration: the saved rule says so and
    # why, and so do evaluate's report and summary.
    assert rule.calibration.method == "identity" and f"fewer than the {MIN_VIDEOS_PER_CLASS}" in rule.calibration.reason
    assert m["calibration"]["reason"] == rule.calibration.reason and rule.calibration.reason in report
    assert f"(identity: {rule.calibration.reason})" in result.summary()
    with open(tmp_path / "ev" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["video_id", "track", "frame_index", "score", "probability", "label", "split"]
    assert len(rows) == m["overall"]["frame"]["count"] and {r["split"] for r in rows} == {"test"}
    by_video = {v["video_id"]: v for v in m["videos"]}
    for r in rows:
        assert float(r["probability"]) == pytest.approx(by_video[r["video_id"]]["probability"], abs=1e-6)
        assert int(r["label"]) == by_video[r["video_id"]]["label"]

    scorer = Scorer(run_dir, aggregation="max")
    v = scorer(clips["fake"])
    assert v.ok and v.aggregation == "max" and v.score_threshold == pytest.approx(rule.threshold)
    assert v.score == pytest.approx(max(s for s in v.frame_scores if s is not None))
    assert v.probability == pytest.approx(float(rule.calibration(v.score)))
    assert v.threshold == pytest.approx(rule.probability_threshold)
    assert (v.label == "fake") == (v.score >= v.score_threshold) == (v.probability >= v.threshold - 1e-12)


def test_detector_without_calibration_is_used_as_it_is(run_dir, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(run_dir / "best", old)
    cfg = json.loads((old / "config.json").read_text())
    cfg["verdict"] = {"threshold": 0.37}  # what a detector from before calibration holds
    (old / "config.json").write_text(json.dumps(cfg))
    rule = read_record(old).rule("median")
    assert rule.calibration.method == "identity" and rule.threshold == 0.37
    m = evaluate(old, "test", out_dir=tmp_path / "ev", progress=False).metrics
    assert all(v["probability"] == pytest.approx(v["score"]) for v in m["videos"])
    assert "not calibrated" in (tmp_path / "ev" / "report.md").read_text()


def test_a_saved_platt_rule_without_a_reason_keeps_working(run_dir, clips, tmp_path):
    """Detectors saved before the choice was recorded hold ``{"method": "platt", "a", "b"}``:
    evaluate and detect apply it as before."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(run_dir / "best", old)
    cfg = json.loads((old / "config.json").read_text())
    cfg["verdict"]["aggregations"]["mean"]["calibration"] = {"method": "platt", "a": 0.5, "b": -0.4}
    (old / "config.json").write_text(json.dumps(cfg))
    rule = read_record(old).rule("mean")
    assert rule.calibration.method == "platt" and rule.calibration.reason == ""

    def platt(score: float) -> float:
        s = min(max(score, 1e-6), 1 - 1e-6)
        return 1 / (1 + np.exp(-(0.5 * np.log(s / (1 - s)) - 0.4)))

    m = evaluate(old, "test", out_dir=tmp_path / "ev", progress=False).metrics
    assert m["calibration"]["method"] == "platt"
    assert all(v["probability"] == pytest.approx(platt(v["score"])) for v in m["videos"])
    assert "Platt scaling fitted on validation videos" in (tmp_path / "ev" / "report.md").read_text()
    v = Scorer(old)(clips["fake"])
    assert v.calibration == "platt" and v.probability == pytest.approx(platt(v.score))
