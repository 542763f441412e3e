"""``tim study``: every cell, resumed cell by cell, tables that agree with the cells' metrics;
bootstrap intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from truthinmotion.apps.demo import demo_config, make_demo_data
from truthinmotion.core.metrics import binary_metrics
from truthinmotion.experiments.study import StudyPlan, bootstrap_interval, cell_name, run_full_study


def test_bootstrap_intervals_contain_the_estimate_and_shrink_with_more_videos():
    rng = np.random.default_rng(0)
    widths = []
    for n in (40, 1000):
        labels = rng.integers(0, 2, n)
        scores = labels * 0.6 + rng.normal(0, 0.5, n)
        auc = binary_metrics(labels, scores)["auc"]
        lo, hi = bootstrap_interval(lambda i: binary_metrics(labels[i], scores[i])["auc"], n, times=300)
        assert lo <= auc <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2  # about 1/sqrt(25) as wide


@pytest.mark.slow
def test_a_study_produces_every_cell_resumes_and_its_tables_agree_with_the_cells(tmp_path, monkeypatch):
    """Interrupted in its last cell, a distillation (whose best/ exists from its first epoch on):
    a re-run redoes no finished cell, resumes the distillation to its last epoch rather than
    tabulating its first epoch's detector, and writes tables that agree with every cell."""
    import csv

    import truthinmotion.training.train as train_mod

    out = tmp_path / "study"
    data = make_demo_data(tmp_path / "data", clips=6, frames=16)
    cfg, _ = demo_config(out, points=4, epochs=2)
    plan = StudyPlan(backbones=("dinov2-tiny", "dinov2-tiny-wide"), modalities=("flow",),
                     compress=("int8", "distill"), bootstrap=20)
    # First stopped at its third evaluation: two cells evaluated, the third trained but not evaluated.
    import truthinmotion.experiments.evaluate as evaluate_mod

    real_evaluate, evaluations = evaluate_mod.evaluate, []

    def stop_at_the_third_evaluation(*args, **kwargs):
        if len(evaluations) == 2:
            raise KeyboardInterrupt
        evaluations.append(args[0])
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(evaluate_mod, "evaluate", stop_at_the_third_evaluation)
    with pytest.raises(KeyboardInterrupt):
        run_full_study(data, out, cfg, plan, progress=False)
    monkeypatch.setattr(evaluate_mod, "evaluate", real_evaluate)
    assert len(list((out / "runs").glob("*/metrics.json"))) == 2
    unevaluated = out / "runs" / cell_name("dinov2-tiny-wide", "flow")
    assert (unevaluated / "best" / "config.json").is_file() and not (unevaluated / "metrics.json").exists()
    wide_trained = (unevaluated / "best" / "config.json").stat().st_mtime_ns
    # Then stopped in its last cell, the distillation, after its first epoch.
    real, student_epochs = train_mod.validate, []

    def stop_distillation_after_epoch_1(model, *args, **kwargs):
        if model.record.provenance.distilled_from:
            student_epochs.append(1)
            if len(student_epochs) == 2:
                raise KeyboardInterrupt
        return real(model, *args, **kwargs)

    monkeypatch.setattr(train_mod, "validate", stop_distillation_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        run_full_study(data, out, cfg, plan, progress=False)
    monkeypatch.setattr(train_mod, "validate", real)
    # the trained cell was evaluated on the second run, not trained again
    assert (unevaluated / "metrics.json").is_file()
    assert (unevaluated / "best" / "config.json").stat().st_mtime_ns == wide_trained
    student = out / "runs" / cell_name("dinov2-tiny", "flow", "distill")
    assert (student / "best" / "config.json").is_file()
    epochs = lambda: [int(r["epoch"]) for r in csv.DictReader(open(student / "metrics.csv"))]  # noqa: E731
    assert epochs() == [1]
    # What finished stays finished: two trained cells and their int8 copies, each evaluated.
    finished = {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/metrics.json")}
    trained = {p.parent.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/best/config.json")
               if p.parent.parent != student}
    assert len(finished) == len(trained) == 4
    result = run_full_study(data, out, cfg, plan, progress=False)
    for name, t in finished.items():
        assert (out / "runs" / name / "metrics.json").stat().st_mtime_ns == t  # not evaluated again
    for name, t in trained.items():
        assert (out / "runs" / name / "best" / "config.json").stat().st_mtime_ns == t  # not made again
    assert sum("is done; skipped" in line for line in result.lines) == 4
    assert sum("already trained; skipped" in line for line in result.lines) == 2  # the two trained cells
    assert epochs() == [1, 2]  # the distillation resumed, not skipped and not started again
    assert not any(line.startswith("distill:") for line in result.lines)
    assert json.loads((student / "metrics.json").read_text())["run"] == str(student.resolve())
    # Every cell: 2 backbones x flow, each also int8, and one distilled student.
    table = json.loads((out / "study.json").read_text())
    cells = {(r["backbone"], r["modality"], r["variant"]) for r in table["rows"]}
    expected = {(b, m, v) for b in plan.backbones for m in plan.modalities for v in ("fp32", "int8")}
    expected |= {("dinov2-tiny", m, "distill") for m in plan.modalities}
    assert cells == expected
    for r in table["rows"]:
        run = out / "runs" / cell_name(r["backbone"], r["modality"], "" if r["variant"] == "fp32" else r["variant"])
        m = json.loads((run / "metrics.json").read_text())
        t = r["test"]
        assert t["videos"] == m["overall"]["video"]["count"]
        for key, value in (("video_auc", m["overall"]["video"]["auc"]), ("frame_auc", m["overall"]["frame"]["auc"]),
                           ("accuracy", m["overall"]["video"]["acc@thr"]), ("ece", m["calibration"]["ece_after"])):
            assert t[key]["value"] == value or (np.isnan(value) and np.isnan(t[key]["value"]))
            lo, hi = t[key]["ci95"]
            assert not lo > hi
        assert r["speed"]["size_mb"] and r["speed"]["latency_p50_ms"]
    md = (out / "study.md").read_text()
    assert "| flow | dinov2-tiny |" in md and "about 53% accuracy" in md and "| int8 |" in md
    assert (out / "study.png").is_file()
    again = run_full_study(data, out, cfg, plan, progress=False)
    assert any(line == f"distill: {student.name} is already trained; skipped" for line in again.lines)


def _work_copy(work, root, keep) -> int:
    """A work directory at ``root`` sharing ``work``'s artifacts, whose test split holds the videos
    ``keep(row)`` chooses (the others move to train); returns its number of test videos."""
    import csv

    root.mkdir(parents=True)
    for name in ("faces", "flow"):
        (root / name).symlink_to(work / name)
    with open(work / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["split"] = "test" if keep(r) else "train"
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return sum(r["split"] == "test" for r in rows)


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    """A finished one-cell study: (data, out, settings, plan)."""
    root = tmp_path_factory.mktemp("small-study")
    out = root / "study"
    data = make_demo_data(root / "data", clips=6, frames=16)
    cfg, _ = demo_config(out, points=4, epochs=1)
    plan = StudyPlan(backbones=("dinov2-tiny",), modalities=("flow",), bootstrap=20)
    run_full_study(data, out, cfg, plan, progress=False)
    return data, out, cfg, plan


@pytest.mark.slow
def test_cross_work_directories_of_one_name_are_cells_of_their_own(small_study, tmp_path):
    """--cross /x/celebdf/work /x/dfdc/work: two cells and two columns, each with its own figures."""
    from truthinmotion.core.io import path_key as cross_key

    data, out, cfg, plan = small_study
    a, b = tmp_path / "x" / "celebdf" / "work", tmp_path / "x" / "dfdc" / "work"
    n_a = _work_copy(out / "work", a, lambda r: True)
    n_b = _work_copy(out / "work", b, lambda r: r["label"] == "1" or r["video_id"] == "real-real000")
    assert cross_key(a) != cross_key(b) and cross_key(a).startswith("celebdf-work-")
    assert cross_key(tmp_path / "x" / "celebdf" / ".." / "celebdf" / "work") == cross_key(a)  # the resolved path
    result = run_full_study(data, out, cfg, StudyPlan(**{**plan.__dict__, "cross": (str(a), str(b))}), progress=False)
    assert not any("cross-" in line and "skipped" in line for line in result.lines)
    row = json.loads((out / "study.json").read_text())["rows"][0]
    assert set(row["cross"]) == {cross_key(a), cross_key(b)}
    assert (row["cross"][cross_key(a)]["videos"], row["cross"][cross_key(b)]["videos"]) == (n_a, n_b)
    md = (out / "study.md").read_text()
    assert cross_key(a) in md and cross_key(b) in md


@pytest.mark.slow
def test_a_study_resumed_on_another_split_is_refused_unless_asked(small_study):
    """Re-indexed with another seed, the videos fall into other splits: the trained cell would be
    tested on videos it trained on. Refused before any video is touched, the manifest kept; asked
    for, the cell is evaluated again on the new split, and the table says which split it was."""
    import dataclasses

    from truthinmotion.core.errors import ConfigError
    from truthinmotion.data.index import manifest_hash

    data, out, cfg, plan = small_study
    work = out / "work"
    saved, trained_on = (work / "manifest.csv").read_bytes(), manifest_hash(work)
    reseeded = dataclasses.replace(cfg, index=cfg.index.updated({"seed": 7}))
    with pytest.raises(ConfigError, match=rf"1 run\(s\) under .*dinov2-tiny-flow.*manifest hash {trained_on}, now "
                                          r".*--allow-split-change"):
        run_full_study(data, out, reseeded, plan, progress=False)
    assert (work / "manifest.csv").read_bytes() == saved
    try:
        result = run_full_study(data, out, reseeded, plan, progress=False, allow_split_change=True)
        now = manifest_hash(work)
        assert now != trained_on
        assert any(line.startswith("train:") and "skipped" in line for line in result.lines)  # not retrained
        assert not any(line.startswith("evaluate:") for line in result.lines)  # evaluated again
        row = json.loads((out / "study.json").read_text())["rows"][0]
        assert (row["test"]["manifest_hash"], row["test"]["trained_manifest_hash"]) == (now, trained_on)
    finally:  # back to the split the cell was trained on, for the other tests of the module
        run_full_study(data, out, cfg, plan, progress=False, allow_split_change=True)
    assert manifest_hash(work) == trained_on


@pytest.mark.slow
def test_study_robustness_adds_each_cells_table_and_resumes(small_study):
    """tim study --robustness gb --robustness-levels 1: the cell's table of tim robustness joins
    study.json and study.md; its clean row is the cell's own test figures; a second study scores
    no copy again."""
    pytest.importorskip("av")
    data, out, cfg, plan = small_study
    robust = StudyPlan(**{**plan.__dict__, "robustness": ("gb",), "robustness_levels": (1,)})
    first = run_full_study(data, out, cfg, robust, progress=False)
    row = json.loads((out / "study.json").read_text())["rows"][0]
    table = row["robustness"]
    videos = row["test"]["videos"]
    assert table["clean"]["videos"] + sum(table["clean"]["failed"].values()) == videos
    assert table["clean"]["auc"] == pytest.approx(row["test"]["video_auc"]["value"])
    assert [(r["perturbation"], r["level"], r["videos"]) for r in table["rows"]] == [("gb", 1, videos)]
    assert f"robustness: {row['run'].split('/')[-1]}: {2 * videos} copies scored now, 0 already done" in first.lines
    assert "## Robustness: flow, dinov2-tiny, fp32" in (out / "study.md").read_text()
    again = run_full_study(data, out, cfg, robust, progress=False)
    assert any(line.endswith(f"0 copies scored now, {2 * videos} already done") for line in again.lines)
