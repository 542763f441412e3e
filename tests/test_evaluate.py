from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

from synthetic import make_workdir
from truthinmotion.core.errors import ConfigError
from truthinmotion.experiments.evaluate import evaluate
from truthinmotion.core.metrics import binary_metrics, eer, video_level, youden_threshold
from truthinmotion.training.train import TrainConfig, train


def test_binary_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.clip(labels * 0.3 + rng.normal(0.35, 0.25, 200), 0, 1)
    m = binary_metrics(labels, scores, threshold=0.6)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["ap"] == pytest.approx(average_precision_score(labels, scores))
    assert m["acc@0.5"] == pytest.approx(accuracy_score(labels, scores >= 0.5))
    assert m["acc@thr"] == pytest.approx(accuracy_score(labels, scores >= 0.6))
    assert (m["count"], m["real"], m["fake"]) == (200, int((labels == 0).sum()), int(labels.sum()))
    one_class = binary_metrics(np.ones(5), np.linspace(0, 1, 5))
    assert np.isnan(one_class["auc"]) and np.isnan(one_class["eer"]) and one_class["acc@0.5"] == 0.6


def test_eer_known_answers():
    assert eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0  # separable
    assert eer([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 1.0  # inverted
    # Reals 0.1..0.4 and 0.7, fakes 0.6 and 0.8..1.0 (5 each): a threshold in (0.6, 0.7)
    # misclassifies one real (FPR 1/5) and one fake (FNR 1/5): EER 0.2.
    labels = [0] * 5 + [1] * 5
    scores = [0.1, 0.2, 0.3, 0.4, 0.7, 0.6, 0.8, 0.9, 0.95, 1.0]
    assert eer(labels, scores) == pytest.approx(0.2)
    # Calling >= 0.8 fake (one fake missed) and >= 0.6 fake (one real flagged) tie on TPR - FPR;
    # the first, stricter one is kept, and the threshold is midway between 0.8 and the next
    # lower score, 0.7.
    assert youden_threshold(labels, scores) == pytest.approx(0.75)
    assert youden_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.5)


def test_video_aggregation_by_hand():
    probs = np.array([0.2, 0.4, 0.9, 0.1, 0.3, 0.8, 1.0])
    videos = np.array([5, 5, 2, 2, 2, 7, 7])
    labels = np.array([0, 0, 1, 1, 1, 1, 1])
    ids, scores, vlabels = video_level(probs, videos, labels, "mean")
    assert ids.tolist() == [5, 2, 7]  # in order of first appearance
    np.testing.assert_allclose(scores, [0.3, 1.3 / 3, 0.9])
    assert vlabels.tolist() == [0, 1, 1]
    np.testing.assert_allclose(video_level(probs, videos, labels, "max")[1], [0.4, 0.9, 1.0])
    np.testing.assert_allclose(video_level(probs, videos, labels, "median")[1], [0.3, 0.3, 0.9])
    np.testing.assert_allclose(video_level(probs, videos, labels, "top25")[1], [0.4, 0.9, 1.0])
    with pytest.raises(ValueError):
        video_level(probs, videos, labels, "mode")



def _video_level_by_masks(*args):
    """``video_level`` as it was (a mask over every frame per item): the reference for its results,
    kept once, in the benchmark that times the two."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "aggregation.py"
    spec = importlib.util.spec_from_file_location("aggregation_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.video_level_by_masks(*args)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_video_aggregation_matches_the_per_item_masks_exactly(dtype):
    """Grouping frames by sorting gives bit for bit the scores of one mask per item, in the same
    order, for items of every length (one point included) interleaved in any order, with and
    without faces grouped into videos."""
    rng = np.random.default_rng(7)
    points = rng.choice([1, 2, 3, 5, 8, 31, 32, 33], size=300)
    items = np.repeat(rng.permutation(1000)[:300], points)  # ids out of order, not 0..n-1
    shuffle = rng.permutation(len(items))
    items = items[shuffle]
    probs = rng.random(len(items)).astype(dtype)
    labels = (items % 2)  # one label per item
    videos = np.array([f"v{i // 3}" for i in items])  # three faces to a video
    for how in ("mean", "median", "max", "top25"):
        for groups in (None, videos):
            new = video_level(probs, items, labels, how, groups)
            old = _video_level_by_masks(probs, items, labels, how, groups)
            for a, b in zip(new, old):
                assert a.tolist() == b.tolist(), how
    assert [len(x) for x in video_level(probs[:0], items[:0], labels[:0], "top25", videos[:0])] == [0, 0, 0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    work = make_workdir(root / "w")
    cfg = TrainConfig(backbone="dinov2-tiny", init="random", image_size=56, workers=0, progress=False,
                      epochs=3, batch_size=6, lr=1e-3, train_points=4, flow_encoding="hsv-per-picture",
                      flow_relative=False)
    train(work, cfg, root / "run")
    return work, root / "run"


def test_evaluate_writes_report_with_per_method_rows(trained, tmp_path):
    import csv

    work, run = trained
    # Give the test fakes two methods, so the breakdown has two rows.
    with open(work / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    fakes = [r for r in rows if r["split"] == "test" and r["label"] == "1"]
    for i, r in enumerate(fakes):
        r["method"] = "swapA" if i % 2 else "swapB"
    with open(work / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    result = evaluate(run, "test", progress=False)
    m = json.loads((run / "metrics.json").read_text())
    assert m["overall"]["video"]["count"] == 8 and m["overall"]["frame"]["count"] == 48
    assert set(m["per_method"]) == {"swapA", "swapB"}
    for block in m["per_method"].values():
        assert block["video"]["real"] == 4 and block["video"]["fake"] == 2
    # Per-method AUC recomputed from the per-video scores.
    vids = m["videos"]
    for method in ("swapA", "swapB"):
        sub = [v for v in vids if v["label"] == 0 or v["method"] == method]
        assert m["per_method"][method]["video"]["auc"] == pytest.approx(
            roc_auc_score([v["label"] for v in sub], [v["score"] for v in sub]))
    assert m["overall"]["video"]["auc"] >= 0.9  # the synthetic artefact is learnt
    report = (run / "report.md").read_text()
    assert "random" in report and "real + swapA" in report and "dinov2-tiny" in report
    # Twins made after training (tim synth) get a row of their own; the headline figures stay
    # over the dataset's fakes this detector was trained on.
    import shutil

    from truthinmotion.data.index import read_manifest, write_manifest

    rows = read_manifest(work)
    twins = [{**r, "video_id": f"pseudo-blend-0-{r['video_id']}", "label": 1, "method": "pseudo-blend",
              "source": r["video_id"]} for r in rows if r["split"] == "test" and int(r["label"]) == 0][:3]
    for t in twins:
        for art in work.rglob(f"{t['source']}.npz"):
            shutil.copy(art, art.with_name(f"{t['video_id']}.npz"))
    write_manifest(work, rows + twins)
    try:
        again = json.loads((evaluate(run, "test", out_dir=tmp_path / "again", progress=False).out_dir
                            / "metrics.json").read_text())
    finally:
        write_manifest(work, rows)
    assert again["overall_fakes"] == "dataset" and again["overall"] == m["overall"]
    assert again["calibration"]["ece_after"] == m["calibration"]["ece_after"]
    assert again["per_method"]["pseudo-blend"]["video"]["fake"] == 3 and len(again["videos"]) == 11
    assert (run / "roc.png").stat().st_size > 1000 and (run / "scores.png").is_file()
    assert "video AUC" in result.summary()


def test_cross_dataset_evaluation_checks_feature_settings(trained, tmp_path):
    work, run = trained
    other = make_workdir(tmp_path / "other", seed=5)
    result = evaluate(run, "test", workdir=other, progress=False)
    assert result.out_dir.parent == run and result.metrics["cross_dataset"]
    # named by the work directory's last two path parts and a hash: two .../other never share a folder
    assert result.out_dir.name.startswith(f"eval-{tmp_path.name}-other-") and result.out_dir.name.endswith("-test")
    # Flow computed with other settings is refused, not silently scored.
    import shutil

    from truthinmotion.features.flow import FlowConfig
    from truthinmotion.features.stage import run_features

    shutil.rmtree(other / "flow")
    run_features(other, FlowConfig(winsize=21), None, progress=False)
    with pytest.raises(ConfigError, match="other settings"):
        evaluate(run, "test", workdir=other, progress=False)


def test_evaluation_refuses_a_split_the_detector_was_not_trained_on(trained, tmp_path, capsys):
    """A re-index that moved a training video into test: evaluating would score it; refused (and
    named: --allow-split-change) unless asked, recorded when asked."""
    from truthinmotion.apps.cli import main
    from truthinmotion.data.index import manifest_hash

    work, run = trained
    saved = (work / "manifest.csv").read_bytes()
    trained_on = manifest_hash(work)
    text = saved.decode().replace("real000,/synthetic/real000.mp4,0,synthetic,real,real000,train",
                                  "real000,/synthetic/real000.mp4,0,synthetic,real,real000,test")
    assert text != saved.decode()
    try:
        (work / "manifest.csv").write_text(text)
        with pytest.raises(ConfigError, match=rf"{run}.*manifest hash {trained_on}, now .*--allow-split-change"):
            evaluate(run, "test", out_dir=tmp_path / "refused", progress=False)
        assert not (tmp_path / "refused" / "metrics.json").exists()
        assert main(["evaluate", str(run), "--out", str(tmp_path / "cli"), "-q"]) == 2
        assert "--allow-split-change" in capsys.readouterr().err
        assert main(["evaluate", str(run), "--out", str(tmp_path / "cli"), "--allow-split-change", "-q"]) == 0
        m = json.loads((tmp_path / "cli" / "metrics.json").read_text())
        assert m["trained_manifest_hash"] == trained_on and m["manifest_hash"] == manifest_hash(work) != trained_on
        assert "real000" in {v["video_id"] for v in m["videos"]}  # the moved video was scored, as asked
    finally:
        (work / "manifest.csv").write_bytes(saved)
    # Cross-dataset evaluation has its own split: no refusal.
    other = make_workdir(tmp_path / "other", seed=5)
    assert evaluate(run, "test", workdir=other, progress=False).metrics["manifest_hash"] == manifest_hash(other)


def test_every_face_is_scored_and_the_video_takes_its_highest(tmp_path):
    """Videos with a second face: evaluate scores both (predictions.csv, track 0 and 1), and a
    video's score is the highest of its faces' aggregated scores; training on all faces trains on
    both."""
    import csv

    work = make_workdir(tmp_path / "w", second_face=True)
    cfg = TrainConfig(backbone="dinov2-tiny", init="random", image_size=56, workers=0, progress=False,
                      epochs=1, batch_size=6, lr=1e-3, train_points=2, train_faces="all")
    result = train(work, cfg, tmp_path / "run")
    assert "train: 48 faces of 24 videos" in (tmp_path / "run" / "train.log").read_text()
    m = evaluate(tmp_path / "run", "test", aggregation="median", out_dir=tmp_path / "ev", progress=False).metrics
    with open(tmp_path / "ev" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    faces: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        faces.setdefault((r["video_id"], r["track"]), []).append(float(r["score"]))
    assert {t for _, t in faces} == {"0", "1"}
    assert all(len(v) == (6 if t == "0" else 3) for (_, t), v in faces.items())
    for v in m["videos"]:
        expected = max(float(np.median(s)) for (vid, _), s in faces.items() if vid == v["video_id"])
        assert v["score"] == pytest.approx(expected, abs=1e-6) and v["faces"] == 2
    assert m["overall"]["video"]["count"] == 8 and result.epochs_run == 1
