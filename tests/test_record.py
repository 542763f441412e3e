"""The typed detector record: one writer, one reader, strict keys, first-schema records still
load, and ``tim detect`` computes a detector's inputs from its record alone (a RAFT weights file
and int8 depth survive training and loading)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from truthinmotion.core.errors import ConfigError
from truthinmotion.inference.scorer import Scorer
from truthinmotion.models.detector import Detector, read_record
from truthinmotion.models.record import RECORD_FORMAT, DetectorRecord

FIRST_SCHEMA = Path(__file__).parent / "data" / "first-schema-config.json"


def _first_schema_detector(run_dir: Path, dest: Path) -> Path:
    """A detector directory whose config.json is one the previous version wrote (a tiny flow +
    int8-depth detector; tests/data), with the weights of the session's detector of the same
    architecture and its depth model."""
    dest.mkdir(parents=True)
    shutil.copy(run_dir / "best" / "model.safetensors", dest / "model.safetensors")
    depth_model = read_record(run_dir).depth.model
    text = FIRST_SCHEMA.read_text().replace("@DEPTH_MODEL@", depth_model).replace("@WORKDIR@", str(dest / "gone"))
    (dest / "config.json").write_text(text)
    return dest


def test_first_schema_records_load_and_keep_what_they_lost(run_dir, tmp_path, clips):
    old = _first_schema_detector(run_dir, tmp_path / "old")
    record = read_record(old)
    raw = json.loads((old / "config.json").read_text())
    assert raw["format"] == "truthinmotion-detector/1" and "precision" not in raw["features"]["depth"]
    # int8 depth, which the first schema dropped, comes back from the artifact folder's name
    assert record.depth.precision == "int8" and record.data.depth == "da-tiny-int8"
    rule = record.rule("mean")
    assert rule.threshold == pytest.approx(raw["verdict"]["aggregations"]["mean"]["threshold"])
    assert rule.calibration.method == "platt" and record.provenance.trained["epoch"] == 1
    assert record.faces.crop_format == "raw"  # trained before compact artifacts: raw crops
    scorer = Scorer(old)
    assert scorer.depth.cfg.precision == "int8" and scorer.runtime_info["depth"] == "onnxruntime int8"
    v = scorer(clips["fake"])
    assert v.ok and v.score_threshold == pytest.approx(rule.threshold)

    # Saved again, it is written in the current schema and reads back the same.
    model = Detector.from_pretrained(old)
    model.save_pretrained(tmp_path / "new")
    saved = json.loads((tmp_path / "new" / "config.json").read_text())
    assert saved["format"] == RECORD_FORMAT and "features" not in saved and "threshold" not in saved
    again = read_record(tmp_path / "new")
    assert again.to_json() == record.to_json()


def test_a_key_the_reader_does_not_know_is_named(run_dir, tmp_path):
    good = json.loads((run_dir / "best" / "config.json").read_text())
    assert DetectorRecord.from_json(good).to_json() == good  # one writer, one reader: a fixed point
    for where, change in (("top", {"colour": "blue"}), ("detector", {"wings": 2}), ("inference", {"turbo": True}),
                          ("provenance", {"mood": "good"})):
        bad = json.loads(json.dumps(good))
        (bad if where == "top" else bad[where]).update(change)
        with pytest.raises(ConfigError, match=next(iter(change))):
            DetectorRecord.from_json(bad, "x/config.json")
    bad = json.loads(json.dumps(good))
    bad["verdict"]["aggregations"]["mean"]["calibration"]["temperature"] = 2.0  # a key the rule does not know
    with pytest.raises(ConfigError, match="temperature"):
        DetectorRecord.from_json(bad)
    bad = {**good, "format": "truthinmotion-detector/9"}
    with pytest.raises(ConfigError, match="newer"):
        DetectorRecord.from_json(bad)


@pytest.mark.slow
def test_raft_file_and_int8_depth_survive_training_and_detect(tmp_path, clips):
    """A detector trained on RAFT flow from a weights file and on int8 depth is fed the same way
    by ``tim detect``, from its record alone: the same file (not torchvision's download) and int8."""
    from torchvision.models.optical_flow import raft_small
    from transformers import DepthAnythingForDepthEstimation

    from synthetic import make_workdir
    from truthinmotion.backends.weights import save_random_model
    from truthinmotion.features import DepthConfig, FlowConfig, depth_anything_config, run_features
    from truthinmotion.training.runs import TrainConfig
    from truthinmotion.training.train import train

    torch.manual_seed(0)
    raft_file = tmp_path / "raft.pt"
    torch.save(raft_small(weights=None).state_dict(), raft_file)
    depth_dir = save_random_model(
        DepthAnythingForDepthEstimation(depth_anything_config("depth-anything-v2-tiny")), tmp_path / "da")
    depth = DepthConfig(model=str(depth_dir), input_size=56, precision="int8")
    work = make_workdir(tmp_path / "w", n_per_class=6, k=3, splits=(3, 2, 1), depth=depth)
    flow = FlowConfig(method="raft-small", raft_weights=str(raft_file), raft_iters=2)
    assert run_features(work, flow, None, progress=False).ok
    cfg = TrainConfig(backbone="dinov2-tiny", init="random", image_size=56, workers=0, progress=False,
                      modality="flow+depth", flow="raft-small", depth=depth.key, epochs=1, batch_size=6)
    train(work, cfg, tmp_path / "run")

    record = read_record(tmp_path / "run")
    assert record.flow.method == "raft-small" and Path(record.flow.raft_weights).resolve() == raft_file.resolve()
    assert record.flow.raft_iters == 2 and record.depth.precision == "int8"
    scorer = Scorer(tmp_path / "run")
    assert Path(scorer.preparer.flow.weights) == raft_file.resolve()  # the file, not a download
    assert scorer.preparer.flow.cfg.raft_iters == 2
    assert scorer.depth.cfg.precision == "int8"
    v = scorer(clips["real"])
    assert v.ok and v.runtime["depth"] == "onnxruntime int8"
