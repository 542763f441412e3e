"""``tim compress --method distill``: a small student trained from a large teacher
(:mod:`.distiller` holds the loss and the teacher's side).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any


from ..models.detector import Detector

__all__ = ["distill"]

log = logging.getLogger(__name__)


def distill(
    teacher_run: str | Path, out_dir: str | Path, student: str = "dinov2-small", *,
    config_file: str | Path | None = None, overrides: dict[str, Any] | None = None, resume: bool = False,
):
    """Train ``student`` on the teacher's data and settings, distilling the teacher's embedding.

    The teacher's ``config.yaml`` is the base; ``config_file`` (YAML), then ``overrides`` (the
    command line; ``None`` values are not given) go on top.
    The best epoch on validation is kept, as for any training run.
    """
    from ..core.config import load_yaml
    from .train import TrainConfig, train

    teacher_run = Path(teacher_run)
    teacher = Detector.from_pretrained(teacher_run)
    teacher.record = teacher.record.replace(provenance={"run": str(teacher_run.resolve())})
    cfg_path = teacher_run / "config.yaml"
    base = TrainConfig.from_saved(load_yaml(cfg_path)) if cfg_path.is_file() else TrainConfig(modality=teacher.cfg.modality)
    cfg = dataclasses.replace(base, backbone=student, backbone_path=None)
    cfg = cfg.updated(load_yaml(config_file) if config_file else {}).updated(overrides)
    return train(teacher.record.provenance.workdir, cfg, out_dir, resume=resume, teacher=teacher)
