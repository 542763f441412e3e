"""Shared fixtures: the real videos in ../shared/data (skipped with a reason when absent) and
generated face clips."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n 2: one thread each, or the two workers' threads contend
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

# `make test` (pytest -n auto --dist loadfile) hands whole files to the workers in the order they
# were collected: the longest files first (as measured with --durations), so that the last file to
# start is a short one and neither worker is left waiting for the other at the end.
LONGEST_FIRST = ("test_scale.py", "test_cli.py", "test_serve.py", "test_train.py", "test_faces.py", "test_study.py",
                 "test_detect.py", "test_report.py", "test_hostile.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests stay in order


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FFPP = SHARED / "ffpp"
DFDC = SHARED / "dfdc"
FFPP_SPLITS = SHARED / "ffpp-splits"


def need_shared() -> Path:
    if not FFPP.is_dir():
        pytest.skip(f"real test videos not found at {SHARED} (they live in ../shared beside the project)")
    return SHARED


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory) -> Path:
    """ONNX exports (:mod:`truthinmotion.backends.onnxrun`) go to a folder of this session, not the user's
    cache; tim started by a test inherits it."""
    path = tmp_path_factory.mktemp("onnx-cache")
    os.environ["TIM_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    return need_shared()


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Two short generated face videos, one real-style and one fake-style (256 px, 30 frames)."""
    from truthinmotion.media.clips import synth_clip, write_video

    root = tmp_path_factory.mktemp("clips")
    return {
        name: write_video(root / f"{name}.mp4", synth_clip(fake, frames=30, size=256, seed=i))
        for i, (name, fake) in enumerate((("real", False), ("fake", True)))
    }


@pytest.fixture(scope="session")
def faceless(tmp_path_factory) -> Path:
    """A readable video without a face: smooth noise."""
    from truthinmotion.media.clips import write_video

    rng = np.random.default_rng(0)
    frames = np.clip(rng.normal(128, 20, (12, 128, 128, 3)), 0, 255).astype(np.uint8)
    return write_video(tmp_path_factory.mktemp("noface") / "noface.mp4", frames)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A tiny flow+depth detector trained on synthetic data, depth from a saved tiny model."""
    import torch
    from transformers import DepthAnythingForDepthEstimation

    from synthetic import make_workdir
    from truthinmotion.features import DepthConfig, depth_anything_config
    from truthinmotion.training.train import TrainConfig, train
    from truthinmotion.backends.weights import save_random_model

    root = tmp_path_factory.mktemp("detect")
    torch.manual_seed(0)
    depth_dir = save_random_model(
        DepthAnythingForDepthEstimation(depth_anything_config("depth-anything-v2-tiny")), root / "da-tiny")
    depth = DepthConfig(model=str(depth_dir), input_size=56)
    # 16 time points of a video in tim detect (the default: 32), so that tests over real videos take half the time
    work = make_workdir(root / "w", depth=depth, faces_config={"num_points": 16})
    cfg = TrainConfig(backbone="dinov2-tiny", init="random", image_size=56, workers=0, progress=False,
                      modality="flow+depth", depth=depth.key, epochs=2, batch_size=6, lr=1e-3, train_points=4)
    train(work, cfg, root / "run")
    return root / "run"
