"""Training: best-on-validation detectors, reproducible from their run directory.

AdamW with linear warm-up and cosine decay, gradient clipping, a seed for everything random,
autocast (bf16 by default) on GPU. Each epoch is validated (loss, frame AUC, video AUC); the
best epoch by video AUC is kept in ``best/`` with the threshold that maximises balanced accuracy
on validation videos; ``last/`` holds what ``--resume`` needs; training stops early after
``patience`` epochs without improvement. Class imbalance (FF++ has 1 real for 4+ fakes) is
handled in the loss: positives are weighted by real/fake (``balance: loss``), so both classes
weigh the same in the gradient.

Multi-GPU: the same command under ``torchrun --nproc_per_node N`` trains with DDP (NCCL on GPU,
gloo on CPU); rank 0 validates and writes.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import platform
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .config import ConfigError, Settings, require, save_yaml
from .data import DataConfig, VideoDataset, collate
from .io import atomic_path
from .metrics import binary_metrics, video_level, youden_threshold
from .models import Detector, DetectorConfig, Preprocess

__all__ = [
    "TrainConfig", "TrainResult", "autocast_context", "distill_loss", "env_info", "logit_distill_loss",
    "predict", "train", "train_status",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig(Settings):
    # model (see DetectorConfig)
    backbone: str = "dinov2-small"
    modality: str = "flow"
    fusion: str = "concat"
    shared_encoder: bool = False
    train_blocks: int = 1  # last N blocks + final norm; 0: head only; -1: all
    head_hidden: int = 256
    dropout: float = 0.3
    image_size: int = 224  # side of the pictures fed to the backbone (a multiple of 14)
    init: str = "pretrained"  # pretrained DINOv2 weights, or random (tests, demo)
    backbone_path: str | None = None  # a local DINOv2 directory instead of the hub id
    # data (see DataConfig)
    flow: str = "farneback"
    depth: str = "depth-anything-v2-small"
    flow_max: float | None = None
    train_points: int = 8
    flip: float = 0.5
    # optimisation
    epochs: int = 10
    batch_size: int = 8  # videos per step; each gives train_points pictures
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    patience: int = 3  # epochs without a better validation video AUC before stopping
    balance: str = "loss"  # loss: weight fakes by real/fake; none
    seed: int = 0
    workers: int = 2  # DataLoader processes
    device: str = "cpu"
    autocast: str = "auto"  # auto: bf16 on CUDA, off on CPU; bf16; fp16; off
    progress: bool = True
    # distillation (used when a teacher is given: tim compress --method distill)
    distill_alpha: float = 1.0  # weight of KL(softmax(student embedding) || softmax(P teacher embedding))
    distill_logit: float = 0.0  # weight of logit distillation (Hinton et al. 2015), 0: off
    distill_temperature: float = 2.0  # temperature T of the logit distillation (loss scaled by T^2)

    def check(self) -> None:
        DetectorConfig.from_dict(self._pick(DetectorConfig))
        DataConfig.from_dict(self._pick(DataConfig))
        require(self.init in ("pretrained", "random"), "init: pretrained or random")
        require(self.epochs >= 1 and self.batch_size >= 1, "epochs and batch_size: at least 1")
        require(self.lr > 0 and self.weight_decay >= 0, "lr > 0, weight_decay >= 0")
        require(self.warmup_epochs >= 0 and self.grad_clip > 0, "warmup_epochs >= 0, grad_clip > 0")
        require(self.patience >= 1, "patience: at least 1")
        require(self.balance in ("loss", "none"), "balance: loss or none")
        require(self.autocast in ("auto", "bf16", "fp16", "off"), "autocast: auto, bf16, fp16 or off")
        require(self.workers >= 0, "workers: 0 or more")
        require(self.image_size >= 14 and self.image_size % 14 == 0, "image_size: a multiple of 14 (DINOv2 patches)")
        require(self.distill_alpha >= 0 and self.distill_logit >= 0, "distill_alpha, distill_logit: 0 or more")
        require(self.distill_temperature > 0, "distill_temperature: positive")

    def _pick(self, cls: type[Settings]) -> dict[str, Any]:
        """This config's values for the fields of ``cls`` (DetectorConfig, DataConfig)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(cls)}

    @property
    def detector(self) -> DetectorConfig:
        return DetectorConfig.from_dict(self._pick(DetectorConfig))

    @property
    def data(self) -> DataConfig:
        return DataConfig.from_dict(self._pick(DataConfig))


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


# ---------------------------------------------------------------- helpers


def autocast_context(device: str, mode: str = "auto"):
    """Mixed precision: ``auto`` is bf16 autocast on GPU and off on CPU; ``bf16``/``fp16`` ask for
    it on any device (CPU autocast supports bf16); ``off`` is ``nullcontext()``."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if mode == "off" or (mode == "auto" and kind == "cpu"):
        return nullcontext()
    dtype = torch.float16 if mode == "fp16" else torch.bfloat16
    return torch.autocast(kind, dtype=dtype)


def env_info(device: str) -> dict[str, Any]:
    import transformers

    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        ).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        rev = "unknown"
    from . import __version__

    return {
        "truthinmotion": __version__,
        "git_revision": rev,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _seed(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def predict(
    model: Detector, loader: DataLoader, device: str, amp: str = "auto", progress: bool = False, desc: str = "eval"
) -> dict[str, np.ndarray]:
    """Frame probabilities over a loader: ``prob``, ``label``, ``video``, ``point`` arrays [N]."""
    model.eval()
    out: dict[str, list] = {"prob": [], "label": [], "video": [], "point": [], "logit": []}
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        inputs = {m: x.to(device, non_blocking=True) for m, x in batch["inputs"].items()}
        with autocast_context(device, amp):
            logit = model(inputs).logit.float()
        out["logit"].append(logit.cpu().numpy())
        out["prob"].append(torch.sigmoid(logit).cpu().numpy())
        out["label"].append(batch["label"].numpy())
        out["video"].append(batch["video"].numpy())
        out["point"].append(batch["points"].numpy())
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


def _loss(model: Detector, out, label: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    if model.cfg.fusion == "score":  # each modality's head learns on its own
        return torch.stack([bce(p.float(), label, pos_weight=pos_weight) for p in out.parts.unbind(1)]).mean()
    return bce(out.logit.float(), label, pos_weight=pos_weight)


def distill_loss(
    student: torch.Tensor, teacher: torch.Tensor, proj: torch.nn.Module
) -> torch.Tensor:
    """KL(softmax(student) || softmax(P teacher)) over embedding dimensions, mean over the batch.

    The study's formulation: the teacher's embedding ``[B, Dt]`` is projected by a learned linear
    map ``P`` to the student's width ``[B, Ds]``; both become distributions by a softmax.
    """
    log_s = torch.log_softmax(student.float(), dim=-1)
    log_t = torch.log_softmax(proj(teacher.float()), dim=-1)
    return (log_s.exp() * (log_s - log_t)).sum(-1).mean()


def logit_distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Bernoulli KL(teacher || student) of the fake probability at temperature T, times T^2."""
    t = torch.sigmoid(teacher.float() / temperature).clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid(student.float() / temperature).clamp(1e-6, 1 - 1e-6)
    kl = t * (t.log() - s.log()) + (1 - t) * ((1 - t).log() - (1 - s).log())
    return kl.mean() * temperature**2


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def _unwrap(model: torch.nn.Module) -> Detector:
    return model.module if hasattr(model, "module") else model  # type: ignore[return-value]


def _save_last(run_dir: Path, model: Detector, opt, sched, epoch: int, best: dict, stale: int, proj=None) -> None:
    model.save_pretrained(run_dir / "last")
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
             "best": best, "stale": stale, "torch_rng": torch.get_rng_state(),
             "projection": proj.state_dict() if proj is not None else None}
    with atomic_path(run_dir / "last" / "trainer_state.pt", suffix=".pt") as tmp:
        torch.save(state, tmp)


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)
        f.flush()


def _evaluate_val(model: Detector, loader: DataLoader, ds: VideoDataset, cfg: TrainConfig, pos_weight) -> dict:
    pred = predict(model, loader, cfg.device, cfg.autocast, cfg.progress, desc="validate")
    label = torch.from_numpy(pred["label"]).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(pred["logit"]), label, pos_weight=pos_weight.cpu()
    ).item()
    frame = binary_metrics(pred["label"], pred["prob"])
    _, vscore, vlabel = video_level(pred["prob"], pred["video"], pred["label"])
    video = binary_metrics(vlabel, vscore)
    return {"loss": loss, "frame_auc": frame["auc"], "video_auc": video["auc"],
            "video_acc": video["acc@0.5"], "threshold": youden_threshold(vlabel, vscore)}


def train_status(run_dir: str | Path, cfg: TrainConfig) -> str:
    """``new`` (nothing there), ``partial`` (resumable) or ``done`` (all epochs run or stopped early)."""
    state_path = Path(run_dir) / "last" / "trainer_state.pt"
    if not state_path.is_file():
        return "new"
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    finished = state["epoch"] + 1 >= cfg.epochs or state["stale"] >= cfg.patience
    return "done" if finished and (Path(run_dir) / "best").is_dir() else "partial"


# ---------------------------------------------------------------- main loop


def train(
    workdir: str | Path, cfg: TrainConfig, run_dir: str | Path, resume: bool = False,
    teacher: Detector | None = None,
) -> TrainResult:
    """Train a detector on ``WORKDIR``'s train split, validate on val, write ``run_dir``.

    With a ``teacher``, the student also learns to match the teacher's embedding (distillation).
    """
    run_dir = Path(run_dir)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = 0, 1
    device = cfg.device
    if distributed:
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
    cfg = cfg.updated({"device": device, "progress": cfg.progress and rank == 0})
    main_proc = rank == 0
    if (run_dir / "best").exists() and not resume and main_proc:
        raise ConfigError(f"{run_dir} already holds a trained detector: choose another -o or pass --resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "train.log") if main_proc else None
    pkg_log = logging.getLogger("truthinmotion")
    if handler:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        pkg_log.addHandler(handler)
        pkg_log.setLevel(min(pkg_log.level or logging.INFO, logging.INFO))
    try:
        return _train(Path(workdir), cfg, run_dir, resume, distributed, rank, world, teacher)
    finally:
        if handler:
            pkg_log.removeHandler(handler)
            handler.close()
        if distributed:
            dist.destroy_process_group()


def _train(
    workdir: Path, cfg: TrainConfig, run_dir: Path, resume: bool, distributed: bool, rank: int, world: int,
    teacher: Detector | None,
) -> TrainResult:
    main_proc = rank == 0
    _seed(cfg.seed + rank)
    det_cfg, data_cfg = cfg.detector, cfg.data
    if main_proc:
        save_yaml(cfg.to_dict(), run_dir / "config.yaml")
        (run_dir / "env.json").write_text(json.dumps(env_info(cfg.device), indent=2))
    pre = Preprocess(size=cfg.image_size)
    train_ds = VideoDataset(workdir, "train", cfg.modality, data_cfg, pre, train=True, seed=cfg.seed)
    val_ds = VideoDataset(workdir, "val", cfg.modality, data_cfg, pre, train=False)
    for name, ds in (("train", train_ds), ("val", val_ds)):
        if len(ds) == 0:
            raise ConfigError(f"no {name} videos with {cfg.modality} artifacts in {workdir}: run tim faces/features first")
    features = {m: train_ds.feature_meta.get(m, {}) for m in det_cfg.modalities if m != "rgb"}
    extra = {"preprocess": dataclasses.asdict(pre), "features": features, "data": data_cfg.to_dict(),
             "faces": train_ds.faces_config or {}, "workdir": str(workdir.resolve())}

    model = Detector.build(det_cfg, cfg.init, cfg.backbone_path, extra=extra)
    trainable = model.num_trainable()
    log.info("detector %s on %s: %s trainable of %s parameters", cfg.backbone, cfg.modality,
             f"{trainable:,}", f"{sum(p.numel() for p in model.parameters()):,}")
    model.to(cfg.device)
    labels = train_ds.labels
    n_real, n_fake = int((labels == 0).sum()), int((labels == 1).sum())
    weight = n_real / max(n_fake, 1) if cfg.balance == "loss" and n_real and n_fake else 1.0
    pos_weight = torch.tensor(weight, device=cfg.device)
    log.info("train: %d videos (%d real, %d fake), positive weight %.3f; val: %d videos",
             len(train_ds), n_real, n_fake, weight, len(val_ds))

    sampler = torch.utils.data.DistributedSampler(train_ds, world, rank, seed=cfg.seed) if distributed else None
    gen = torch.Generator().manual_seed(cfg.seed)
    loader_args = {"collate_fn": collate, "num_workers": cfg.workers, "persistent_workers": False,
                   "pin_memory": cfg.device.startswith("cuda")}
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                              generator=gen, drop_last=False, **loader_args)
    val_loader = DataLoader(val_ds, batch_size=max(1, cfg.batch_size // 2), shuffle=False, **loader_args)

    params = [p for p in model.parameters() if p.requires_grad]
    proj = None
    if teacher is not None:
        if teacher.cfg.modalities != det_cfg.modalities:
            raise ConfigError(f"teacher on {teacher.cfg.modality}, student on {det_cfg.modality}: they must match")
        if teacher.preprocess != pre:
            raise ConfigError(f"teacher expects {teacher.preprocess}, student {pre}: use the same image_size")
        teacher = teacher.to(cfg.device).eval()
        for p in teacher.parameters():
            p.requires_grad = False
        proj = torch.nn.Linear(teacher.embed_dim, model.embed_dim).to(cfg.device)
        params += list(proj.parameters())
        model.extra["distilled_from"] = {"teacher": teacher.extra.get("run", "?"), "backbone": teacher.cfg.backbone,
                                         "alpha": cfg.distill_alpha, "logit": cfg.distill_logit,
                                         "temperature": cfg.distill_temperature}
        log.info("distilling %s (embedding %d) into %s (embedding %d)", teacher.cfg.backbone, teacher.embed_dim,
                 cfg.backbone, model.embed_dim)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = len(train_loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(int(cfg.warmup_epochs * steps), cfg.epochs * steps))
    net: torch.nn.Module = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[cfg.device] if cfg.device.startswith("cuda") else None)

    start, best, stale = 0, {"epoch": -1, "video_auc": -math.inf, "loss": math.inf}, 0
    if resume:
        state_path = run_dir / "last" / "trainer_state.pt"
        if not state_path.is_file():
            raise ConfigError(f"--resume: nothing to resume in {run_dir} (no last/trainer_state.pt)")
        last = Detector.from_pretrained(run_dir / "last")
        model.load_state_dict(last.state_dict())
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if proj is not None:
            proj.load_state_dict(state["projection"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        start, best, stale = state["epoch"] + 1, state["best"], state["stale"]
        log.info("resuming after epoch %d (best so far: epoch %d)", state["epoch"], best["epoch"])

    stopped = False
    epoch = start - 1
    for epoch in range(start, cfg.epochs):
        if stale >= cfg.patience:
            stopped = True
            break
        t0 = time.perf_counter()
        train_ds.set_epoch(epoch)
        gen.manual_seed(cfg.seed + epoch)  # the epoch's order depends on (seed, epoch) alone: resumable
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        total, count, kl_total = 0.0, 0, 0.0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress, leave=False)
        for batch in bar:
            inputs = {m: x.to(cfg.device, non_blocking=True) for m, x in batch["inputs"].items()}
            label = batch["label"].to(cfg.device)
            with autocast_context(cfg.device, cfg.autocast):
                out = net(inputs)
            loss = _loss(model, out, label, pos_weight)
            if teacher is not None:
                with torch.no_grad(), autocast_context(cfg.device, cfg.autocast):
                    t_out = teacher(inputs)
                kl = distill_loss(out.embedding, t_out.embedding, proj)
                kl_total += kl.item() * len(label)
                loss = loss + cfg.distill_alpha * kl
                if cfg.distill_logit > 0:
                    loss = loss + cfg.distill_logit * logit_distill_loss(out.logit, t_out.logit, cfg.distill_temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            total += loss.item() * len(label)
            count += len(label)
            bar.set_postfix(loss=f"{total / count:.4f}")
        stop = [False]
        if main_proc:
            val = _evaluate_val(model, val_loader, val_ds, cfg, pos_weight)
            score = val["video_auc"] if not math.isnan(val["video_auc"]) else -val["loss"]
            # Ties in AUC (common on small validation sets) go to the lower validation loss.
            improved = score > best["video_auc"] or (score == best["video_auc"] and val["loss"] < best["loss"])
            if improved:
                best = {"epoch": epoch, "video_auc": score, "loss": val["loss"], "threshold": val["threshold"]}
                model.extra["threshold"] = val["threshold"]
                model.extra["trained"] = {"epoch": epoch + 1, "val": val, "train_videos": len(train_ds)}
                model.save_pretrained(run_dir / "best")
                stale = 0
            else:
                stale += 1
            row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": total / max(count, 1),
                   "val_loss": val["loss"], "val_frame_auc": val["frame_auc"], "val_video_auc": val["video_auc"],
                   "val_video_acc": val["video_acc"], "seconds": time.perf_counter() - t0, "best": improved}
            if teacher is not None:
                row["train_kl"] = kl_total / max(count, 1)
            _append_csv(run_dir / "metrics.csv", row)
            log.info("epoch %d: train loss %.4f, val loss %.4f, frame AUC %.4f, video AUC %.4f%s",
                     epoch + 1, row["train_loss"], val["loss"], val["frame_auc"], val["video_auc"],
                     " (best)" if improved else "")
            _save_last(run_dir, model, opt, sched, epoch, best, stale, proj)
            stop = [stale >= cfg.patience]
        if distributed:
            dist.broadcast_object_list(stop, src=0)
        if stop[0]:
            stopped = epoch + 1 < cfg.epochs
            break
    if best["epoch"] < 0 and main_proc:
        raise ConfigError(f"no epoch was run: {run_dir} already finished {cfg.epochs} epochs")
    return TrainResult(run_dir, best["epoch"] + 1, float(best["video_auc"]), epoch + 1, stopped, trainable)
