"""A run directory's settings and state: :class:`TrainConfig`, what a resume may change, whether
a run is new, partial or done, and the result a training run reports.

A run directory holds ``config.yaml`` (the settings actually used), ``env.json``,
``metrics.csv``, ``train.log``, ``best/`` (the detector) and ``last/`` (what ``--resume`` needs).
``best/`` and ``last/`` are each written as a unit (:func:`checkpoint_dir`): a detector's
weights never meet another epoch's config (its verdict rule), nor ``last/``'s weights another
epoch's optimizer state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from ..backends.runtime import AUTOCAST_MODES
from ..core.errors import ConfigError
from ..core.config import load_yaml, require
from ..data.augment import AugmentConfig
from ..data.pseudo import FAKES
from ..models.inputs import DataConfig
from .distiller import DistillConfig
from ..models.architecture import DetectorConfig
from ..core.io import publish

__all__ = ["RESUMABLE", "TrainConfig", "TrainResult", "check_resume", "check_split", "checkpoint_dir",
           "restore_checkpoints", "saved_config", "train_status"]

log = logging.getLogger(__name__)

CHECKPOINTS = ("best", "last")


@dataclass(frozen=True)
class TrainConfig(AugmentConfig, DistillConfig, DataConfig, DetectorConfig):
    """Everything a training run needs: the detector's fields (:class:`DetectorConfig`), the
    data's (:class:`DataConfig`), distillation's (:class:`DistillConfig`), the perturbed training
    copies' (:class:`AugmentConfig`, ``--augment``), each declared once in its own class, plus the
    model source and the optimisation settings below. YAML stays flat."""

    # model source
    image_size: int = 224  # side of the pictures fed to the backbone (a multiple of 14)
    init: str = "pretrained"  # pretrained DINOv2 weights, or random (tests, demo)
    backbone_path: str | None = None  # a local DINOv2 directory instead of the hub id
    # optimisation
    epochs: int = 10
    batch_size: int = 8  # videos per step; each gives train_points pictures
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    patience: int = 3  # epochs without a better validation video AUC before stopping
    balance: str = "loss"  # loss: weight fakes by real/fake; none
    # The fakes trained and validated on (data/pseudo.py): dataset (the dataset's own), pseudo (twins
    # of tim synth: real videos are enough), both, or auto (what the work directory has)
    fakes: str = "auto"
    seed: int = 0
    workers: int = 2  # DataLoader processes
    device: str = "cpu"
    autocast: str = "auto"  # auto: bf16 on CUDA, off on CPU; bf16; fp16 (with a gradient scaler); off
    progress: bool = True

    def check(self) -> None:
        for part in (DetectorConfig, DataConfig, DistillConfig, AugmentConfig):
            part.check(self)
        require(self.init in ("pretrained", "random"), "init: pretrained or random")
        require(self.epochs >= 1 and self.batch_size >= 1, "epochs and batch_size: at least 1")
        require(self.lr > 0 and self.weight_decay >= 0, "lr > 0, weight_decay >= 0")
        require(self.warmup_epochs >= 0 and self.grad_clip > 0, "warmup_epochs >= 0, grad_clip > 0")
        require(self.patience >= 1, "patience: at least 1")
        require(self.balance in ("loss", "none"), "balance: loss or none")
        require(self.fakes in FAKES, f"fakes: one of {', '.join(FAKES)}")
        # copies are made of the dataset's videos only (a twin is no file): with pseudo-fakes alone
        # every perturbed training video would be real, and "perturbed" would mean "real"
        require(not (self.augment and self.fakes == "pseudo"),
                "--augment with --fakes pseudo: every perturbed copy would be of a real video, a shortcut a "
                "detector learns; use --fakes both or dataset, or no --augment")
        require(self.autocast in AUTOCAST_MODES, f"autocast: {', '.join(AUTOCAST_MODES)}")
        require(self.workers >= 0, "workers: 0 or more")
        require(self.image_size >= 14 and self.image_size % 14 == 0, "image_size: a multiple of 14 (DINOv2 patches)")

    def _pick(self, cls: type) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(cls)}

    @property
    def detector(self) -> DetectorConfig:
        return DetectorConfig(**self._pick(DetectorConfig))

    @property
    def data(self) -> DataConfig:
        return DataConfig(**self._pick(DataConfig))

    @property
    def distillation(self) -> DistillConfig:
        return DistillConfig(**self._pick(DistillConfig))

    @property
    def augmentation(self) -> AugmentConfig:
        return AugmentConfig(**self._pick(AugmentConfig))


# Settings a resumed run may change: how long and where it runs, not what it learns.
RESUMABLE = ("epochs", "patience", "workers", "device", "progress", "fakes")  # fakes: checked as resolved


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_video_auc: float
    epochs_run: int
    stopped_early: bool
    trainable_params: int

    def summary(self) -> str:
        return (
            f"trained {self.epochs_run} epochs ({self.trainable_params:,} trainable parameters); "
            f"best epoch {self.best_epoch} with validation video AUC {self.best_video_auc:.4f}"
            f"{' (stopped early)' if self.stopped_early else ''}; detector in {self.run_dir / 'best'}"
        )



@contextlib.contextmanager
def checkpoint_dir(run_dir: Path, name: str) -> Iterator[Path]:
    """Yield a temporary folder beside ``run_dir/name``; once the block has written it whole, it
    replaces ``run_dir/name``: the old folder is renamed aside, the new one renamed in, the old
    one removed. A failure before that leaves the old folder as it was and no temporary one; a
    kill leaves at most a temporary or aside folder that :func:`restore_checkpoints` settles."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.new-", dir=run_dir))
    try:
        yield tmp
        publish(tmp)  # mkdtemp makes it private
        dest, aside = run_dir / name, None
        if dest.exists():
            aside = run_dir / f".{name}.old-{secrets.token_hex(4)}"
            os.rename(dest, aside)
        try:
            os.rename(tmp, dest)
        except BaseException:
            if aside is not None:
                os.rename(aside, dest)
            raise
        if aside is not None:
            shutil.rmtree(aside)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def restore_checkpoints(run_dir: str | Path) -> None:
    """Settle what a kill inside :func:`checkpoint_dir` left: a checkpoint renamed aside with no
    replacement in place is renamed back (it is whole); half-written and superseded folders go."""
    run_dir = Path(run_dir)
    for name in CHECKPOINTS:
        dest = run_dir / name
        aside = sorted(run_dir.glob(f".{name}.old-*"))
        if not dest.exists() and aside:
            os.rename(aside[0], dest)
            log.warning("%s: restored %s/ that an interrupted write had moved aside", run_dir, name)
        for p in [*run_dir.glob(f".{name}.old-*"), *run_dir.glob(f".{name}.new-*")]:
            shutil.rmtree(p, ignore_errors=True)


def train_status(run_dir: str | Path, cfg: TrainConfig) -> str:
    """``new`` (nothing there), ``partial`` (resumable) or ``done`` (all epochs run or stopped early)."""
    restore_checkpoints(run_dir)
    state_path = Path(run_dir) / "last" / "trainer_state.pt"
    if not state_path.is_file():
        return "new"
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    finished = state["epoch"] + 1 >= cfg.epochs or state["stale"] >= cfg.patience
    return "done" if finished and (Path(run_dir) / "best").is_dir() else "partial"


def saved_config(run_dir: str | Path) -> TrainConfig:
    """The settings a run directory was trained with (its ``config.yaml``)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"--resume: {run_dir} has no config.yaml: nothing to resume")
    return TrainConfig.from_saved(load_yaml(path))


def check_resume(run_dir: Path, cfg: TrainConfig) -> None:
    """Refuse a resume whose settings differ from the run's in anything but :data:`RESUMABLE`."""
    state = run_dir / "last" / "trainer_state.pt"
    if not state.is_file():
        raise ConfigError(f"--resume: nothing to resume in {run_dir} (no last/trainer_state.pt)")
    saved = saved_config(run_dir)
    diff = {f.name: (getattr(saved, f.name), getattr(cfg, f.name)) for f in dataclasses.fields(TrainConfig)
            if f.name not in RESUMABLE and getattr(saved, f.name) != getattr(cfg, f.name)}
    if diff:
        text = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(diff.items()))
        raise ConfigError(f"--resume: {run_dir} was trained with other settings ({text}); only "
                          f"{', '.join(RESUMABLE)} may change on resume. Nothing was changed; train the "
                          "new settings into another run directory")


def check_split(recorded: str | None, current: str, what: str, allow: bool) -> None:
    """Refuse to go on with ``what`` (a detector or run trained on the split whose
    :func:`~truthinmotion.data.index.manifest_hash` is ``recorded``) against the split ``current``,
    unless ``allow``: a re-index that moves videos between train, val and test would test a
    detector on videos it trained on."""
    if recorded is None:
        log.warning("%s records no split (trained before splits were recorded): not checked", what)
        return
    if recorded == current:
        return
    text = (f"{what} was trained on another split of its work directory (manifest hash {recorded}, now {current}): "
            "it was re-indexed with other videos or settings, so videos it trained on may now be in val or test")
    if not allow:
        raise ConfigError(f"{text}. Nothing was done: re-index as before, train anew, or pass "
                          "--allow-split-change to go on with the new split")
    log.warning("%s; going on (--allow-split-change)", text)
