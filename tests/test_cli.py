from __future__ import annotations

import csv
import json

import pytest

from truthinmotion.apps.cli import main
from truthinmotion.inference.scorer import Scorer


@pytest.mark.slow
def test_demo_end_to_end_and_resume(tmp_path, capsys):
    """`tim demo` at a reduced size: every stage runs, the report says which weights were used;
    the study waits for `--study`, which resumes the demo (redoing nothing) and adds it."""
    out = tmp_path / "demo"
    args = ["demo", "-o", str(out), "--clips", "8", "--points", "6", "--epochs", "2", "-q"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed and "indexed 16 videos" in printed
    assert "faces: 16 processed" in printed and "features: 16 processed" in printed
    assert printed.count("detect ") == 2 and "report:" in printed
    assert len(list(out.glob("detect-*.html"))) == 2
    # The first command stops there: no study, and it says how to run one.
    assert "tim demo --study" in printed and "## Accuracy by modality" not in printed
    assert not (out / "study.json").exists() and not (out / "runs" / "dinov2-tiny-flow").exists()
    # Running again with --study redoes nothing of the demo (every stage finds its work done) ...
    assert main(args + ["--study"]) == 0
    again = capsys.readouterr().out
    assert "faces: 0 processed, 16 already done" in again and "already trained; skipped" in again
    assert again.count("detect ") == 2
    # ... and ends with a small study's table: three modalities by two tiny backbones
    assert "## Accuracy by modality and backbone" in again and again.count("| dinov2-tiny") >= 6
    study = json.loads((out / "study.json").read_text())
    assert {(r["backbone"], r["modality"], r["variant"]) for r in study["rows"]} == {
        (b, m, v) for b in ("dinov2-tiny", "dinov2-tiny-wide") for m in ("flow", "depth", "flow+depth")
        for v in ("fp32", "int8")}
    report = (out / "runs" / "demo" / "report.md").read_text()
    assert "backbone weights: **random**" in report and "random-saved" in report
    metrics = json.loads((out / "runs" / "demo" / "metrics.json").read_text())
    assert metrics["overall"]["video"]["count"] >= 2
    # One truth for a video's scores: detect on a test video gives the per-point scores that
    # evaluate wrote for it (predictions.csv), through the same input code and the same storage
    # round trip (JPEG crops, flow in 1/16 px, depth in 12 bits) that training read back.
    with open(out / "runs" / "demo" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    vid = rows[0]["video_id"]
    kind, name = vid.split("-", 1)
    video = out / "data" / kind / f"{name}.mp4"
    scorer = Scorer(out / "runs" / "demo")
    verdict = scorer(video)
    by_frame = dict(zip(verdict.frame_index, verdict.frame_scores))
    diffs = [abs(float(r["score"]) - by_frame[int(r["frame_index"])]) for r in rows if r["video_id"] == vid]
    assert len(diffs) == 6 and max(diffs) <= 1e-5


def test_bad_configuration_exits_2_with_a_message(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("num_point: 8\n")
    (tmp_path / "w").mkdir()
    assert main(["faces", str(tmp_path / "w"), "--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) num_point" in err and "num_points" in err
    assert main(["faces", str(tmp_path / "w")]) == 2
    assert "run `tim index" in capsys.readouterr().err
    (tmp_path / "c.yaml").write_text("flow:\n  winsize: 1\n")
    assert main(["features", str(tmp_path / "w"), "--config", str(tmp_path / "c.yaml")]) == 2
    assert "winsize >= 3" in capsys.readouterr().err


def test_index_then_faces_through_the_cli(tmp_path, clips, capsys):
    data = tmp_path / "data"
    (data / "real").mkdir(parents=True)
    (data / "fake").mkdir()
    (data / "real" / "a.mp4").write_bytes(clips["real"].read_bytes())
    (data / "fake" / "b.mp4").write_bytes(clips["fake"].read_bytes())
    assert main(["index", str(data), "--format", "folder", "-o", str(tmp_path / "w"), "--ratios", "1,0,0"]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["faces", str(tmp_path / "w"), "--points", "4", "--size", "64", "-q"]) == 0
    assert "2 processed" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "w" / "faces").iterdir()) == ["fake-b.npz", "real-a.npz", "settings.json"]
