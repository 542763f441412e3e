"""Training: best-on-validation detectors, reproducible from their run directory.

AdamW with linear warm-up and cosine decay, gradient clipping, a seed for everything random,
autocast (bf16 by default) on GPU, a gradient scaler under fp16. Each epoch is validated (loss,
frame AUC, video AUC); the best epoch by video AUC is kept in ``best/`` with the threshold that
maximises balanced accuracy on validation videos; ``last/`` holds what ``--resume`` needs;
training stops early after ``patience`` epochs without improvement. Class imbalance (FF++ has 1
real for 4+ fakes) is handled in the loss: positives are weighted by real/fake
(``balance: loss``), so both classes weigh the same in the gradient.

Multi-GPU: the same command under ``torchrun --nproc_per_node N`` trains with DDP (NCCL on GPU,
gloo on CPU). Every rank checks the settings and data before training, so a refusal stops them
all; validation is sharded across ranks and gathered; rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

from ..models.calibration import fit_verdict_rules
from ..core.errors import ConfigError
from ..core.config import save_yaml
from .dataset import VideoDataset, collate
from .distiller import Distiller
from ..core.io import atomic_write_text
from ..execution.preflight import preflight
from ..models.detector import Detector
from ..models.architecture import Preprocess, check_backbone
from .runs import RESUMABLE, TrainConfig, TrainResult, check_resume, saved_config, train_status
from ..backends.runtime import check_device, env_info, grad_scaler
from ..faces.config import FacesConfig
from ..models.architecture import DetectorConfig
from ..models.inputs import DataConfig
from ..models.record import DetectorRecord, Provenance, features_from_artifacts
from ..data.index import manifest_hash, read_manifest
from ..data.augment import plan_copies
from ..data.pseudo import resolve_fakes
from ..models.detector import read_record
from .runs import check_split, checkpoint_dir, restore_checkpoints
from .loop import append_csv, lr_lambda, predict, save_last, seed_everything, train_one_epoch, validate

__all__ = ["RESUMABLE", "TrainConfig", "TrainResult", "check_resume", "predict", "saved_config", "train", "train_status"]

log = logging.getLogger(__name__)


def _check_split(name: str, ds: VideoDataset, workdir: Path, modality: str) -> None:
    if len(ds) == 0:
        if ds.listed == 0:
            raise ConfigError(f"the manifest of {workdir} has no {name} videos: re-index with ratios that give "
                              f"a {name} split (e.g. --ratios 0.7,0.2,0.1)")
        raise ConfigError(f"none of the {ds.listed} {name} videos has {modality} artifacts with a face in {workdir} "
                          f"(see errors.csv of tim faces/features)")
    labels = ds.labels
    real, fake = int((labels == 0).sum()), int((labels == 1).sum())
    if not real or not fake:
        raise ConfigError(f"the {name} split has {real} real and {fake} fake videos with artifacts: training and "
                          "selecting the best epoch need both classes in train and val. Re-index with other "
                          "--ratios or add videos of the missing class")


def _check_copies(ds: VideoDataset, cfg: TrainConfig, workdir: Path) -> dict[str, Any] | None:
    """The provenance of the perturbed copies a run with ``--augment`` trains on; none made is an
    error that says how to make them (a run asked to augment never quietly trains without)."""
    record = cfg.augmentation.record()
    if record is None:
        return None
    planned = {c["video_id"] for c in plan_copies(read_manifest(workdir), cfg.augmentation)}
    copies = sorted({v.video_id for v in ds.videos} & planned)
    if not copies:
        raise ConfigError(f"--augment {','.join(cfg.augment)}: no perturbed copy of a training video with "
                          f"{cfg.modality} artifacts in {workdir}; tim train --augment and tim run --augment make "
                          "them (see errors.csv, stage augment)")
    return {**record, "videos": len(copies)}


# ---------------------------------------------------------------- main loop


def train(
    workdir: str | Path, cfg: TrainConfig, run_dir: str | Path, resume: bool = False,
    teacher: Detector | None = None, allow_split_change: bool = False,
) -> TrainResult:
    """Train a detector on ``WORKDIR``'s train split, validate on val, write ``run_dir``.

    With a ``teacher``, the student also learns to match the teacher's embedding (see
    :mod:`truthinmotion.training.distill`). A resume goes on with the split the run started on: another
    one (``WORKDIR`` re-indexed since) is refused unless ``allow_split_change``.
    """
    run_dir = Path(run_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        restore_checkpoints(run_dir)
    # Checked on every rank, before any collective: a refusal stops all ranks alike.
    if (run_dir / "best").exists() and not resume:
        if (run_dir / "last" / "trainer_state.pt").is_file():
            raise ConfigError(f"{run_dir} already holds a trained detector: choose another output directory "
                              "(tim run: --name), or continue it (tim train --resume)")
        raise ConfigError(f"{run_dir} already holds a detector that cannot be resumed (no last/trainer_state.pt): "
                          "choose another output directory (tim run: --name) or move it away")
    if cfg.augment and resolve_fakes(read_manifest(workdir), cfg.fakes) == "pseudo":
        raise ConfigError("--augment on a work directory of real videos and pseudo-fakes: every perturbed copy would "
                          "be of a real video, a shortcut a detector learns; give it fakes of a dataset too, or no --augment")
    if resume:
        check_resume(run_dir, cfg)
        last = read_record(run_dir / "last").provenance
        check_split(last.manifest_hash, manifest_hash(workdir), f"--resume: {run_dir}", allow_split_change)
        # --fakes auto is worked out from the manifest: pseudo-fakes made since the run started
        # would change what it trains on halfway
        now = resolve_fakes(read_manifest(workdir), cfg.fakes)
        if last.fakes is not None and now != last.fakes:
            raise ConfigError(f"--resume: {run_dir} started on {last.fakes} fakes and would go on with {now} "
                              f"(the work directory changed since): give --fakes {last.fakes} to go on as it began")
    preflight(models=[lambda: check_backbone(cfg.backbone, init=cfg.init, path=cfg.backbone_path)], outputs=[run_dir])
    # Under torchrun (which sets these), also with one process: the same collectives then run
    # at world size 1, so a single-GPU machine exercises the NCCL path too.
    distributed = "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ
    rank, world = 0, 1
    device = check_device(cfg.device)
    if distributed:
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
    main_proc = rank == 0
    handler = None
    pkg_log = logging.getLogger("truthinmotion")
    old_level = pkg_log.level
    try:
        if main_proc:
            run_dir.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(run_dir / "train.log")
            handler.setLevel(logging.INFO)  # the log file has every epoch; the console keeps its own level
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            pkg_log.addHandler(handler)
            if pkg_log.getEffectiveLevel() > logging.INFO:
                pkg_log.setLevel(logging.INFO)
            if distributed:
                log.info("distributed: %s backend, %d process(es)", dist.get_backend(), world)
        cfg_run = dataclasses.replace(cfg, device=device, progress=cfg.progress and main_proc)
        return _train(Path(workdir), cfg, cfg_run, run_dir, resume, distributed, rank, world, teacher)
    finally:
        if handler:
            pkg_log.removeHandler(handler)
            handler.close()
            pkg_log.setLevel(old_level)
        if distributed:
            dist.destroy_process_group()


def _resume(run_dir: Path, model: Detector, opt: Any, sched: Any, scaler: Any, distiller: Distiller | None
            ) -> tuple[int, dict[str, Any], int]:
    """Load ``last/`` into the model and the training state: (first epoch to run, best, stale)."""
    last = Detector.from_pretrained(run_dir / "last")
    model.load_state_dict(last.state_dict())
    state = torch.load(run_dir / "last" / "trainer_state.pt", map_location="cpu", weights_only=False)
    if distiller is not None:
        distiller.load_state_dict(state["projection"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    log.info("resuming after epoch %d (best so far: epoch %d)", state["epoch"], state["best"]["epoch"])
    return state["epoch"] + 1, state["best"], state["stale"]


def _record(det_cfg: DetectorConfig, pre: Preprocess, data_cfg: DataConfig, ds: VideoDataset,
            workdir: Path, fakes: str, augment: dict[str, Any] | None = None) -> DetectorRecord:
    """What the detector will be trained on: the faces, flow and depth settings as the training
    artifacts recorded them, so ``tim detect`` computes its inputs the same way."""
    flow, depth, flow_weights, depth_weights = features_from_artifacts(det_cfg.modalities, ds.feature_meta, data_cfg)
    faces = FacesConfig.from_dict({k: v for k, v in (ds.faces_config or {}).items()
                                   if k in FacesConfig.__dataclass_fields__})
    return DetectorRecord(
        det_cfg, {}, preprocess=pre, faces=faces, data=data_cfg, flow=flow, depth=depth,
        provenance=Provenance(workdir=str(workdir.resolve()), flow_weights=flow_weights, depth_weights=depth_weights,
                              manifest_hash=manifest_hash(workdir), fakes=fakes,
                              fake_methods=tuple(sorted({v.method for v in ds.videos if v.label == 1})),
                              augment=augment),
    )


def _train(
    workdir: Path, cfg_user: TrainConfig, cfg: TrainConfig, run_dir: Path, resume: bool, distributed: bool,
    rank: int, world: int, teacher: Detector | None,
) -> TrainResult:
    main_proc = rank == 0
    seed_everything(cfg.seed + rank)
    det_cfg, data_cfg = cfg.detector, cfg.data
    pre = Preprocess(size=cfg.image_size)
    fakes = resolve_fakes(read_manifest(workdir), cfg.fakes)
    train_ds = VideoDataset(workdir, "train", cfg.modality, data_cfg, pre, train=True, seed=cfg.seed,
                            faces=cfg.train_faces, fakes=fakes, augment=cfg.augmentation)
    val_ds = VideoDataset(workdir, "val", cfg.modality, data_cfg, pre, train=False, fakes=fakes)
    _check_split("train", train_ds, workdir, cfg.modality)
    _check_split("val", val_ds, workdir, cfg.modality)
    augment = _check_copies(train_ds, cfg, workdir)
    if main_proc:  # written only once the settings and data are known to be usable
        save_yaml(cfg_user.to_dict(), run_dir / "config.yaml")
        atomic_write_text(run_dir / "env.json", json.dumps(env_info(cfg.device), indent=2))
    model = Detector.build(det_cfg, init=cfg.init, backbone_path=cfg.backbone_path,
                           record=_record(det_cfg, pre, data_cfg, train_ds, workdir, fakes, augment))
    trainable = model.num_trainable()
    log.info("fakes: %s (%s)", fakes, ", ".join(model.record.provenance.fake_methods or ()))
    log.info("detector %s on %s: %s trainable of %s parameters", cfg.backbone, cfg.modality,
             f"{trainable:,}", f"{sum(p.numel() for p in model.parameters()):,}")
    model.to(cfg.device)
    labels = train_ds.labels
    n_real, n_fake = int((labels == 0).sum()), int((labels == 1).sum())
    weight = n_real / n_fake if cfg.balance == "loss" else 1.0
    pos_weight = torch.tensor(weight, device=cfg.device)
    log.info("train: %d faces of %d videos (%d real, %d fake faces), positive weight %.3f; val: %d faces of %d videos",
             len(train_ds), len({v.video_id for v in train_ds.videos}), n_real, n_fake, weight,
             len(val_ds), len({v.video_id for v in val_ds.videos}))

    sampler = torch.utils.data.DistributedSampler(train_ds, world, rank, seed=cfg.seed) if distributed else None
    gen = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                              generator=gen, drop_last=False, collate_fn=collate, num_workers=cfg.workers,
                              pin_memory=cfg.device.startswith("cuda"))

    params = [p for p in model.parameters() if p.requires_grad]
    distiller = None
    if teacher is not None:
        distiller = Distiller(teacher, cfg.distillation, cfg.device)
        distiller.check_student(model)
        model.record = model.record.replace(provenance={"distilled_from": distiller.record()})
        log.info("distilling %s (embedding %d) into %s (embedding %d)", teacher.cfg.backbone, teacher.embed_dim,
                 cfg.backbone, model.embed_dim)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = grad_scaler(cfg.device, cfg.autocast)
    steps = len(train_loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(int(cfg.warmup_epochs * steps), cfg.epochs * steps))
    net: torch.nn.Module = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[cfg.device] if cfg.device.startswith("cuda") else None)

    start, best, stale = 0, {"epoch": -1, "video_auc": -math.inf, "loss": math.inf}, 0
    if resume:
        start, best, stale = _resume(run_dir, model, opt, sched, scaler, distiller)
    elif distiller is not None:
        # Every point of every training video, unaugmented: the projection describes the teacher, not a draw.
        plain = VideoDataset(workdir, "train", cfg.modality, data_cfg, pre, train=False, faces=cfg.train_faces,
                             fakes=fakes)
        fit_loader = DataLoader(Subset(plain, range(rank, len(plain), world)), batch_size=cfg.batch_size,
                                collate_fn=collate, num_workers=cfg.workers)
        distiller.fit((b for b in fit_loader), model.embed_dim, distributed)

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
        train_loss, train_kl = train_one_epoch(net, model, train_loader, opt, sched, scaler, params, cfg, pos_weight,
                                               distiller, desc=f"epoch {epoch + 1}/{cfg.epochs}")
        val, val_pred = validate(model, val_ds, cfg, pos_weight, rank, world)  # the same on every rank
        # Ties in AUC (common on small validation sets) go to the lower validation loss.
        improved = val["video_auc"] > best["video_auc"] or (
            val["video_auc"] == best["video_auc"] and val["loss"] < best["loss"])
        if improved:
            best = {"epoch": epoch, "video_auc": val["video_auc"], "loss": val["loss"], "threshold": val["threshold"]}
            stale = 0
        else:
            stale += 1
        if main_proc:
            if improved:
                # thresholds per aggregation and calibrated probabilities, from these val scores
                verdict = fit_verdict_rules(val_pred["prob"], val_pred["video"], val_pred["label"], val_pred["group"])
                trained = {"epoch": epoch + 1, "val": val, "train_videos": len(train_ds)}
                model.record = model.record.replace(verdict=verdict, provenance={"trained": trained})
                with checkpoint_dir(run_dir, "best") as tmp:
                    model.save_pretrained(tmp)
            row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": train_loss,
                   "val_loss": val["loss"], "val_frame_auc": val["frame_auc"], "val_video_auc": val["video_auc"],
                   "val_video_acc": val["video_acc"], "seconds": time.perf_counter() - t0, "best": improved}
            if distiller is not None:
                row["train_kl"] = train_kl
            append_csv(run_dir / "metrics.csv", row)
            log.info("epoch %d: train loss %.4f, val loss %.4f, frame AUC %.4f, video AUC %.4f%s",
                     epoch + 1, row["train_loss"], val["loss"], val["frame_auc"], val["video_auc"],
                     " (best)" if improved else "")
            save_last(run_dir, model, opt, sched, scaler, epoch, best, stale, distiller)
        if stale >= cfg.patience:
            stopped = epoch + 1 < cfg.epochs
            break
    if best["epoch"] < 0:
        raise ConfigError(f"no epoch was run: {run_dir} already finished {cfg.epochs} epochs")
    return TrainResult(run_dir, best["epoch"] + 1, float(best["video_auc"]), epoch + 1, stopped, trainable)
