from __future__ import annotations

import csv
import functools
import json
import logging

import pytest
import yaml

from truthinmotion.apps.cli import main, set_up_logging
from truthinmotion.inference.scorer import Scorer
from truthinmotion.models.detector import read_record


@pytest.mark.slow
def test_demo_end_to_end_and_resume(tmp_path, capsys):
    """`tim demo` at a reduced size: every stage runs, the report says which weights were used;
    the study waits for `--study`, which resumes the demo (redoing nothing) and adds it."""
    out = tmp_path / "demo"
    (tmp_path / "c.yaml").write_text("train:\n  patience: 3\n  epochs: 9\n")  # --epochs goes over the file's
    args = ["demo", "-o", str(out), "--clips", "8", "--points", "6", "--epochs", "2", "-q",
            "--config", str(tmp_path / "c.yaml")]
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
    saved = yaml.safe_load((out / "runs" / "demo" / "config.yaml").read_text())
    assert (saved["patience"], saved["epochs"], saved["backbone"]) == (3, 2, "dinov2-tiny")  # the demo's own kept
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
    # --fakes pseudo on the same clips: only twins of the real clips are made (the stages find the
    # rest done); the detector learns from them alone, and the generated fakes, never shown to it,
    # are reported on their own. The first detector keeps the generated fakes it learnt from.
    assert main(args[:-2] + ["--fakes", "pseudo", "--study"]) == 2
    assert "tim study" in capsys.readouterr().err
    assert main(args[:-2] + ["--fakes", "pseudo"]) == 0
    printed = capsys.readouterr().out
    assert "faces: 0 processed, 16 already done" in printed and "synth: 8 twins added" in printed
    record = read_record(out / "runs" / "demo-pseudo" / "best")
    assert record.provenance.fakes == "pseudo" and "fake" not in record.provenance.fake_methods
    assert read_record(out / "runs" / "demo" / "best").provenance.fakes == "dataset"
    metrics = json.loads((out / "runs" / "demo-pseudo" / "metrics.json").read_text())
    unseen = metrics["per_method"]["fake"]["video"]
    assert metrics["overall_fakes"] == "pseudo" and unseen["auc"] is not None
    assert (f"never shown to it: video AUC {unseen['auc']:.3f} for the test's {unseen['fake']} generated fakes "
            f"against its {unseen['real']} real clips") in printed


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


# ---------------------------------------------------------------- one configuration shape

SECTIONED = """\
index:
  seed: 7
faces:
  num_points: 12
  max_faces: 1
flow:
  method: dis
depth:
  input_size: 224
train:
  epochs: 3
  modality: flow
  train_blocks: 0
"""


class _Done:
    """What a patched stage returns: enough for the command to print and pick its exit code."""

    ok, failed = True, 0

    def summary(self) -> str:
        return "patched"


def _capture(monkeypatch, module: str, name: str, result=None) -> dict:
    """Replace the library function ``module.name`` by one that records its arguments: the command's
    parsing is what is tested here, not the stage."""
    import importlib

    seen: dict = {}

    def record(*args, **kwargs):
        seen.update(args=args, kwargs=kwargs)
        return _Done() if result is None else result

    owner = importlib.import_module(module)
    # with the original's signature, which the command's options read their defaults from
    monkeypatch.setattr(owner, name, functools.wraps(getattr(owner, name))(record))
    return seen


def test_one_sectioned_file_serves_every_command(tmp_path, monkeypatch, capsys):
    from truthinmotion.experiments.pipeline import StudyConfig
    from truthinmotion.faces.config import FacesConfig
    from truthinmotion.training.runs import TrainConfig

    config = tmp_path / "study.yaml"
    config.write_text(SECTIONED)
    # tim faces takes faces: and puts its options on top
    faces = _capture(monkeypatch, "truthinmotion.faces.stage", "run_faces")
    assert main(["faces", str(tmp_path / "w"), "--config", str(config), "--size", "64", "-q"]) == 0
    assert faces["args"][1] == FacesConfig(num_points=12, max_faces=1, size=64)
    # tim features takes flow: and depth:
    features = _capture(monkeypatch, "truthinmotion.features.stage", "run_features")
    assert main(["features", str(tmp_path / "w"), "--config", str(config), "-q"]) == 0
    flow, depth = features["args"][1:3]
    assert (flow.method, depth.input_size, depth.model) == ("dis", 224, "depth-anything-v2-small")
    # tim train takes train:
    train = _capture(monkeypatch, "truthinmotion.training.train", "train")
    assert main(["train", str(tmp_path / "w"), "-o", str(tmp_path / "r"), "--config", str(config),
                 "--lr", "0.001", "-q"]) == 0
    assert train["args"][1] == TrainConfig(epochs=3, modality="flow", train_blocks=0, lr=0.001, progress=False)
    # tim run takes all five, its options on top of the file
    run = _capture(monkeypatch, "truthinmotion.experiments.pipeline", "run_study")
    assert main(["run", str(tmp_path / "data"), "-o", str(tmp_path / "out"), "--config", str(config),
                 "--epochs", "5", "-q"]) == 0
    cfg = run["args"][2]
    expected = StudyConfig()
    assert cfg.index == expected.index.updated({"seed": 7})
    assert cfg.faces == FacesConfig(num_points=12, max_faces=1)
    assert (cfg.flow.method, cfg.depth.input_size) == ("dis", 224)
    assert cfg.train == expected.train.updated({"epochs": 5, "modality": "flow", "train_blocks": 0})
    # tim detect takes detect: (a section of its own), and ignores the others
    config.write_text(SECTIONED + "detect:\n  aggregation: median\n  batch_size: 16\n")
    detect = _capture(monkeypatch, "truthinmotion.inference.detect", "detect", result=[])
    assert main(["detect", str(tmp_path / "v.mp4"), "--model", str(tmp_path / "r"), "--config", str(config),
                 "--batch-size", "8", "-q"]) == 0
    assert detect["kwargs"]["aggregation"] == "median" and detect["kwargs"]["batch_size"] == 8
    assert detect["kwargs"]["runtime"] == "auto"  # the dataclass's default, as the help says
    # tim serve takes serve:
    config.write_text(SECTIONED + "serve:\n  queue: 4\n  keep_hours: 2\n")
    serve = _capture(monkeypatch, "truthinmotion.apps.serve.app", "serve")
    monkeypatch.delenv("TIM_TOKEN", raising=False)
    assert main(["serve", "--model", str(tmp_path / "r"), "--config", str(config), "--workers", "2"]) == 0
    cfg = serve["args"][0]
    assert (cfg.queue, cfg.keep_hours, cfg.workers, cfg.max_seconds, cfg.token) == (4, 2.0, 2, 600.0, None)
    # tim evaluate takes evaluate:, its options on top
    config.write_text(SECTIONED + "evaluate:\n  split: val\n  aggregation: median\n  batch_videos: 2\n")
    evaluate = _capture(monkeypatch, "truthinmotion.experiments.evaluate", "evaluate")
    assert main(["evaluate", str(tmp_path / "r"), "--config", str(config), "--aggregation", "max", "-q"]) == 0
    kw = evaluate["kwargs"]
    assert (kw["split"], kw["aggregation"], kw["batch_videos"], kw["workers"]) == ("val", "max", 2, 0)
    # tim benchmark takes benchmark:
    config.write_text(SECTIONED + "benchmark:\n  batches: [1, 4]\n  repeats: 3\n")
    bench = _capture(monkeypatch, "truthinmotion.experiments.bench", "benchmark_runs")
    assert main(["benchmark", str(tmp_path / "r"), "--config", str(config), "--repeats", "5"]) == 0
    kw = bench["kwargs"]
    assert (kw["split"], tuple(kw["batches"]), kw["repeats"]) == ("test", (1, 4), 5)
    # tim demo takes the five sections of tim run over its own settings; --epochs over the file's
    config.write_text(SECTIONED)
    demo = _capture(monkeypatch, "truthinmotion.apps.demo", "run_demo")
    assert main(["demo", "-o", str(tmp_path / "demo"), "--config", str(config), "--epochs", "2", "-q"]) == 0
    sections = demo["kwargs"]["settings"]
    assert sections["faces"] == {"num_points": 12, "max_faces": 1} and sections["train"]["epochs"] == 2
    assert sections["train"]["modality"] == "flow" and sections["index"] == {"seed": 7}


@pytest.mark.parametrize("text, command, named", [
    ("facez:\n  num_points: 8\n", "faces", ["facez", "index, faces, flow, depth, train"]),
    ("faces:\n  num_point: 8\n", "faces", ["num_point", "num_points"]),
    # a section the command does not use is checked all the same: the file is one for every command
    ("train:\n  epoch: 3\n", "faces", ["epoch", "epochs"]),
    ("faces:\n  num_points: 8\nepochs: 3\n", "train", ["epochs", "outside a section"]),
    ("winsize: 5\n", "features", ["winsize", "outside a section"]),
    ("evaluate:\n  split: tset\n", "evaluate", ["tset", "train, val, test"]),
    ("benchmark:\n  batches: [0]\n", "benchmark", ["batches", "[0]"]),
])
def test_unknown_sections_and_keys_exit_2_naming_them(tmp_path, capsys, text, command, named):
    (tmp_path / "c.yaml").write_text(text)
    extra = ["-o", str(tmp_path / "r")] if command == "train" else []
    assert main([command, str(tmp_path / "w"), *extra, "--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert all(n in err for n in named) and "Traceback" not in err, err


def test_a_flat_file_still_works_with_a_warning_that_shows_the_sections(tmp_path, monkeypatch, caplog):
    from truthinmotion.faces.config import FacesConfig

    (tmp_path / "flat.yaml").write_text("num_points: 8\nmax_faces: 2\n")
    faces = _capture(monkeypatch, "truthinmotion.faces.stage", "run_faces")
    with caplog.at_level("WARNING"):
        assert main(["faces", str(tmp_path / "w"), "--config", str(tmp_path / "flat.yaml"), "-q"]) == 0
    assert faces["args"][1] == FacesConfig(num_points=8, max_faces=2)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("deprecated" in m and "faces:\n  num_points: 8\n  max_faces: 2" in m for m in warned), warned


# ---------------------------------------------------------------- help


def _subparsers():
    import argparse

    from truthinmotion.apps.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _default(owner, name):
    """The default that ``owner`` (a dataclass, one of its instances, or a function) gives ``name``."""
    import dataclasses
    import inspect

    if dataclasses.is_dataclass(owner):
        if not isinstance(owner, type):
            return getattr(owner, name)
        field = {f.name: f for f in dataclasses.fields(owner)}[name]
        return field.default_factory() if field.default is dataclasses.MISSING else field.default
    return inspect.signature(owner).parameters[name].default


def test_help_shows_every_setting_default_from_its_dataclass():
    import dataclasses

    checked = 0
    for command, parser in _subparsers().items():
        bound = [a for a in parser._actions if getattr(a, "default_from", None)]
        fields = {f.name for a in bound if dataclasses.is_dataclass(a.default_from[0])
                  for f in dataclasses.fields(a.default_from[0])}
        for action in parser._actions:
            # an option that names a setting but was added without its generated default (--device and
            # --workers say where a command runs: they may be the command's own; a required option has none)
            loose = not action.required and ("." in action.dest or action.dest in fields - {"device", "workers"})
            assert getattr(action, "default_from", None) or not loose, (command, action.option_strings)
        for action in bound:
            assert action.default is None, (command, action.option_strings)  # so YAML is not overridden
            value = _default(*action.default_from)
            if value is None or value == () or isinstance(value, bool) or action.default_text:
                continue  # nothing to show (a flag, an empty list), or another run's value ("the teacher's")
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            assert f"(default: {shown})" in action.help.replace("%%", "%"), (command, action.option_strings,
                                                                             action.help)
            checked += 1
    assert checked >= 40
    for command, parser in _subparsers().items():  # a default of the command's own is shown by the formatter,
        for action in parser._actions:  # which argparse asks only for an option with help
            own = action.option_strings and action.default not in (None, False, True, "==SUPPRESS==")
            assert not own or action.help, (command, action.option_strings)
    help_text = "".join(p.format_help() for p in _subparsers().values())
    for hand_written in ("(32)", "(224)", "(1.3)", "(518)", "(1e-4)", "(10)"):
        assert hand_written not in help_text


def test_every_command_takes_a_settings_file():
    from truthinmotion.apps.cli.options import SECTIONS

    for command, parser in _subparsers().items():
        config = next((a for a in parser._actions if "--config" in a.option_strings), None)
        assert config is not None, command
        reads = config.help.split("this command reads ")[1].split(",")[0].split()[0]
        assert reads in SECTIONS, (command, config.help)  # it names a section that exists


def test_help_shows_the_fields_defaults_and_the_owners_choices(capsys):
    from truthinmotion.backends.runtime import RUNTIMES
    from truthinmotion.core.metrics import AGGREGATIONS
    from truthinmotion.data.splits import SPLITS
    from truthinmotion.faces.config import FacesConfig

    parsers = _subparsers()
    points = next(a for a in parsers["faces"]._actions if "--points" in a.option_strings)
    assert f"(default: {FacesConfig.num_points})" in points.help
    choices = {(c, o): a.choices for c, p in parsers.items() for a in p._actions for o in a.option_strings}
    assert tuple(choices["detect", "--aggregation"]) == tuple(AGGREGATIONS)
    assert tuple(choices["detect", "--runtime"]) == RUNTIMES
    assert tuple(choices["evaluate", "--split"]) == tuple(choices["benchmark", "--split"]) == SPLITS


@pytest.mark.parametrize("argv", [["--help"], ["detect", "--help"], ["serve", "--help"]])
def test_help_does_not_import_torch(argv):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "truthinmotion", *argv],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage: tim" in proc.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line]
    assert "torch" not in imported and len(imported) > 10


def test_python_m_truthinmotion_keeps_the_exit_code(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "truthinmotion", "index", str(tmp_path / "none"), "-o",
                           str(tmp_path / "w")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "dataset root not found" in proc.stderr
def test_library_noise_only_with_verbose(tmp_path):
    """`tim features` with int8 depth loads a saved model (transformers' "Loading weights" bar) and
    quantizes it (ONNX Runtime's root-logger INFO per tensor): neither reaches the console unless
    -v; truthinmotion's own INFO lines do."""
    import os
    import shutil
    import subprocess
    import sys

    import torch
    from transformers import DepthAnythingForDepthEstimation
    from transformers.utils import logging as hf_logging

    from synthetic import make_workdir
    from truthinmotion.features.depth import depth_anything_config

    work = make_workdir(tmp_path / "w", n_per_class=2, k=2, splits=(1, 1, 0))
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(depth_anything_config("depth-anything-v2-tiny")).save_pretrained(tmp_path / "da")
    printed, running = {}, {}
    for flag in ("", "-v"):  # the two at once, each in a work directory of its own
        env = {**os.environ, "TIM_CACHE_DIR": str(tmp_path / f"cache{flag}")}  # quantized anew each time
        shutil.copytree(work, tmp_path / f"w-{flag or 'default'}")
        cmd = [sys.executable, "-m", "truthinmotion", "features", str(tmp_path / f"w-{flag or 'default'}"), "--flow", "none",
               "--depth", str(tmp_path / "da"), "--depth-size", "56", "--depth-precision", "int8", "--overwrite"]
        running[flag] = subprocess.Popen(cmd + ([flag] if flag else []), env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
    for flag, proc in running.items():
        printed[flag] = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, printed[flag]
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
