"""Compact artifacts (round trips within their documented bounds, old versions still read),
permissions under the umask, and the checks made before any video is touched."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import FFPP
from truthinmotion.data.compact import (
    DEPTH_LEVELS, FLOW_STEP, pack_crops, pack_depth, pack_flow, stored_crops, stored_depth, stored_flow, unpack_crops, unpack_depth, unpack_flow,
)
from truthinmotion.core.errors import ConfigError
from truthinmotion.faces.artifact import Faces, load_crops
from truthinmotion.faces.config import FacesConfig
from truthinmotion.faces.extract import extract_faces
from truthinmotion.faces.mtcnn import FaceDetector
from truthinmotion.faces.stage import run_faces
from truthinmotion.features import FlowConfig, FlowEstimator, load_feature
from truthinmotion.data.index import IndexConfig, index_dataset
from truthinmotion.core.errors import StageError
from truthinmotion.core.io import atomic_write_text, save_npz
from truthinmotion.execution.stage import run_stage
from truthinmotion.backends.weights import check_hf_model, WeightsNotFound

SHARED_VIDEO = FFPP / "original_sequences/youtube/c23/videos/004.mp4"


@pytest.fixture(scope="module")
def real_faces(clips) -> Faces:
    """Face crops of a real video (a generated clip where ../shared is absent)."""
    video = SHARED_VIDEO if SHARED_VIDEO.is_file() else clips["real"]
    cfg = FacesConfig(num_points=6)
    return extract_faces(video, cfg, FaceDetector.from_config(cfg))


def test_compact_round_trips_stay_within_their_documented_bounds(real_faces):
    crops = np.stack([t.crops for t in real_faces.tracks])  # [T, K, 2, S, S, 3]
    valid = np.stack([t.valid for t in real_faces.tracks])
    mask = np.repeat(valid[..., None], 2, -1)
    mask[0, 1] = False  # a point without a face: stored empty, read back as zeros
    packed = pack_crops(crops, mask, "jpeg", 95)
    back = unpack_crops(packed)
    assert back.shape == crops.shape and (back[0, 1] == 0).all()
    err = np.abs(back[mask].astype(int) - crops[mask].astype(int))
    assert err.mean() < 2.0  # JPEG at quality 95: about one grey level on average
    assert 0 < err.max()  # lossy, so the flow is computed from what was stored (see detect)
    # One picture decodes alone, the same as from the whole stack.
    np.testing.assert_array_equal(unpack_crops(packed, [5])[0], back.reshape(-1, *crops.shape[-3:])[5])
    np.testing.assert_array_equal(stored_crops(crops, "jpeg", 95)[mask], back[mask])
    assert pack_crops(crops, mask, "raw")["crops"] is crops

    flow = FlowEstimator(FlowConfig())(crops[0][valid[0]])  # float32 pixels
    assert np.abs(flow).max() > 0.5  # real motion, so the quantisation is exercised
    stored = unpack_flow(pack_flow(flow, None))
    epe = np.hypot(*(stored - flow).transpose(3, 0, 1, 2))
    assert epe.max() <= FLOW_STEP / np.sqrt(2) + 1e-6 <= 0.05  # the documented bound, below the 0.05 px
    assert epe.mean() > 0.005  # not a lossless path in disguise
    np.testing.assert_array_equal(stored, stored_flow(flow))  # detect's round trip is the artifact's

    rng = np.random.default_rng(0)
    depth = (np.cumsum(rng.normal(size=(4, 32, 32)), -1) * 3 + 50).astype(np.float32)
    depth[2] = 7.0  # a flat map
    stored = unpack_depth(pack_depth(depth, None))
    span = depth.max((1, 2)) - depth.min((1, 2))
    rel = np.abs(stored - depth).max((1, 2)) / np.where(span > 0, span, 1)
    assert rel.max() <= 0.5 / DEPTH_LEVELS + 1e-6 and rel.max() > 0
    assert (stored[2] == 7.0).all()
    np.testing.assert_array_equal(stored, stored_depth(depth))


def test_new_faces_artifacts_are_compact_and_load_what_was_stored(real_faces, tmp_path):
    path = tmp_path / "f.npz"
    real_faces.save(path)
    raw = tmp_path / "raw.npz"
    real_faces.save(raw, crop_format="raw")
    assert path.stat().st_size * 4 < raw.stat().st_size
    loaded = Faces.load(path)
    np.testing.assert_array_equal(loaded.boxes, real_faces.boxes)
    np.testing.assert_array_equal(loaded.crops, stored_crops(real_faces.crops, "jpeg", 95))
    np.testing.assert_array_equal(Faces.load(raw).crops, real_faces.crops)
    np.testing.assert_array_equal(load_crops(path, 0, [3, 1], frame=1), loaded.crops[[3, 1], 1])


def test_old_artifacts_still_read_and_an_unknown_schema_asks_to_recompute(real_faces, tmp_path):
    tracks = real_faces.tracks
    arrays = dict(frame_index=real_faces.frame_index, boxes=np.stack([t.boxes for t in tracks]),
                  scores=np.stack([t.scores for t in tracks]), detected=np.stack([t.detected for t in tracks]),
                  crops=np.stack([t.crops for t in tracks]))
    save_npz(tmp_path / "v2.npz", {"stage": "faces", "schema": 2}, **arrays)
    np.testing.assert_array_equal(Faces.load(tmp_path / "v2.npz").crops, real_faces.crops)
    np.testing.assert_array_equal(load_crops(tmp_path / "v2.npz", 0, [2]), real_faces.crops[[2], 0])
    flow16 = np.random.default_rng(1).normal(size=(1, 6, 8, 8, 2)).astype(np.float16)
    valid = np.ones((1, 6), bool)
    save_npz(tmp_path / "flow2.npz", {"stage": "flow", "schema": 2}, flow=flow16, valid=valid)
    values, v, _ = load_feature(tmp_path / "flow2.npz")
    assert values.dtype == np.float32 and v.all()
    np.testing.assert_array_equal(values, flow16.astype(np.float32))
    np.testing.assert_array_equal(load_feature(tmp_path / "flow2.npz", track=0, points=[4, 0])[0], values[0, [4, 0]])
    save_npz(tmp_path / "flow1.npz", {"stage": "flow"}, flow=flow16[0], valid=valid[0])  # schema 1: no track axis
    np.testing.assert_array_equal(load_feature(tmp_path / "flow1.npz")[0], values)
    save_npz(tmp_path / "v9.npz", {"stage": "flow", "schema": 9}, flow=flow16, valid=valid)
    with pytest.raises(StageError, match=r"schema 9.*tim features --overwrite"):
        load_feature(tmp_path / "v9.npz")
    save_npz(tmp_path / "f9.npz", {"stage": "faces", "schema": 9}, **arrays)
    with pytest.raises(StageError, match=r"schema 9.*tim faces --overwrite"):
        Faces.load(tmp_path / "f9.npz")


def test_artifacts_follow_the_umask(real_faces, tmp_path):
    old = os.umask(0o022)
    try:
        real_faces.save(tmp_path / "shared.npz")
        atomic_write_text(tmp_path / "a.json", "{}")
        os.umask(0o077)
        real_faces.save(tmp_path / "private.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "shared.npz").stat().st_mode & 0o777 == 0o644  # readable by group and others
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.npz").stat().st_mode & 0o777 == 0o600  # the umask decides, not the code


def _fails_to_start(cfg):
    raise ConfigError("no weights for this model")


def _never(state, job):  # pragma: no cover - must not run
    raise AssertionError("a job ran without its models")


def test_a_worker_that_cannot_start_stops_the_stage_at_once(tmp_path):
    from truthinmotion.core.io import ErrorLog

    t = time.perf_counter()
    with pytest.raises(ConfigError, match="worker could not start.*no weights for this model"):
        run_stage("features", [("a",), ("b",), ("c",)], _never, init=_fails_to_start, init_args=(None,),
                  workers=2, errors=ErrorLog(tmp_path / "errors.csv"), progress=False)
    assert time.perf_counter() - t < 60  # a pool initializer that raises used to be respawned forever
    assert not (tmp_path / "errors.csv").exists()  # no video is blamed for it


def _folder_dataset(root: Path, clips) -> Path:
    for sub, name in (("real", "real"), ("fake", "fake")):
        (root / sub).mkdir(parents=True)
        (root / sub / "a.mp4").symlink_to(clips[name])
    return root


def test_run_with_a_missing_model_fails_in_seconds_before_any_video(tmp_path, clips):
    root = _folder_dataset(tmp_path / "data", clips)
    # Networking disabled: the hub's name does not resolve (.invalid never does, RFC 2606).
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://tim-no-network.invalid"}
    env.pop("HF_HUB_OFFLINE", None)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "truthinmotion", "run", str(root), "-o", str(tmp_path / "out"),
                           "-q"], env=env, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - t
    assert proc.returncode == 2, proc.stderr
    assert seconds < 10, seconds
    err = proc.stderr
    assert "before touching any video" in err and "facebook/dinov2-small" in err
    assert "depth-anything/Depth-Anything-V2-Small-hf" in err and "tim-no-network.invalid is not reachable" in err
    assert not (tmp_path / "out" / "work" / "faces").exists()


def test_hf_hub_offline_is_respected_without_a_connection(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: pytest.fail("offline means no request"))
    with pytest.raises(WeightsNotFound, match="HF_HUB_OFFLINE is set"):
        check_hf_model("facebook/dinov2-small", what="dinov2-small")
    assert check_hf_model("facebook/dinov2-small", init="random", random_known=True) == "random"


def test_unwritable_output_and_too_little_space_fail_before_any_video(tmp_path, clips, monkeypatch):
    import shutil

    work = tmp_path / "w"
    index_dataset(_folder_dataset(tmp_path / "data", clips), work, IndexConfig(format="folder"))
    calls = []
    monkeypatch.setattr("truthinmotion.faces.stage.extract_faces", lambda *a, **k: calls.append(a))
    (work / "faces").write_text("not a directory")
    with pytest.raises(ConfigError, match="(?s)before touching any video.*faces is a file, not a directory"):
        run_faces(work, FacesConfig(num_points=4), progress=False)
    (work / "faces").unlink()
    little = shutil.disk_usage(tmp_path)._replace(free=100_000)
    monkeypatch.setattr("truthinmotion.execution.preflight.shutil.disk_usage", lambda p: little)
    with pytest.raises(ConfigError, match=r"(?s)need about .*100\.0 kB free.*--no-space-check"):
        run_faces(work, FacesConfig(num_points=4), progress=False)
    assert calls == [] and not list(work.glob("faces/*.npz")) and not (work / "errors.csv").exists()
    monkeypatch.undo()
    monkeypatch.setattr("truthinmotion.execution.preflight.shutil.disk_usage", lambda p: little)
    report = run_faces(work, FacesConfig(num_points=4), progress=False, space_check=False)
    assert report.processed == 2 and len(list(work.glob("faces/*.npz"))) == 2
