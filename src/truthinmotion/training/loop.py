"""The pieces of a training run: one epoch, validation (sharded under DDP), prediction over a
loader, the loss and the learning-rate schedule, and what ``last/`` holds for ``--resume``.
:mod:`.train` puts them together.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from ..backends.runtime import autocast_context
from ..core.metrics import binary_metrics, video_level, youden_threshold
from ..models.detector import Detector
from .dataset import VideoDataset, collate
from .distiller import Distiller
from .runs import TrainConfig, checkpoint_dir

__all__ = ["append_csv", "lr_lambda", "predict", "save_last", "seed_everything", "train_one_epoch", "validate"]


def train_one_epoch(
    net: torch.nn.Module, model: Detector, loader: DataLoader, opt: Any, sched: Any, scaler: Any,
    params: list[torch.nn.Parameter], cfg: TrainConfig, pos_weight: torch.Tensor, distiller: Distiller | None,
    desc: str = "epoch",
) -> tuple[float, float]:
    """One pass over ``loader`` (``net`` is ``model`` or its DDP wrapper): (mean loss, mean
    distillation KL) per picture."""
    net.train()
    total, count, kl_total = 0.0, 0, 0.0
    bar = tqdm(loader, desc=desc, disable=not cfg.progress, leave=False)
    for batch in bar:
        inputs = {m: x.to(cfg.device, non_blocking=True) for m, x in batch["inputs"].items()}
        label = batch["label"].to(cfg.device)
        with autocast_context(cfg.device, cfg.autocast):
            out = net(inputs)
        loss = _loss(model, out, label, pos_weight)
        if distiller is not None:
            extra_loss, kl = distiller.loss(inputs, out, autocast_context(cfg.device, cfg.autocast))
            kl_total += kl * len(label)
            loss = loss + extra_loss
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        sched.step()
        total += loss.item() * len(label)
        count += len(label)
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1), kl_total / max(count, 1)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def predict(
    model: Any, loader: DataLoader, device: str, amp: str = "auto", progress: bool = False, desc: str = "eval"
) -> dict[str, np.ndarray]:
    """Frame scores over a loader: ``prob``, ``logit``, ``label``, ``video`` (the dataset item: a
    face of a video), ``track``, ``point`` arrays [N]."""
    model.eval()
    out: dict[str, list] = {"prob": [], "label": [], "video": [], "track": [], "point": [], "logit": []}
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        inputs = {m: x.to(device, non_blocking=True) for m, x in batch["inputs"].items()}
        with autocast_context(device, amp):
            logit = model(inputs).logit.float()
        out["logit"].append(logit.cpu().numpy())
        out["prob"].append(torch.sigmoid(logit).cpu().numpy())
        out["label"].append(batch["label"].numpy())
        out["video"].append(batch["video"].numpy())
        out["track"].append(batch["track"].numpy())
        out["point"].append(batch["points"].numpy())
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


def _loss(model: Detector, out, label: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    if model.cfg.fusion == "score":  # each modality's head learns on its own
        return torch.stack([bce(p.float(), label, pos_weight=pos_weight) for p in out.parts.unbind(1)]).mean()
    return bce(out.logit.float(), label, pos_weight=pos_weight)


def lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def save_last(run_dir: Path, model: Detector, opt, sched, scaler, epoch: int, best: dict, stale: int,
               distiller: Distiller | None) -> None:
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
             "epoch": epoch, "best": best, "stale": stale, "torch_rng": torch.get_rng_state(),
             "projection": distiller.state_dict() if distiller is not None else None}
    with checkpoint_dir(run_dir, "last") as tmp:
        model.save_pretrained(tmp)
        torch.save(state, tmp / "trainer_state.pt")


def append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)
        f.flush()


def validate(model: Detector, ds: VideoDataset, cfg: TrainConfig, pos_weight, rank: int, world: int
              ) -> tuple[dict, dict[str, np.ndarray]]:
    """(validation metrics, frame predictions); under DDP each rank scores its shard and every
    rank gets all scores."""
    shard = Subset(ds, range(rank, len(ds), world)) if world > 1 else ds
    loader = DataLoader(shard, batch_size=max(1, cfg.batch_size // 2), shuffle=False, collate_fn=collate,
                        num_workers=cfg.workers)
    pred = predict(model, loader, cfg.device, cfg.autocast, cfg.progress, desc="validate")
    if world > 1:
        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, pred)
        pred = {k: np.concatenate([p[k] for p in parts]) for k in pred}
    label = torch.from_numpy(pred["label"]).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(pred["logit"]), label, pos_weight=pos_weight.cpu()
    ).item()
    frame = binary_metrics(pred["label"], pred["prob"])
    groups = ds.video_ids(pred["video"])
    _, vscore, vlabel = video_level(pred["prob"], pred["video"], pred["label"], groups=groups)
    video = binary_metrics(vlabel, vscore)
    return {"loss": loss, "frame_auc": frame["auc"], "video_auc": video["auc"],
            "video_acc": video["acc@0.5"], "threshold": youden_threshold(vlabel, vscore)}, {**pred, "group": groups}


