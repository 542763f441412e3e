"""Flow and depth encodings on hand-made fields, and the settings that choose them."""

from __future__ import annotations

import numpy as np
import pytest

from truthinmotion.core.errors import ConfigError
from truthinmotion.models.inputs import DataConfig
from truthinmotion.features.encodings import encode_depth, encode_flow, face_slice, relative_motion

S = 32


def _uniform(dx: float, dy: float = 0.0, n: int = 1) -> np.ndarray:
    return np.broadcast_to(np.array([dx, dy], np.float32), (n, S, S, 2)).copy()


@pytest.mark.parametrize("encoding", ["hsv-per-picture", "hsv-fixed", "polar-log"])
def test_a_still_field_is_black_or_neutral(encoding):
    pic = encode_flow(_uniform(0, 0), encoding, 4.0)
    if encoding == "polar-log":  # dx, dy at mid-grey, no magnitude
        assert np.all(pic[..., :2] == 128) and np.all(pic[..., 2] == 0)
    else:
        assert pic.max() == 0


def _face_moves(dx: float) -> np.ndarray:
    """The face box moves ``dx`` pixels, the ring around it (head, background) is still."""
    flow = _uniform(0)
    inner = face_slice(S, 1.3)
    flow[:, inner, inner, 0] = dx
    return flow


def test_the_default_keeps_magnitude_and_the_study_encoding_does_not():
    d = DataConfig()
    one = encode_flow(_face_moves(1), d.flow_encoding, d.flow_max, d.flow_relative)
    four = encode_flow(_face_moves(4), d.flow_encoding, d.flow_max, d.flow_relative)
    assert not np.array_equal(one, four) and four.max() > one.max()
    # also without the head's motion taken out: uniform fields of 1 and 4 pixels differ
    assert encode_flow(_uniform(4), d.flow_encoding, d.flow_max).max() > encode_flow(_uniform(1), d.flow_encoding, d.flow_max).max()
    # the study's per-picture scaling makes 1 and 4 pixels the same picture
    assert np.array_equal(encode_flow(_uniform(1), "hsv-per-picture"), encode_flow(_uniform(4), "hsv-per-picture"))
    assert np.array_equal(encode_flow(_face_moves(1), "hsv-per-picture"), encode_flow(_face_moves(4), "hsv-per-picture"))


def test_hsv_fixed_value_and_polar_log_channels_by_hand():
    # hsv-fixed: value = magnitude / flow_max; motion to the right is red
    pic = encode_flow(_uniform(2), "hsv-fixed", 4.0)[0, 0, 0]
    assert pic[0] == 128 and pic[1] == 0 and pic[2] == 0
    # polar-log: ((dx/4+1)/2, (dy/4+1)/2, log1p(|f|)/log1p(4)) x 255
    got = encode_flow(_uniform(2, -4), "polar-log", 4.0)[0, 0, 0]
    mag = np.log1p(np.hypot(2, 4)) / np.log1p(4.0)
    np.testing.assert_array_equal(got, np.round(np.array([0.75, 0.0, min(mag, 1.0)]) * 255).astype(np.uint8))


def test_relative_motion_cancels_a_uniform_pan_and_keeps_the_face_against_it():
    pan = _uniform(3, -1)
    assert np.abs(relative_motion(pan)).max() == 0
    assert encode_flow(pan, "hsv-fixed", 4.0, relative=True).max() == 0
    moved = pan.copy()
    inner = face_slice(S, 1.3)
    moved[:, inner, inner] += np.array([1.0, 0.0], np.float32)  # the face moves 1 px on its own
    rel = relative_motion(moved)
    np.testing.assert_allclose(rel[:, inner, inner], np.broadcast_to([1.0, 0.0], rel[:, inner, inner].shape))
    assert np.abs(rel[:, 0, :]).max() == 0  # the ring (head and background) is still


def test_face_minmax_depth_ignores_the_zero_padding_of_crops_at_the_frame_edge():
    depth = np.zeros((1, S, S), np.float32)
    inner = face_slice(S, 1.3)
    depth[:, inner, inner] = np.linspace(5.0, 6.0, inner.stop - inner.start)[None, :]
    depth[:, :, :3] = 0.0  # zero-padded border of a crop that left the frame
    study = encode_depth(depth, "crop-minmax")[..., 0]
    face = encode_depth(depth, "face-minmax")[..., 0]
    # crop-wide min-max spends the range on the padding: the face spans 5/6 .. 6/6 of it
    assert study[0, inner, inner].min() >= 200
    assert face[0, inner, inner].min() == 0 and face[0, inner, inner].max() == 255
    fixed = encode_depth(depth, "fixed", depth_max=12.0)[..., 0]
    assert fixed[0, inner, inner].max() == 128  # 6 / 12
    with pytest.raises(ConfigError, match="depth_max"):
        encode_depth(depth, "fixed")


def test_saved_runs_without_encodings_keep_the_studys():
    old = DataConfig.from_saved({"flow": "farneback", "flow_max": None, "train_points": 8})
    assert old.flow_encoding == "hsv-per-picture" and old.depth_encoding == "crop-minmax" and not old.flow_relative
    fixed = DataConfig.from_saved({"flow_max": 2.0})
    assert fixed.flow_encoding == "hsv-fixed" and fixed.flow_max == 2.0
    assert DataConfig.from_saved(DataConfig().to_dict()) == DataConfig()
    with pytest.raises(ConfigError, match="flow_encoding"):
        DataConfig().updated({"flow_encoding": "hsv"})


def test_the_study_config_file_selects_the_studys_encodings():
    from pathlib import Path

    from truthinmotion.core.config import load_yaml
    from truthinmotion.experiments.pipeline import StudyConfig

    cfg = StudyConfig.from_sections(load_yaml(Path(__file__).parents[1] / "configs" / "study.yaml"))
    assert cfg.train.flow_encoding == "hsv-per-picture" and cfg.train.depth_encoding == "crop-minmax"
    assert not cfg.train.flow_relative
    assert cfg.faces.max_faces == 1 and cfg.faces.num_points == 32 and cfg.train.train_blocks == 1
    assert (cfg.train.flow_encoding, cfg.train.depth_encoding) != (DataConfig().flow_encoding, DataConfig().depth_encoding)


def test_a_run_records_its_encodings_and_evaluation_applies_them(tmp_path):
    """The encodings travel with the detector: evaluate rebuilds the inputs with them, so the
    same run evaluated with the study's encodings instead gives other scores."""
    import json

    from synthetic import make_workdir
    from truthinmotion.experiments.evaluate import evaluate
    from truthinmotion.training.train import TrainConfig, train

    work = make_workdir(tmp_path / "w", n_per_class=8, splits=(4, 2, 2))
    cfg = TrainConfig(backbone="dinov2-tiny", init="random", image_size=28, workers=0, progress=False, epochs=1,
                      batch_size=4, train_points=2, flow_encoding="polar-log", flow_max=3.0, flow_relative=True)
    train(work, cfg, tmp_path / "run")
    config = tmp_path / "run" / "best" / "config.json"
    record = json.loads(config.read_text())["data"]
    assert (record["flow_encoding"], record["flow_max"], record["flow_relative"]) == ("polar-log", 3.0, True)
    ours = {v["video_id"]: v["score"] for v in evaluate(tmp_path / "run", "test", progress=False).metrics["videos"]}
    data = json.loads(config.read_text())
    data["data"].update({"flow_encoding": "hsv-per-picture", "flow_relative": False})
    config.write_text(json.dumps(data))
    other = {v["video_id"]: v["score"] for v in evaluate(tmp_path / "run", "test", progress=False).metrics["videos"]}
    assert ours.keys() == other.keys() and any(abs(ours[k] - other[k]) > 1e-4 for k in ours)
