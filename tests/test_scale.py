"""Beyond one process: the Ray engine gives the local engine's artifacts and verdicts, records bad
videos and resumes; batched scoring across videos; the JSON-lines log resumes."""

from __future__ import annotations

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

from conftest import FFPP, need_shared
from test_hostile import default_sigint
from truthinmotion.core.errors import ConfigError
from truthinmotion.inference.scorer import Preparer
from truthinmotion.inference.detect import detect
from truthinmotion.execution.engine import Engine
from truthinmotion.faces.artifact import Faces
from truthinmotion.faces.config import FacesConfig
from truthinmotion.faces.stage import run_faces
from truthinmotion.data.index import IndexConfig, index_dataset

RAY = Engine("ray")
ORIGINALS = ["004", "519"]  # and the fake 519_515: three videos with a face


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of 2 CPUs for the module (the engine joins a Ray already running)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'truthinmotion[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _dataset(root: Path, faceless: Path | None = None, corrupt: bool = False) -> Path:
    need_shared()
    (root / "real").mkdir(parents=True)
    (root / "fake").mkdir()
    for vid in ORIGINALS:
        (root / "real" / f"{vid}.mp4").symlink_to(FFPP / f"original_sequences/youtube/c23/videos/{vid}.mp4")
    (root / "fake" / "519_515.mp4").symlink_to(FFPP / "manipulated_sequences/Deepfakes/c23/videos/519_515.mp4")
    if faceless is not None:
        (root / "fake" / "noface.mp4").symlink_to(faceless)
    if corrupt:
        (root / "fake" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    return root


def test_faces_through_ray_match_the_local_engine_and_record_bad_videos(tmp_path, local_ray, faceless):
    root = _dataset(tmp_path / "data", faceless, corrupt=True)
    cfg = FacesConfig(num_points=6)
    works = {}
    for name, engine in (("local", Engine()), ("ray", RAY)):
        work = tmp_path / name
        index_dataset(root, work, IndexConfig(format="folder"))
        report = run_faces(work, cfg, workers=2, engine=engine, progress=False)
        assert report.processed == 3 and set(report.failed) == {"fake-noface", "fake-broken"}, report.summary()
        assert report.failed["fake-noface"].startswith("no_face") and report.failed["fake-broken"].startswith("unreadable")
        rows = (work / "errors.csv").read_text()
        assert "fake-noface,faces,no_face" in rows and "fake-broken,faces,unreadable" in rows
        works[name] = work
    for vid in ["real-004", "real-519", "fake-519_515"]:
        a, b = (Faces.load(works[n] / "faces" / f"{vid}.npz") for n in ("local", "ray"))
        both = a.valid & b.valid
        assert both.sum() >= 5
        # Another process and thread count: MTCNN's sums may differ in the last bits, no more.
        np.testing.assert_allclose(a.boxes[both], b.boxes[both], atol=1e-3)


def test_detect_through_ray_and_batched_gives_the_local_verdicts(tmp_path, local_ray, run_dir, faceless):
    root = _dataset(tmp_path / "data", faceless)
    videos = sorted(root.rglob("*.mp4"))
    one = detect(videos, run_dir, progress=False)  # one video at a time, in this process
    batched = detect(videos, run_dir, progress=False, workers=2, batch_size=48)
    on_ray = detect(videos, run_dir, progress=False, workers=2, batch_size=48, engine=RAY)
    assert [v.video for v in one] == [v.video for v in batched] == [v.video for v in on_ray] == [str(p) for p in videos]
    for a, b, c in zip(one, batched, on_ray):
        assert a.status == b.status == c.status
        if a.ok:
            assert abs(a.probability - b.probability) <= 1e-4 and abs(a.probability - c.probability) <= 1e-4
            np.testing.assert_allclose([x for x in b.frame_scores if x is not None],
                                       [x for x in a.frame_scores if x is not None], atol=1e-4)
    assert sum(v.ok for v in one) == 3 and next(v for v in one if not v.ok).status == "no_face"


def test_an_interrupted_ray_run_resumes_without_redoing_finished_videos(tmp_path, local_ray):
    root = _dataset(tmp_path / "data")
    work = tmp_path / "w"
    index_dataset(root, work, IndexConfig(format="folder"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "truthinmotion", "faces", str(work), "--points", "6",
                             "--engine", "ray", "--workers", "1", "-q"], env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    deadline = time.time() + 240
    while not list(work.glob("faces/*.npz")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    finished = {p.name: p.stat().st_mtime_ns for p in work.glob("faces/*.npz")}
    assert finished and proc.poll() is None, "no video finished before the deadline"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, proc.stderr.read()
    finished = {p.name: p.stat().st_mtime_ns for p in work.glob("faces/*.npz")}
    assert 1 <= len(finished) < 3
    report = run_faces(work, FacesConfig(num_points=6), engine=RAY, progress=False)
    assert report.skipped == len(finished) and report.processed == 3 - len(finished) and report.ok
    assert all((work / "faces" / n).stat().st_mtime_ns == t for n, t in finished.items())
    assert not list(work.glob("faces/.*.tmp*"))


def test_jsonl_gets_each_verdict_and_a_rerun_skips_finished_videos(tmp_path, run_dir, clips, faceless, monkeypatch):
    videos = [tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "c.mp4"]
    for v, src in zip(videos, (clips["real"], clips["fake"], faceless)):
        shutil.copy(src, v)
    out = tmp_path / "verdicts.jsonl"
    first = detect(videos[:2], run_dir, jsonl_out=out, progress=False)
    lines = out.read_text().splitlines()
    assert [json.loads(x)["video"] for x in lines] == [str(v) for v in videos[:2]]
    with open(out, "a") as f:
        f.write('{"video": "' + str(videos[2]))  # a kill in the middle of a line
    prepared = []
    original = Preparer.__call__
    monkeypatch.setattr(Preparer, "__call__", lambda self, path: prepared.append(Path(path)) or original(self, path))
    again = detect(videos, run_dir, jsonl_out=out, progress=False)
    assert prepared == [videos[2]]  # only the video without a verdict was scored
    assert [v.video for v in again] == [str(v) for v in videos]
    assert again[0].probability == first[0].probability and again[2].status == "no_face"
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["video"] for r in records] == [str(v) for v in videos]


def test_ray_engine_without_ray_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    from truthinmotion.execution.engine import require_ray

    with pytest.raises(ConfigError, match=r"pip install 'truthinmotion\[ray\]'"):
        require_ray()


def test_detect_workers_that_cannot_build_their_models_stop_before_any_video(tmp_path, run_dir, clips, monkeypatch):
    from truthinmotion.inference import batching as batchscore
    from truthinmotion.execution import workers
    from truthinmotion.execution.workers import InitFailed
    from truthinmotion.backends.weights import WeightsNotFound

    # Flow the workers would compute with RAFT weights that are not there: refused up front.
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    config = broken / "best" / "config.json"
    data = json.loads(config.read_text())
    data["flow"] = {"method": "raft-small", "raft_weights": str(tmp_path / "none.pth"), "init": "pretrained"}
    config.write_text(json.dumps(data))
    t = time.perf_counter()
    with pytest.raises(WeightsNotFound, match="weights file not found"):
        detect([clips["real"], clips["fake"]], broken, workers=2, progress=False)
    assert time.perf_counter() - t < 30
    # A worker whose models fail to build anyway reports it, and the batch stops with the reason
    # (a pool initializer that raises would be respawned forever).
    monkeypatch.setattr(workers, "_STATE", {"state": InitFailed("WeightsNotFound: gone")})
    with pytest.raises(ConfigError, match="worker could not start: WeightsNotFound: gone"):
        list(batchscore._started(batchscore._prepare(str(p)) for p in (clips["real"], clips["fake"])))
