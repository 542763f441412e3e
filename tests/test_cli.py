from __future__ import annotations

import csv
import json
import logging

import pytest

from truthinmotion.cli import main, set_up_logging
from truthinmotion.detect import Scorer


@pytest.mark.slow
def test_demo_end_to_end_and_resume(tmp_path, capsys):
    """`tim demo` at a reduced size: every stage runs, the report says which weights were used."""
    out = tmp_path / "demo"
    args = ["demo", "-o", str(out), "--clips", "8", "--points", "6", "--epochs", "2", "-q"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed and "indexed 16 videos" in printed
    assert "faces: 16 processed" in printed and "features: 16 processed" in printed
    assert printed.count("detect ") == 2 and "report:" in printed
    # ... and ends with a small study's table: three modalities by two tiny backbones
    assert "## Accuracy by modality and backbone" in printed and printed.count("| dinov2-tiny") >= 6
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
    # Running again redoes nothing: every stage finds its work done.
    assert main(args) == 0
    again = capsys.readouterr().out
    assert "faces: 0 processed, 16 already done" in again and "already trained; skipped" in again


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


def test_library_noise_only_with_verbose(tmp_path):
    """`tim features` with int8 depth loads a saved model (transformers' "Loading weights" bar) and
    quantizes it (ONNX Runtime's root-logger INFO per tensor): neither reaches the console unless
    -v; truthinmotion's own INFO lines do."""
    import os
    import subprocess
    import sys

    import torch
    from transformers import DepthAnythingForDepthEstimation
    from transformers.utils import logging as hf_logging

    from synthetic import make_workdir
    from truthinmotion.features import depth_anything_config

    work = make_workdir(tmp_path / "w", n_per_class=2, k=2, splits=(1, 1, 0))
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(depth_anything_config("depth-anything-v2-tiny")).save_pretrained(tmp_path / "da")
    printed = {}
    for flag in ("", "-v"):
        env = {**os.environ, "TIM_CACHE_DIR": str(tmp_path / f"cache{flag}")}  # quantized anew each time
        cmd = [sys.executable, "-m", "truthinmotion.cli", "features", str(work), "--flow", "none", "--depth",
               str(tmp_path / "da"), "--depth-size", "56", "--depth-precision", "int8", "--overwrite"]
        done = subprocess.run(cmd + ([flag] if flag else []), env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        printed[flag] = done.stdout + done.stderr
        assert "features: 4 processed" in printed[flag]
    for noise in ("Quantization parameters for tensor", "Loading weights"):
        assert noise not in printed[""] and noise in printed["-v"], noise
    # truthinmotion's own INFO messages stay on the console; -q keeps its warnings only
    for quiet, verbose, ours, theirs in ((False, False, "INFO", "WARNING"), (True, False, "WARNING", "WARNING"),
                                         (False, True, "INFO", "INFO")):
        set_up_logging(quiet, verbose)
        assert logging.getLevelName(logging.getLogger("truthinmotion.features").getEffectiveLevel()) == ours
        assert logging.getLevelName(logging.getLogger().level) == theirs  # where ONNX Runtime's quantizer logs
        assert hf_logging.get_verbosity() == getattr(logging, theirs)  # transformers, imported in this process
        assert hf_logging.is_progress_bar_enabled() == verbose
    set_up_logging()
