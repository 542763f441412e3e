from __future__ import annotations

import time


import cv2
import numpy as np
import pytest
import torch

from conftest import FFPP, need_shared
from truthinmotion.data.compact import FLOW_STEP
from truthinmotion.core.errors import ConfigError
from truthinmotion.faces.artifact import Faces
from truthinmotion.faces.config import FacesConfig
from truthinmotion.faces.stage import run_faces
from truthinmotion.features import (
    DepthConfig, DepthEstimator, FlowConfig, FlowEstimator, depth_anything_config, depth_to_rgb, flow_to_rgb, load_feature, run_features,
)
from truthinmotion.data.index import IndexConfig, index_dataset
from truthinmotion.backends.weights import WeightsNotFound


def _texture(size: int = 224, seed: int = 0) -> np.ndarray:
    """A smooth random texture (blurred noise at two scales), RGB uint8."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.normal(0, 1, (size, size)), (0, 0), 6)
    small = cv2.GaussianBlur(rng.normal(0, 1, (size, size)), (0, 0), 2)
    img = big / big.std() * 40 + small / small.std() * 20 + 128
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, -1)


def _warp(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Frame t+1 where the content moved by the affine map ``m`` (content at p goes to m(p))."""
    return cv2.warpAffine(img, m, img.shape[1::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def _true_flow(m: np.ndarray, size: int) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    pts = np.stack([xs, ys, np.ones_like(xs)], -1)
    return pts @ m.T - pts[..., :2]


def _epe(est: np.ndarray, true: np.ndarray, border: int = 20) -> float:
    """Mean end-point error away from the border (where content enters or leaves the frame)."""
    d = est[border:-border, border:-border] - true[border:-border, border:-border]
    return float(np.linalg.norm(d, axis=-1).mean())


# Thresholds: a textured picture under smooth motion of about a pixel is the easy case for both
# methods. Measured here (OpenCV 4.13 / 5.0): farneback 0.045 px for the shift and 0.073 px for
# the rotation, dis 0.035 and 0.051. The bounds (0.15, 0.2) allow about 3x that for other OpenCV
# builds while staying an order of magnitude below the error of returning no motion at all
# (1.68 px for the shift, 2.46 px for the rotation, which reaches 3.9 px at the corners).
@pytest.mark.parametrize("method,shift_max,rot_max", [("farneback", 0.15, 0.2), ("dis", 0.15, 0.2)])
def test_flow_accuracy_on_known_motion(method, shift_max, rot_max):
    img = _texture()
    est = FlowEstimator(FlowConfig(method=method))
    shift = np.array([[1, 0, 1.5], [0, 1, -0.75]])
    rot = cv2.getRotationMatrix2D((112, 112), 2.0, 1.0)
    pairs = np.stack([np.stack([img, _warp(img, shift)]), np.stack([img, _warp(img, rot)]), np.stack([img, img])])
    flow = est(pairs)
    assert flow.shape == (3, 224, 224, 2) and flow.dtype == np.float32
    assert _epe(flow[0], _true_flow(shift, 224)) < shift_max
    assert _epe(flow[1], _true_flow(rot, 224)) < rot_max
    # Identical crops: no motion (Farnebäck leaves a few hundredths at the outermost pixels).
    assert np.abs(flow[2]).mean() < 0.005 and np.abs(flow[2, 20:-20, 20:-20]).max() < 0.01


def test_flow_to_rgb_direction_magnitude_and_black_zero():
    # right, up, left, down (image y points down, so "up" is dy < 0)
    directions = np.array([[1, 0], [0, -1], [-1, 0], [0, 1]], np.float32)[:, None, None, :] * 2.0
    rgb = flow_to_rgb(directions, max_magnitude=2.0)
    hsv = cv2.cvtColor(rgb.reshape(-1, 1, 3), cv2.COLOR_RGB2HSV)[:, 0].astype(int)
    hues = hsv[:, 0]
    assert list(hues) == sorted(hues) and len(set(hues)) == 4
    np.testing.assert_allclose(hues, [0, 45, 90, 135], atol=1)  # OpenCV hue = degrees / 2
    assert (hsv[:, 2] == 255).all() and (hsv[:, 1] == 255).all()
    assert flow_to_rgb(np.zeros((4, 4, 2))).max() == 0  # zero motion is black
    # Fixed maximum: value grows with magnitude, clips at the maximum.
    mags = np.array([0.0, 0.5, 1.0, 2.0, 4.0, 8.0])
    flows = np.stack([np.full((1, 1, 2), [m, 0.0]) for m in mags])
    values = flow_to_rgb(flows, max_magnitude=4.0).reshape(-1, 3).max(-1).astype(int)
    assert list(values) == sorted(values) and values[0] == 0 and values[4] == values[5] == 255
    # Per-picture scaling: each picture's largest motion is full value, whatever its size.
    a = flow_to_rgb(np.full((2, 2, 2), 0.1, np.float32))
    b = flow_to_rgb(np.full((2, 2, 2), 10.0, np.float32))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError):
        flow_to_rgb(flows, max_magnitude=0)


@pytest.fixture(scope="module")
def tiny_depth_dir(tmp_path_factory):
    """A tiny Depth Anything V2 saved in the hub format, as a user's local directory would be."""
    from transformers import DepthAnythingForDepthEstimation

    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(depth_anything_config("depth-anything-v2-tiny"))
    path = tmp_path_factory.mktemp("da-tiny")
    model.save_pretrained(path)
    return path, model


def test_depth_from_local_directory(tiny_depth_dir):
    path, saved = tiny_depth_dir
    est = DepthEstimator(DepthConfig(model=str(path), input_size=112), runtime="torch")
    assert est.weights == {"name": str(path.resolve()), "init": "pretrained"}
    for name, p in saved.state_dict().items():  # the weights really came from the directory
        torch.testing.assert_close(est.model.state_dict()[name], p)
    crops = np.stack([_texture(64, s) for s in range(3)])
    depth = est(crops)
    # The CPU default, ONNX Runtime, gives the same maps (and keeps no PyTorch copy of the model).
    fast = DepthEstimator(DepthConfig(model=str(path), input_size=112))
    assert fast.session is not None and fast.model is None
    np.testing.assert_allclose(fast(crops), depth, rtol=1e-4, atol=1e-5 * float(depth.max()))
    assert depth.shape == (3, 64, 64) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and depth.min() >= 0  # relative depth: ReLU output
    # Batching does not change the result.
    np.testing.assert_allclose(DepthEstimator(DepthConfig(model=str(path), input_size=112, batch_size=1))(crops), depth, rtol=1e-4, atol=1e-5)
    rgb = depth_to_rgb(depth)
    assert rgb.shape == (3, 64, 64, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == rgb[..., 2]).all() and rgb.reshape(3, -1).min(1).tolist() == [0, 0, 0]
    assert rgb.reshape(3, -1).max(1).tolist() == [255, 255, 255]
    assert depth_to_rgb(np.ones((8, 8))).max() == 0  # flat depth: black, no division by zero


def test_missing_depth_model_errors_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsNotFound, match="depth-anything/Depth-Anything-V2-Small-hf.*huggingface-cli download"):
        DepthEstimator(DepthConfig(model="depth-anything-v2-small"))
    with pytest.raises(WeightsNotFound, match="is not a local directory .* and not a hub id"):
        DepthEstimator(DepthConfig(model=str(tmp_path / "not-there")))
    # A mistyped relative path is never sent to the hub (no network retries): it fails at once.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    start = time.perf_counter()
    with pytest.raises(WeightsNotFound, match="'models/tinyda' is not a local directory"):
        DepthEstimator(DepthConfig(model="models/tinyda"))
    with pytest.raises(WeightsNotFound, match="is not a local directory"):
        DepthEstimator(DepthConfig(model="demo-out/models/depth-anything-v2-tiny-random"))
    assert time.perf_counter() - start < 5
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsNotFound, match="no config.json"):
        DepthEstimator(DepthConfig(model=str(empty)))
    with pytest.raises(ConfigError, match="--init random"):
        DepthEstimator(DepthConfig(model="depth-anything-v2-tiny"))


def test_raft_runs_with_random_weights_and_reports_missing_weights(tmp_path, monkeypatch):
    img = _texture(64)
    pairs = np.stack([np.stack([img, _warp(img, np.array([[1, 0, 1.0], [0, 1, 0.0]]))])] * 2)
    flow = FlowEstimator(FlowConfig(method="raft-small", init="random", raft_iters=2))(pairs)
    assert flow.shape == (2, 64, 64, 2) and np.isfinite(flow).all()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsNotFound, match="raft_small.*--flow-weights"):
        FlowEstimator(FlowConfig(method="raft-small"))
    with pytest.raises(WeightsNotFound, match="not found"):
        FlowEstimator(FlowConfig(method="raft-small", raft_weights=str(tmp_path / "none.pth")))


@pytest.mark.slow
def test_features_over_real_face_crops_resumable(tmp_path, tiny_depth_dir):
    need_shared()
    root = tmp_path / "data"
    for sub, src in (("real", "original_sequences/youtube/c23/videos/004.mp4"),
                     ("fake", "manipulated_sequences/NeuralTextures/c23/videos/004_982.mp4")):
        (root / sub).mkdir(parents=True)
        (root / sub / "a.mp4").symlink_to(FFPP / src)
    work = tmp_path / "w"
    index_dataset(root, work, IndexConfig(format="folder"))
    assert run_faces(work, FacesConfig(num_points=6), progress=False).processed == 2
    depth_cfg = DepthConfig(model=str(tiny_depth_dir[0]), input_size=112)
    report = run_features(work, FlowConfig(), depth_cfg, progress=False)
    assert report.processed == 2 and report.ok
    for vid in ("real-a", "fake-a"):
        flow, valid, meta = load_feature(work / "flow" / "farneback" / f"{vid}.npz", {"method": "farneback"})
        faces = Faces.load(work / "faces" / f"{vid}.npz")
        # one face (track) in these videos: the track axis comes first
        assert flow.shape == (1, 6, 224, 224, 2) and flow.dtype == np.float32 and valid.all()
        # Consecutive frames of a talking head: some motion, of a few pixels at most.
        mag = np.linalg.norm(flow.astype(np.float32), axis=-1)
        assert 0.01 < mag.mean() < 5.0
        # The flow of the stored crops, in steps of FLOW_STEP (1/16 px): each component within half a step.
        np.testing.assert_allclose(flow[0, 0], FlowEstimator(FlowConfig())(faces.crops[:1])[0], atol=FLOW_STEP / 2 + 1e-6)
        depth, _, dmeta = load_feature(work / "depth" / depth_cfg.key / f"{vid}.npz")
        assert depth.shape == (1, 6, 224, 224) and np.isfinite(depth.astype(np.float32)).all()
        assert dmeta["weights"]["init"] == "pretrained" and meta["winsize"] == 15
    with pytest.raises(ConfigError, match="other settings"):
        load_feature(work / "flow" / "farneback" / "real-a.npz", {"method": "dis"})
    # A re-run skips both; other settings into the same directory are refused.
    again = run_features(work, FlowConfig(), depth_cfg, progress=False)
    assert (again.skipped, again.processed) == (2, 0)
    with pytest.raises(ConfigError, match="other settings"):
        run_features(work, FlowConfig(winsize=21), None, progress=False)
    # Removing one artifact recomputes just that one.
    (work / "flow" / "farneback" / "fake-a.npz").unlink()
    again = run_features(work, FlowConfig(), depth_cfg, progress=False)
    assert (again.skipped, again.processed) == (1, 1)


def test_depth_int8_is_close_recorded_and_kept_apart(tiny_depth_dir):
    """int8 depth (ONNX Runtime, CPU) is near fp32 but its own thing: another directory name,
    recorded in the artifacts' settings; fp32 records stay as they were."""
    from truthinmotion.features.stage import _records

    path, _ = tiny_depth_dir
    crops = np.stack([_texture(64, s) for s in range(4)])
    fp32 = DepthEstimator(DepthConfig(model=str(path), input_size=112))(crops)
    cfg = DepthConfig(model=str(path), input_size=112, precision="int8")
    int8 = DepthEstimator(cfg)(crops)
    rel = np.abs(int8 - fp32).mean() / np.abs(fp32).mean()
    assert 0 < rel < 0.1, rel
    assert cfg.key == f"{path.name}-int8" and DepthConfig(model=str(path)).key == path.name
    assert _records(None, cfg)["depth"]["precision"] == "int8"
    assert "precision" not in _records(None, DepthConfig(model=str(path)))["depth"]
    with pytest.raises(ConfigError, match="int8"):
        DepthEstimator(cfg, device="cuda")
    with pytest.raises(ConfigError, match="precision"):
        DepthConfig().updated({"precision": "int4"})
