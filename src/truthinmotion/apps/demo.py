"""``tim demo``: the whole pipeline on a generated data set, offline, in minutes on a CPU.

Real-style and fake-style face clips are generated from a public-domain portrait shipped with
scikit-image (see :mod:`truthinmotion.media.clips`) and go through the real stages: indexing, MTCNN
face tracking and cropping, Farnebäck flow, Depth Anything V2 depth, detector training,
evaluation, and ``detect`` with evidence pages on a test clip of each class. Pretrained DINOv2
and Depth Anything V2 small are used when they are in the local Hugging Face cache; otherwise
tiny models of the same architectures with random weights, and the report says so. With
``study=True`` (``tim demo --study``) a small study of the same clips follows (every modality by
two tiny backbones, or by the cached DINOv2-small, fp32 and int8: with random weights twelve
cells, 2.4 times the rest's CPU time), kept out of the default so that a first command is quick.
The demo shows the pipeline working; it says nothing about accuracy on real deepfakes (run the
study on FaceForensics++ for that: see the README).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.errors import ConfigError
from ..inference.scorer import Scorer
from ..reports.plots import plot_scores
from ..reports.page import write_report
from ..faces.config import FacesConfig
from ..features.depth import DEPTH_MODELS, DepthConfig, depth_anything_config
from ..features.flow import FlowConfig
from ..data.index import IndexConfig
from ..experiments.pipeline import StudyConfig, run_study
from ..experiments.study import StudyPlan, run_full_study
from ..media.clips import synth_clip, write_video
from ..training.train import TrainConfig
from ..backends.weights import is_cached, save_random_model

__all__ = ["DemoResult", "make_demo_data", "run_demo"]

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    out: Path
    lines: list[str] = field(default_factory=list)
    pretrained: bool = False

    def summary(self) -> str:
        return "\n".join(self.lines)


def make_demo_data(root: Path, clips: int = 20, frames: int = 40, size: int = 256) -> Path:
    """Write ``clips`` real and ``clips`` fake clips under ``root/real`` and ``root/fake``."""
    todo = [(root / kind / f"{kind}{i:03d}.mp4", fake, 1000 * fake + i)
            for i in range(clips) for kind, fake in (("real", False), ("fake", True))]

    def make(path: Path, fake: bool, seed: int) -> None:
        if not path.exists():
            write_video(path, synth_clip(fake, frames=frames, size=size, seed=seed))

    # OpenCV and numpy release the GIL: two threads use both cores of a small machine.
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda job: make(*job), todo))
    return root


def demo_config(out: Path, points: int = 16, epochs: int = 10) -> tuple[StudyConfig, bool]:
    """Settings for the demo: pretrained small models when cached, else tiny random ones."""
    pretrained = is_cached("facebook/dinov2-small") and is_cached(DEPTH_MODELS["depth-anything-v2-small"]["hub_id"])
    if pretrained:
        depth = DepthConfig(model="depth-anything-v2-small", input_size=224)
        backbone, image_size, init = "dinov2-small", 224, "pretrained"
    else:
        # A tiny Depth Anything V2 with random weights, saved once so that training, evaluation
        # and detect all see the same depth model (the directory is marked as random).
        from transformers import DepthAnythingForDepthEstimation

        path = out / "models" / "depth-anything-v2-tiny-random"
        if not (path / "config.json").is_file():
            torch.manual_seed(0)
            save_random_model(DepthAnythingForDepthEstimation(depth_anything_config("depth-anything-v2-tiny")), path)
        depth = DepthConfig(model=str(path), input_size=112)
        backbone, image_size, init = "dinov2-tiny", 112, "random"
    cfg = StudyConfig(
        index=IndexConfig(format="folder"),
        faces=FacesConfig(num_points=points),
        flow=FlowConfig(),
        depth=depth,
        train=TrainConfig(
            backbone=backbone, init=init, image_size=image_size, modality="flow+depth", epochs=epochs,
            batch_size=6, train_points=6, lr=1e-3 if init == "random" else 1e-4, workers=0, patience=4,
            fakes="dataset",  # the generated fakes; --fakes pseudo learns from twins of the real clips instead
            # The default fixed flow scale (4 px) keeps the magnitude of the re-rendered face's
            # jitter visible; the study's per-picture scaling amplifies the real clips' noise to
            # full brightness, which a tiny random encoder cannot see past in ten epochs.
        ),
    )
    return cfg, pretrained


def run_demo(out: str | Path = "demo-out", clips: int = 20, points: int = 16, epochs: int = 5,
             progress: bool = True, study: bool = False, settings: dict[str, Any] | None = None,
             fakes: str | None = None) -> DemoResult:
    """``settings``: sections of a settings file (``index``, ``faces``, ``flow``, ``depth``, ``train``)
    applied over the demo's own settings and ``points`` and ``epochs``; ``fakes`` (``--fakes``) last.
    With ``fakes="pseudo"`` the detector learns from pseudo-fakes of the real clips only, and the
    generated fake clips of the test split are fakes it was never shown."""
    out = Path(out)
    cfg, pretrained = demo_config(out, points, epochs)
    cfg = cfg.with_sections(settings).with_options(fakes=fakes)
    if study and cfg.train.fakes != "dataset":
        raise ConfigError(f"tim demo --study compares detectors of the generated fakes; for a study on "
                          f"{cfg.train.fakes} fakes run `tim study {out / 'data'} --fakes {cfg.train.fakes}`")
    data = make_demo_data(out / "data", clips=clips)
    result = DemoResult(out, pretrained=pretrained)
    result.lines.append(
        "weights: pretrained DINOv2-small and Depth Anything V2 small from the local cache" if pretrained else
        "weights: none cached, so tiny DINOv2 and Depth Anything V2 models with RANDOM weights "
        "(the pipeline is real; the accuracy says nothing about pretrained detectors)"
    )
    name = "demo" if cfg.train.fakes in ("auto", "dataset") else f"demo-{cfg.train.fakes}"
    pipeline = run_study(data, out, cfg, run_name=name, progress=progress)
    result.lines += pipeline.lines
    if cfg.train.fakes == "pseudo":
        unseen = pipeline.evaluation.metrics["per_method"].get("fake", {}).get("video", {})
        auc = unseen.get("auc")
        result.lines.append(
            "trained on pseudo-fakes of the real clips only, so the generated fake clips were never shown to it: "
            f"video AUC {'n/a' if auc is None else f'{auc:.3f}'} for the test's {unseen.get('fake', 0)} generated "
            f"fakes against its {unseen.get('real', 0)} real clips")
    # detect on one test clip of each class, every stage in memory from the run directory alone
    scorer = Scorer(out / "runs" / name)
    test = pipeline.evaluation.metrics["videos"]
    for kind in ("real", "fake"):
        vid = next((v["video_id"] for v in test if v["video_id"].startswith(kind)), None)
        if vid is None:
            continue
        path = data / kind / f"{vid.split('-', 1)[1]}.mp4"
        verdict, evidence = scorer.score(path, evidence=4)
        png = plot_scores(verdict, out / f"detect-{vid}.png")
        page = write_report(verdict, evidence, scorer.model_info, out / f"detect-{vid}.html")
        result.lines.append(
            f"detect {path.name} ({kind}): {verdict.label}, p={verdict.probability:.3f} in "
            f"{verdict.timings['total']:.2f}s; plot {png}; evidence page {page}"
        )
    if not study:
        result.lines.append("a small study of these clips (every modality, fp32 and int8): tim demo --study")
        return result
    # A small study on the same clips: every modality, two backbone sizes, int8.
    plan = StudyPlan(backbones=("dinov2-small",) if pretrained else ("dinov2-tiny", "dinov2-tiny-wide"),
                     modalities=("flow", "depth", "flow+depth"), compress=("int8",), bootstrap=200)
    table = run_full_study(data, out, cfg, plan, progress=progress)
    text = (out / "study.md").read_text().split("\n## ")
    result.lines += ["", "## " + text[1].strip(), "", f"study: {table.out / 'study.md'}"]
    return result
