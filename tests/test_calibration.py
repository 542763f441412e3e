"""Calibrated probabilities and thresholds that match the aggregation."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from truthinmotion.models.calibration import Calibration, brier, expected_calibration_error, fit_verdict_rules
from truthinmotion.inference.scorer import Scorer
from truthinmotion.experiments.evaluate import evaluate
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
    assert "Expected calibration error" in (tmp_path / "ev" / "report.md").read_text()
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
