"""Sharing detectors: ``tim export`` (folder and model card) and hub ids resolved offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml


@pytest.fixture(scope="module")
def evaluated(run_dir, tmp_path_factory) -> Path:
    """A copy of the shared tiny run, evaluated on its test split (the shared run stays as it is)."""
    from truthinmotion.experiments.evaluate import evaluate

    run = tmp_path_factory.mktemp("share") / "run"
    shutil.copytree(run_dir, run)
    evaluate(run, "test", progress=False)
    return run


@pytest.fixture(scope="module")
def exported(evaluated, tmp_path_factory) -> Path:
    from truthinmotion.experiments.export import export_detector

    out = tmp_path_factory.mktemp("exported") / "tiny-flow-depth"
    export_detector(evaluated, out, bootstrap=200)
    return out


def _strings(x) -> list[str]:
    """Every string in JSON-like data."""
    if isinstance(x, dict):
        return [s for v in x.values() for s in _strings(v)]
    return [s for v in x for s in _strings(v)] if isinstance(x, list) else [x] if isinstance(x, str) else []


def _probabilities(model_ref, inputs) -> torch.Tensor:
    from truthinmotion.models.loading import load_detector

    model = load_detector(model_ref, "cpu", runtime="torch")
    with torch.no_grad():
        return torch.sigmoid(model(inputs).logit.float())


@pytest.fixture(scope="module")
def inputs(evaluated):
    from truthinmotion.experiments.compress import sample_inputs
    from truthinmotion.models.detector import Detector

    return sample_inputs(Detector.from_pretrained(evaluated), "test", max_pictures=16)


def test_export_writes_a_card_with_the_runs_figures_and_loads_as_the_run(evaluated, exported, inputs):
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "config.json", "metrics.json",
                                                        "model.safetensors"]
    card = (exported / "README.md").read_text()
    _, header, body = card.split("---\n", 2)
    meta = yaml.safe_load(header)
    metrics = json.loads((evaluated / "metrics.json").read_text())
    figures = {m["type"]: m for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert figures["video_auc"]["value"] == metrics["overall"]["video"]["auc"]
    assert figures["frame_auc"]["value"] == metrics["overall"]["frame"]["auc"]
    assert figures["accuracy"]["value"] == metrics["overall"]["video"]["acc@thr"]
    assert figures["ece"]["value"] == metrics["calibration"]["ece_after"]
    for m in figures.values():  # an interval around its value, from resampled test videos
        lo, hi = m["ci95"]
        assert lo <= m["value"] + 1e-12 and m["value"] <= hi + 1e-12
    # the table in the text says the same figures, and the training data is named
    assert f"| video ROC AUC | {metrics['overall']['video']['auc']:.4f} |" in body
    assert f"{metrics['calibration']['ece_before']:.4f} before calibration" in body
    n = len(metrics["videos"])
    assert f"{n} videos" in body and "datasets: synthetic" in body and "methods: swap" in body
    assert meta["library_name"] == "truthinmotion"
    # nothing of this machine is published: the work directory's path is in neither file, and
    # evaluating the folder asks for a work directory instead of reading the current one
    from truthinmotion.core.errors import ConfigError
    from truthinmotion.experiments.evaluate import evaluate
    from truthinmotion.models.detector import read_record

    workdir = read_record(evaluated).provenance.workdir
    assert workdir and any(s.startswith("/") for s in _strings(json.loads((evaluated / "best" / "config.json").read_text())))
    for f in ("config.json", "metrics.json"):  # the run's own record names local folders; the export none
        assert not [s for s in _strings(json.loads((exported / f).read_text())) if s.startswith("/")], f
    with pytest.raises(ConfigError, match="records no work directory.*pass --workdir"):
        evaluate(exported, "test", out_dir=exported.parent / "report", progress=False)
    # the exported folder loads as a detector and gives the run's probabilities
    from_run, from_folder = _probabilities(evaluated, inputs), _probabilities(exported, inputs)
    assert len(from_run) == 16 and torch.allclose(from_run, from_folder, atol=1e-6, rtol=0)


def test_export_variants_are_checked_copies_that_name_no_path(evaluated, inputs, tmp_path):
    """--variants int8: a compressed copy beside the detector, loadable, near its probabilities,
    its record naming no path of this machine either."""
    from truthinmotion.experiments.export import export_detector
    from truthinmotion.models.loading import load_detector

    out = tmp_path / "with-int8"
    result = export_detector(evaluated, out, variants=("int8",), bootstrap=20)
    assert result.variants == ["int8"] and (out / "variants" / "int8" / "config.json").is_file()
    record = json.loads((out / "variants" / "int8" / "config.json").read_text())
    assert record["inference"]["method"] == "int8"
    assert not [s for s in _strings(record) if s.startswith("/")]  # no absolute path
    model = load_detector(out / "variants" / "int8", "cpu")
    with torch.no_grad():
        int8 = torch.sigmoid(torch.as_tensor(model(inputs).logit).float())
    assert torch.allclose(int8, _probabilities(evaluated, inputs), atol=0.05)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no building folder left


def test_export_refuses_a_run_without_metrics_and_a_folder_in_use(run_dir, evaluated, tmp_path):
    from truthinmotion.core.errors import ConfigError
    from truthinmotion.experiments.export import export_detector

    bare = tmp_path / "bare"
    shutil.copytree(run_dir / "best", bare / "best")
    with pytest.raises(ConfigError, match="evaluate it first"):
        export_detector(bare, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        export_detector(evaluated, tmp_path / "used")


def _hub_cache(root: Path, repo: str, folder: Path, revision: str = "0123456789abcdef0123456789abcdef01234567") -> str:
    """``folder`` laid out in ``root`` as huggingface_hub caches a download of ``repo``: files in
    ``blobs/`` by hash, ``snapshots/<revision>/`` links to them, ``refs/main`` naming the revision."""
    import hashlib

    base = root / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / revision
    (base / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy2(f, base / "blobs" / digest)
        (snap / f.name).symlink_to(Path("../../blobs") / digest)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(revision)
    return revision


def test_a_hub_id_loads_from_the_offline_cache_and_a_missing_one_is_named(exported, evaluated, inputs, tmp_path,
                                                                         monkeypatch, capsys):
    from truthinmotion.apps.cli import main
    from truthinmotion.backends.weights import WeightsNotFound, check_folder
    from truthinmotion.models.loading import load_detector

    revision = _hub_cache(tmp_path / "hub", "tim-org/tiny-detector", exported)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no folder named tim-org here: the name is a hub id
    reference = _probabilities(evaluated, inputs)
    for name in ("tim-org/tiny-detector", f"tim-org/tiny-detector@{revision}"):
        assert check_folder(name) == "cached"
        assert torch.allclose(_probabilities(name, inputs), reference, atol=1e-6, rtol=0)
    assert Path(load_detector("tim-org/tiny-detector").record.provenance.run).parent.name == "snapshots"
    for name in ("tim-org/other", "tim-org/tiny-detector@fedcba9876543210fedcba9876543210fedcba98"):
        with pytest.raises(WeightsNotFound, match=r"not in the cache .*HF_HUB_OFFLINE is set"):
            load_detector(name)
    # the commands say so before any video is read (the video does not even exist)
    assert main(["detect", "--model", "tim-org/other", str(tmp_path / "absent.mp4")]) == 2
    err = capsys.readouterr().err
    assert "before touching any video" in err and "huggingface-cli download tim-org/other" in err
    assert main(["evaluate", "tim-org/tiny-detector"]) == 2 and "pass --out" in capsys.readouterr().err
