"""``tim run``: index -> faces -> (synth) -> (augment) -> features -> train -> evaluate, resumable stage by stage.

Every stage skips what is already done (videos with artifacts, a finished training run), so an
interrupted study continues where it stopped. Defaults reproduce the study: FF++-style split
handling, K=32 pairs, Farnebäck flow, Depth Anything V2 small, DINOv2-small trained on flow+depth
with its last block unfrozen, best epoch on validation, evaluated on test. With ``fakes`` pseudo
or both (``--fakes``), pseudo-fakes of the real videos are made after the faces (``tim synth``), so
a folder of real videos alone is enough. With ``--augment``, perturbed copies of the training videos
(:mod:`..synth.augment`) are made after them, so their flow and depth come from their own crops.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from .evaluate import EvalResult, evaluate
from ..faces.config import FacesConfig
from ..faces.stage import run_faces
from ..synth.config import SynthConfig
from ..synth.augment import run_augment
from ..synth.stage import run_synth
from ..features.depth import DepthConfig, check_depth
from ..features.flow import FlowConfig, check_flow
from ..features.stage import run_features
from ..data.index import IndexConfig, index_dataset
from ..core.io import dir_size
from ..models.architecture import check_backbone
from ..execution.preflight import check_space, estimate, preflight
from ..training.train import TrainConfig, train, train_status
from ..core.io import WorkDir, atomic_path
from ..data.index import IndexResult, split_hash
from ..models.detector import read_record
from ..training.runs import check_split

__all__ = ["StudyConfig", "RunResult", "augment_work", "prepare_work", "run_study", "train_cell"]

log = logging.getLogger(__name__)

SECTIONS = ("index", "faces", "synth", "flow", "depth", "train")


@dataclass
class StudyConfig:
    """The settings of every stage; ``from_sections`` reads a YAML mapping of sections."""

    index: IndexConfig = field(default_factory=IndexConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)  # used where train.fakes is pseudo or both
    flow: FlowConfig = field(default_factory=FlowConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(modality="flow+depth"))

    @classmethod
    def from_sections(cls, data: dict[str, Any] | None) -> "StudyConfig":
        return cls().with_sections(data)

    def with_sections(self, data: dict[str, Any] | None) -> "StudyConfig":
        """These settings with a mapping of sections (a settings file's) applied on top."""
        data = data or {}
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"unknown section(s) {unknown}; allowed: {', '.join(SECTIONS)}")
        return StudyConfig(**{s: getattr(self, s).updated(data.get(s)) for s in SECTIONS})

    def with_options(self, *, format: str | None = None, splits_dir: str | None = None, modality: str | None = None,
                     backbone: str | None = None, epochs: int | None = None,
                     fakes: str | None = None, augment: tuple[str, ...] | None = None,
                     augment_levels: tuple[int, ...] | None = None) -> "StudyConfig":
        """These settings with ``tim run``'s command-line options on top (``None``: not given)."""
        return StudyConfig(
            index=self.index.updated({"format": format, "splits_dir": splits_dir}), faces=self.faces,
            synth=self.synth, flow=self.flow, depth=self.depth,
            train=self.train.updated({"modality": modality, "backbone": backbone, "epochs": epochs,
                                      "fakes": fakes, "augment": augment, "augment_levels": augment_levels}),
        )


@dataclass
class RunResult:
    """What ``tim run`` did: its output folder, a line per stage, the evaluation."""

    out: Path
    lines: list[str]
    evaluation: EvalResult

    def summary(self) -> str:
        return "\n".join(self.lines)


def _check_runs_split(runs: Path, index: IndexResult, before: bytes | None, allow: bool) -> None:
    """Refuse (unless ``allow``) a re-index whose split is not the one the detectors under ``runs``
    were trained on; the manifest as it was (``before``) is put back, so they still match it."""
    current = split_hash((r.video_id, r.group, r.split) for r in index.records)
    recorded = {p.parent.parent.name: read_record(p.parent).provenance.manifest_hash
                for p in sorted(runs.glob("*/best/config.json"))}
    stale = {name: h for name, h in recorded.items() if h is not None and h != current}
    if not stale:
        return
    if not allow and before is not None:
        with atomic_path(index.manifest) as tmp:
            tmp.write_bytes(before)
    names = sorted(stale)
    check_split(stale[names[0]], current, f"{len(names)} run(s) under {runs} ({', '.join(names[:5])}"
                f"{' ...' if len(names) > 5 else ''})", allow)


def prepare_work(
    root: str | Path, out: Path, cfg: StudyConfig, modalities: set[str], backbones: list[str], *, workers: int = 1,
    device: str = "cpu", progress: bool = True, space_check: bool = True, allow_split_change: bool = False,
) -> tuple[Path, list[str]]:
    """Index, faces and the features ``modalities`` need, into ``out/work``; (work dir, summary
    lines). Before any video is touched: every model (the ``backbones`` too) resolves, ``out`` is
    writable, (unless not ``space_check``) its disk holds the estimated artifacts, and (unless
    ``allow_split_change``) the index gives the split that the detectors under ``out/runs`` were
    trained on."""
    work = out / "work"
    flow = cfg.flow if "flow" in modalities else None
    depth = cfg.depth if "depth" in modalities else None
    t = cfg.train
    models = [lambda b=b: check_backbone(b, init=t.init, path=t.backbone_path) for b in backbones]
    models += [lambda: check_flow(flow)] if flow else []
    models += [lambda: check_depth(depth)] if depth else []
    preflight(models=models, outputs=[out])
    manifest = WorkDir(work).manifest
    before = manifest.read_bytes() if manifest.is_file() else None
    index = index_dataset(root, work, cfg.index)
    _check_runs_split(out / "runs", index, before, allow_split_change)
    lines = [index.summary()]
    stages = ("faces", *(["flow"] if flow else []), *(["depth"] if depth else []))
    synth = cfg.train.fakes in ("pseudo", "both")
    videos = len(index.records) + (cfg.synth.per_video * sum(1 - r.label for r in index.records) if synth else 0)
    videos += t.augment_copies * sum(r.split == "train" for r in index.records) if t.augment else 0
    need = estimate(videos, cfg.faces.num_points, cfg.faces.size, stages, cfg.depth.input_size)
    lines += need.lines()
    if space_check:  # what a resumed run already holds is not needed again
        check_space(out, need.total_bytes - dir_size(work), "the artifacts of every stage")
    faces = run_faces(work, cfg.faces, workers=workers, device=device, progress=progress, space_check=space_check)
    lines.append(faces.summary())
    if synth:  # the twins of every real video, their faces made as the real videos' were
        made = run_synth(work, cfg.synth, cfg.faces, workers=workers, device=device, progress=progress,
                         space_check=space_check)
        lines += made.summary().splitlines()[1:]  # its faces line repeats the one above
    if t.augment:  # perturbed copies of the training videos, before their flow and depth
        lines += run_augment(work, t.augmentation, cfg.faces, workers=workers, device=device,
                             progress=progress).summary().splitlines()
    if flow or depth:
        lines.append(run_features(work, flow, depth, workers=workers, device=device, progress=progress,
                                  space_check=space_check).summary())
    return work, lines


def augment_work(workdir: str | Path, tcfg: TrainConfig, *, workers: int = 1, device: str = "cpu",
                 progress: bool = True, space_check: bool = True) -> list[str]:
    """``tim train --augment``: the perturbed copies ``tcfg`` plans of ``workdir``'s training videos
    (done ones skipped), their faces made with the work directory's faces settings and their flow
    and depth with the settings of the artifacts ``tcfg`` trains on (``flow/<name>/settings.json``);
    summary lines. Nothing to do without ``augment``."""
    if not tcfg.augment:
        return []
    work = WorkDir(Path(workdir))
    mods = tcfg.detector.modalities
    found = {}
    for kind, name, cls in (("flow", tcfg.flow, FlowConfig), ("depth", tcfg.depth, DepthConfig)):
        if kind not in mods:
            continue
        saved = work.root / kind / name / "settings.json"
        if not saved.is_file():
            raise ConfigError(f"--augment: no {kind} artifacts named {name!r} in {work.root / kind} to compute the "
                              f"copies' {kind} as the training videos' was: run `tim features {work.root}` first")
        found[kind] = cls.from_dict(json.loads(saved.read_text()))
    made = run_augment(work.root, tcfg.augmentation, workers=workers, device=device, progress=progress)
    lines = made.summary().splitlines()
    if found:
        lines.append(run_features(work.root, found.get("flow"), found.get("depth"), workers=workers, device=device,
                                  only=made.ids, progress=progress, space_check=space_check).summary())
    return lines


def train_cell(work: Path, cfg: StudyConfig, run_dir: Path, *, device: str = "cpu", progress: bool = True,
               allow_split_change: bool = False, **train_options: Any) -> str:
    """Train ``cfg.train`` (with ``train_options`` on top) into ``run_dir`` unless it is done; resumes
    a partial run. Returns a summary line."""
    mods = cfg.train.updated(train_options).detector.modalities
    tcfg = cfg.train.updated({
        **train_options, "device": device, "progress": progress,
        "flow": cfg.flow.method if "flow" in mods else None,
        "depth": cfg.depth.key if "depth" in mods else None,
    })
    status = train_status(run_dir, tcfg)
    if status == "done":
        return f"train: {run_dir} is already trained; skipped"
    return train(work, tcfg, run_dir, resume=status == "partial", allow_split_change=allow_split_change).summary()


def run_study(
    root: str | Path, out: str | Path, cfg: StudyConfig, *, workers: int = 1, device: str = "cpu",
    run_name: str | None = None, progress: bool = True, space_check: bool = True, allow_split_change: bool = False,
) -> RunResult:
    """Every stage from a dataset root to an evaluated detector under ``out`` (see
    :func:`prepare_work` for the checks made before any video is touched)."""
    out = Path(out)
    t = cfg.train
    work, lines = prepare_work(root, out, cfg, set(t.detector.modalities), [t.backbone], workers=workers,
                               device=device, progress=progress, space_check=space_check,
                               allow_split_change=allow_split_change)
    run_dir = out / "runs" / (run_name or f"{t.backbone}-{t.modality.replace('+', '-')}")
    lines.append(train_cell(work, cfg, run_dir, device=device, progress=progress,
                            allow_split_change=allow_split_change))
    result = evaluate(run_dir, "test", work, device=device, progress=progress, allow_split_change=allow_split_change)
    lines.append(result.summary())
    return RunResult(out, lines, result)
