"""``tim compress --method distill``: a small student trained from a large teacher
(:mod:`.distiller` holds the loss and the teacher's side).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from ..core.config import load_yaml
from ..data.index import manifest_hash
from ..models.detector import Detector
from .runs import TrainConfig, check_split
from .train import train

__all__ = ["distill", "distill_config"]

log = logging.getLogger(__name__)


def distill_config(
    teacher_run: str | Path, student: str = "dinov2-small", *, config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[Detector, TrainConfig]:
    """(the teacher, the student's :class:`~.runs.TrainConfig`): the teacher's ``config.yaml`` is
    the base; ``config_file`` (YAML), then ``overrides`` (the command line; ``None`` values are
    not given) go on top."""
    teacher_run = Path(teacher_run)
    teacher = Detector.from_pretrained(teacher_run)
    teacher.record = teacher.record.replace(provenance={"run": str(teacher_run.resolve())})
    cfg_path = teacher_run / "config.yaml"
    base = TrainConfig.from_saved(load_yaml(cfg_path)) if cfg_path.is_file() else TrainConfig(modality=teacher.cfg.modality)
    cfg = dataclasses.replace(base, backbone=student, backbone_path=None)
    return teacher, cfg.updated(load_yaml(config_file) if config_file else {}).updated(overrides)


def distill(
    teacher_run: str | Path, out_dir: str | Path, student: str = "dinov2-small", *,
    config_file: str | Path | None = None, overrides: dict[str, Any] | None = None, resume: bool = False,
    allow_split_change: bool = False,
):
    """Train ``student`` on the teacher's data and settings (:func:`distill_config`), distilling
    the teacher's embedding. The best epoch on validation is kept, as for any training run.
    """
    teacher, cfg = distill_config(teacher_run, student, config_file=config_file, overrides=overrides)
    workdir = teacher.record.provenance.workdir
    # A teacher trained on another split has seen videos that are now the student's val or test.
    check_split(teacher.record.provenance.manifest_hash, manifest_hash(workdir), f"the teacher {teacher_run}",
                allow_split_change)
    return train(workdir, cfg, out_dir, resume=resume, teacher=teacher, allow_split_change=allow_split_change)
