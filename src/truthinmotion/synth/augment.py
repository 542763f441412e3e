"""``--augment``: perturbed copies of every training video, made as pseudo-fakes are, resumable and
parallel.

A copy is a manifest row (:mod:`..data.augment`: its source's path, label, group and the train
split, ``augment=<type>-<level>``) and a faces artifact of its own, made on the frames the pipeline
samples, before flow and depth are computed from its crops. A type applied frame by frame
(saturation, contrast, blocks, noise, blur, pixelation: :func:`..media.perturb.perturb_frame`) is
applied to the source's sampled frames (both of each pair), decoded at full size as
DeeperForensics-1.0 defines the perturbations, then kept at ``max_frame_side`` as the faces stage
keeps frames; they go through :func:`..faces.extract.faces_from_frames` like a twin's. An encoder
type (H.264 CRF, resizing, a bitrate cap) re-encodes the whole video to a temporary copy
(:func:`..media.perturb.perturb_video`), whose faces are extracted as any video's; the copy is
deleted at once.

A copy is seeded by the settings' seed and its id, so a re-run makes the same copy; a copy whose
artifact was made from its source as it is now, with the same type, level and seed, is skipped. A
copy that cannot be made (a video that cannot be decoded, no face left after blurring) is a row of
``errors.csv`` (stage ``augment``) and the batch goes on.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.io import WorkDir, source_identity
from ..data.augment import AugmentConfig, copy_seed, is_derived, parse_copy, plan_copies
from ..data.index import read_manifest, write_manifest
from ..execution.engine import LOCAL, Engine
from ..execution.stage import StageReport, run_stage
from ..faces.config import FacesConfig
from ..faces.extract import check_memory, extract_faces, faces_from_frames
from ..faces.mtcnn import FaceDetector
from ..faces.stage import current
from ..media.perturb import PERTURBATIONS, perturb_frame, perturb_video, require_av
from ..media.video import fit_frame, probe, read_frames, sample_points

__all__ = ["AugmentResult", "run_augment"]

log = logging.getLogger(__name__)


@dataclass
class AugmentResult:
    copies: StageReport
    manifest_rows: int  # copy rows the manifest gained
    ids: list[str]  # every planned copy

    def summary(self) -> str:
        return f"augment: {self.manifest_rows} copies added to the manifest\n{self.copies.summary()}"


def _init(cfg: FacesConfig, device: str) -> tuple[FacesConfig, FaceDetector]:
    return cfg, FaceDetector.from_config(cfg, device)


def _one(state: tuple[FacesConfig, FaceDetector], job: tuple) -> dict:
    cfg, detector = state
    _, path, out, spec_json = job
    spec = json.loads(spec_json)
    code, level, seed = spec["perturbation"], spec["level"], spec["seed"]
    if PERTURBATIONS[code].encoder:
        with tempfile.TemporaryDirectory(prefix="tim-augment-") as tmp:
            made = perturb_video(path, Path(tmp) / "copy.mp4", code, level, seed=seed)
            faces = extract_faces(made.path, cfg, detector)
        drawn: dict[str, Any] = made.params
        faces.meta.update(video=str(path), source=source_identity(path), copy={"width": made.width,
                                                                               "height": made.height})
    else:
        info = probe(path)
        points = sample_points(info.frames, cfg.num_points)
        wanted = np.unique(np.concatenate([points, points + 1]))
        check_memory(info, len(wanted), cfg)
        rng = np.random.default_rng(seed)
        frames, drawn = {}, {}
        for i, bgr in read_frames(path, wanted, rgb=False):  # full size: the perturbations are defined there
            bgr, now = perturb_frame(code, level, bgr, rng)
            frames[i] = fit_frame(bgr, cfg.max_frame_side)
            for k, v in now.items():
                drawn.setdefault(k, v)
        faces = faces_from_frames(frames, points, info, cfg, detector)
    faces.meta["synth"] = {"spec": spec, "drawn": drawn}  # what made it: faces.stage.current compares the spec
    faces.save(Path(out), cfg.compress, cfg.crop_format, cfg.crop_quality)
    return {"coverage": faces.meta["coverage"]}


def run_augment(
    workdir: str | Path,
    cfg: AugmentConfig,
    faces_cfg: FacesConfig | None = None,
    *,
    workers: int = 1,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    engine: Engine = LOCAL,
) -> AugmentResult:
    """The copies ``cfg`` plans of the training videos of ``WORKDIR/manifest.csv``: their rows
    added to the manifest, their faces made unless done. ``faces_cfg`` None takes the work
    directory's faces settings (``faces/settings.json``): a copy's crops must be made as its
    source's are."""
    work = WorkDir(Path(workdir))
    if not cfg.augment:
        raise ConfigError("augment: no perturbation types given (e.g. --augment gb,vc)")
    if any(PERTURBATIONS[c].encoder for c in cfg.augment):
        require_av()  # before any work
    saved = work.root / "faces" / "settings.json"
    if faces_cfg is None:
        if not saved.is_file():
            raise ConfigError(f"no faces settings in {saved.parent}: run `tim faces {work.root}` first")
        faces_cfg = FacesConfig.from_dict(json.loads(saved.read_text()))
    rows = read_manifest(workdir)
    copies = plan_copies(rows, cfg)
    if not copies:
        raise ConfigError(f"no training videos in {work.manifest} to make perturbed copies of")
    known = {r["video_id"] for r in rows}
    added = [c for c in copies if c["video_id"] not in known]
    if added:
        write_manifest(work.root, [*rows, *added])
    jobs, skipped = [], 0
    for c in copies:
        code, level = parse_copy(c)
        spec = {"perturbation": code, "level": level, "seed": copy_seed(cfg.augment_seed, c["video_id"]),
                "source": c["source"], "faces": faces_cfg.to_dict()}  # new faces settings: made again
        out = work.faces(c["video_id"])
        if not overwrite and current(out, c["path"], spec):
            skipped += 1
            continue
        jobs.append((c["video_id"], c["path"], str(out), json.dumps(spec)))
    log.info("augment: %d copies of %d training videos; %d done before", len(copies),
             sum(not is_derived(r) and r["split"] == "train" for r in rows), skipped)
    report = run_stage("augment", jobs, _one, init=_init,
                       init_args=(faces_cfg, device), workers=workers, errors=work.errors, skipped=skipped,
                       progress=progress, engine=engine, gpus=engine.gpus if device.startswith("cuda") else 0.0)
    return AugmentResult(report, len(added), [c["video_id"] for c in copies])
