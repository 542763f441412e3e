"""Bad input, interrupts and faults, as a careless user or a hostile upload would bring them."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from synthetic import make_workdir
from truthinmotion.media import video as video_mod
from truthinmotion.apps.cli import main
from truthinmotion.experiments.compress import compress
from truthinmotion.core.errors import ConfigError
from truthinmotion.inference.detect import _plot_names, _write
from truthinmotion.faces.mtcnn import FaceDetector
from truthinmotion.faces.artifact import Faces
from truthinmotion.faces.config import FacesConfig
from truthinmotion.faces.extract import extract_faces
from truthinmotion.faces.stage import run_faces
from truthinmotion.core.errors import StageError
from truthinmotion.core.io import WorkDir, load_npz
from truthinmotion.models.detector import Detector
from truthinmotion.media.clips import synth_clip, write_video
from truthinmotion.training.train import TrainConfig, train


def _strict(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def _manifest(work: Path, rows: list[dict]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    with open(work / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["video_id", "path", "label", "dataset", "method", "group", "split"])
        w.writeheader()
        for r in rows:
            w.writerow({"label": 0, "dataset": "t", "method": "real", "group": r["video_id"], "split": "train", **r})


def test_nan_weights_give_an_error_status_and_strict_json(run_dir, clips, tmp_path, capsys):
    bad = tmp_path / "nan-run"
    shutil.copytree(run_dir, bad)
    model = Detector.from_pretrained(bad)
    with torch.no_grad():
        next(model.heads.parameters()).fill_(float("nan"))
    model.save_pretrained(bad / "best")
    out = tmp_path / "v.json"
    assert main(["detect", str(clips["real"]), "--model", str(bad), "--json", str(out), "-q"]) == 1
    (verdict,) = _strict(out.read_text())
    assert verdict["status"] == "non_finite" and verdict["probability"] is None and verdict["label"] is None
    assert "non-finite" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="not finite"):
        compress(bad, "onnx", tmp_path / "onnx")
    assert not (tmp_path / "onnx" / "best").exists()


def test_run_directory_works_from_anywhere(tmp_path, monkeypatch, clips):
    """A local depth model given as a relative path is recorded so that detect finds it from
    another working directory."""
    from transformers import DepthAnythingForDepthEstimation

    from truthinmotion.inference.scorer import Scorer
    from truthinmotion.features import DepthConfig, depth_anything_config
    from truthinmotion.backends.weights import save_random_model

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    save_random_model(DepthAnythingForDepthEstimation(depth_anything_config("depth-anything-v2-tiny")),
                      Path("models/da"))
    work = make_workdir(tmp_path / "w", n_per_class=6, splits=(3, 2, 1), depth=DepthConfig(model="models/da",
                                                                                            input_size=56))
    meta = load_npz(next((tmp_path / "w" / "depth" / "da").glob("*.npz")), ())[1]
    assert meta["model"] == str((tmp_path / "models" / "da").resolve())
    train(work, TrainConfig(backbone="dinov2-tiny", init="random", image_size=56, workers=0, progress=False,
                            modality="depth", depth="da", epochs=1), tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert Scorer(tmp_path / "run")(clips["real"]).ok


def test_container_without_a_frame_count_is_sampled_from_what_decodes(clips, monkeypatch):
    real = video_mod.cv2.VideoCapture

    class NoCount:  # what OpenCV reports for a streamed WebM/MKV: no count
        def __init__(self, *a):
            self.cap = real(*a)

        def get(self, prop):
            return -1.0 if prop == video_mod.cv2.CAP_PROP_FRAME_COUNT else self.cap.get(prop)

        def __getattr__(self, name):
            return getattr(self.cap, name)

    monkeypatch.setattr(video_mod.cv2, "VideoCapture", NoCount)
    info = video_mod.probe(clips["real"])
    assert info.frames == 30
    cfg = FacesConfig(num_points=8, size=64)
    faces = extract_faces(clips["real"], cfg, FaceDetector.from_config(cfg))
    assert faces.frame_index.max() == 28 and faces.valid.all()


def test_short_clips_and_too_many_points(tmp_path):
    frames = synth_clip(False, frames=5, size=256, seed=3)
    one = write_video(tmp_path / "one.mp4", frames[:1])
    two = write_video(tmp_path / "two.mp4", frames[:2])
    five = write_video(tmp_path / "five.mp4", frames)
    cfg = FacesConfig(num_points=1000, size=64)
    det = FaceDetector.from_config(cfg)
    with pytest.raises(StageError) as err:
        extract_faces(one, cfg, det)
    assert err.value.status == "too_short"
    assert extract_faces(two, cfg, det).frame_index.tolist() == [0]  # one distinct pair, not 16 copies
    assert extract_faces(five, cfg, det).frame_index.tolist() == [0, 1, 2, 3]
    # Memory is bounded: frames a video would need beyond max_memory_mb make it too_large.
    big = write_video(tmp_path / "big.mp4", np.zeros((30, 1080, 1920, 3), np.uint8))
    with pytest.raises(StageError) as err:
        extract_faces(big, FacesConfig(num_points=64, max_memory_mb=64), det)
    assert err.value.status == "too_large" and "max_memory_mb" in err.value.reason


def test_faces_follow_the_video_and_the_settings(tmp_path, clips, capsys):
    work = tmp_path / "w"
    _manifest(work, [{"video_id": "x", "path": str(clips["real"])}])
    cfg = FacesConfig(num_points=4, size=64)
    assert run_faces(work, cfg, progress=False).processed == 1
    first = Faces.load(WorkDir(work).faces("x"))
    assert run_faces(work, cfg, progress=False).skipped == 1  # done, the video unchanged
    _manifest(work, [{"video_id": "x", "path": str(clips["fake"])}])  # re-indexed to another file
    assert run_faces(work, cfg, progress=False).processed == 1
    again = Faces.load(WorkDir(work).faces("x"))
    assert again.meta["source"]["path"] == str(clips["fake"].resolve()) and not np.array_equal(again.crops, first.crops)
    with pytest.raises(ConfigError, match="other settings.*num_points: 4"):
        run_faces(work, cfg.updated({"num_points": 6}), progress=False)
    assert run_faces(work, cfg.updated({"num_points": 6}), overwrite=True, progress=False).processed == 1
    assert len(Faces.load(WorkDir(work).faces("x")).frame_index) == 6
    # Stale temporaries of a killed run are removed at the start of the next.
    stale = work / "faces" / ".x.npz.abc123.tmp.npz"
    stale.write_bytes(b"half")
    run_faces(work, cfg.updated({"num_points": 6}), progress=False)
    assert not stale.exists()
    meta = Faces.load(WorkDir(work).faces("x")).meta
    assert meta["time_points"] == 6 and 0 < meta["refined_points"] <= 6  # O-net's confirmed points, not K


def test_outputs_are_checked_before_scoring(run_dir, clips, tmp_path, capsys):
    video = tmp_path / "keep.mp4"
    shutil.copy(clips["real"], video)
    original = video.read_bytes()
    for target, message in ((video, "is one of the videos"), (tmp_path, "is a directory"),
                            (video / "v.json", "keep.mp4 is a file, not a directory")):
        start = time.perf_counter()
        assert main(["detect", str(video), "--model", str(run_dir), "--json", str(target), "-q"]) == 2
        assert message in capsys.readouterr().err and time.perf_counter() - start < 5  # before any scoring
    assert main(["detect", str(video), "--model", str(run_dir), "--csv", str(video)]) == 2
    assert video.read_bytes() == original
    # A write that still fails after scoring keeps the results elsewhere and says where.
    rescued = _write(Path("/proc/tim-cannot-write.json"), '{"kept": true}')
    assert rescued != Path("/proc/tim-cannot-write.json") and json.loads(rescued.read_text()) == {"kept": True}
    rescued.unlink()
    names = _plot_names([Path("a/clip.mp4"), Path("b/clip.mp4"), Path("b/other.mp4")])
    assert len(set(names.values())) == 3 and names[Path("b/other.mp4")] == "other"


def test_usage_errors_exit_2_without_a_traceback(run_dir, clips, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "best" / "config.json").write_text("{not json")
    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir, damaged)
    (damaged / "best" / "model.safetensors").write_bytes(b"\x00" * 100)
    (tmp_path / "bad.yaml").write_text("epochs: [1,\n")
    (tmp_path / "student.yaml").write_text("distill:\n  epochs: 1\n")
    (tmp_path / "w").mkdir()
    cases = [
        (["detect", str(clips["real"]), "--model", str(broken)], "damaged"),
        (["detect", str(clips["real"]), "--model", str(damaged)], "cannot be loaded"),
        (["train", str(tmp_path / "w"), "-o", str(tmp_path / "r"), "--config", str(tmp_path / "bad.yaml")], "not valid YAML"),
        (["detect", str(clips["real"]), "--model", str(run_dir), "--device", "cuda"], "no CUDA device"),
        (["detect", str(clips["real"]), "--model", str(run_dir), "--device", "tpu"], "not cpu, cuda"),
        (["benchmark", str(run_dir), "--repeats", "0"], "1 or more"),
        (["benchmark", str(run_dir), "--split", "bogus"], "invalid choice"),
        (["evaluate", str(run_dir), "--split", "bogus"], "invalid choice"),
        (["detect", str(clips["real"]), "--model", str(run_dir), "--aggregation", "mode"], "invalid choice"),
        (["faces", str(tmp_path / "w"), "--limit", "-1"], "1 or more"),
        (["compress", str(run_dir), "--method", "onnx", "-o", str(tmp_path / "o"), "--config",
          str(tmp_path / "bad.yaml")], "not valid YAML"),
        (["compress", str(run_dir), "--method", "onnx", "-o", str(tmp_path / "o"), "--config",
          str(tmp_path / "student.yaml")], "applies to --method distill only"),
    ]
    for argv, message in cases:
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's own usage errors
            code = exit_.code
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)


def test_features_before_faces_is_a_usage_error(tmp_path, capsys):
    _manifest(tmp_path / "w", [{"video_id": "a", "path": "/nowhere/a.mp4"}])
    assert main(["features", str(tmp_path / "w"), "--depth", "none"]) == 2
    assert "run `tim faces" in capsys.readouterr().err


def test_quiet_training_prints_no_info_lines(tmp_path, capfd):
    work = make_workdir(tmp_path / "w", n_per_class=6, splits=(3, 2, 1))
    assert main(["train", str(work), "-o", str(tmp_path / "r"), "--backbone", "dinov2-tiny", "--init", "random",
                 "--image-size", "56", "--workers", "0", "--epochs", "1", "-q"]) == 0
    err = capfd.readouterr().err
    assert "INFO" not in err and "epoch 1:" not in err
    assert "epoch 1:" in (tmp_path / "r" / "train.log").read_text()  # the log file keeps them


def _finished(folder: Path) -> int:
    return len([p for p in folder.glob("*.npz") if not p.name.startswith(".")])


def _tim(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "truthinmotion", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
                            preexec_fn=default_sigint)


def default_sigint() -> None:
    """A command started in the background by a shell inherits SIGINT ignored (and Python then
    keeps ignoring it); a terminal's Ctrl-C reaches a foreground command with the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("signals,workers", [((signal.SIGINT, signal.SIGINT), "2"), ((signal.SIGTERM,), "1")])
def test_interrupts_end_quickly_and_leave_no_temporaries(tmp_path, clips, signals, workers):
    # Enough videos that the stage is still running when the signal comes.
    rows = [{"video_id": f"v{i}", "path": str(clips["real" if i % 2 else "fake"])} for i in range(60)]
    _manifest(tmp_path / "w", rows)
    proc = _tim("faces", str(tmp_path / "w"), "--points", "24", "--workers", workers, "-q")
    deadline = time.time() + 120
    while time.time() < deadline and not _finished(tmp_path / "w" / "faces"):
        time.sleep(0.2)  # wait until work is under way
    for sig in signals:
        os.killpg(proc.pid, sig) if sig == signal.SIGINT else proc.send_signal(sig)
        time.sleep(0.1)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the interrupted stage did not end within 30 s")
    assert proc.returncode == 130, out
    assert "interrupted" in out
    time.sleep(0.5)
    assert not list((tmp_path / "w" / "faces").glob(".*tmp*"))
    assert 1 <= _finished(tmp_path / "w" / "faces") < 60
