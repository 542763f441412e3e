"""Evaluation of a trained detector: frame- and video-level metrics, per method, with a report.

Video scores aggregate frame probabilities (``mean`` by default). Accuracy is given at 0.5 and at
the threshold chosen on validation videos during training. Per-method rows pair every real video
of the split with the fakes of one method (the usual FaceForensics++ breakdown). Evaluating on
another indexed dataset (``workdir``) is cross-dataset evaluation; its features must have been
computed with the settings the detector was trained on, which is checked.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from .config import ConfigError
from .data import DataConfig, VideoDataset, collate
from .io import atomic_write_text
from .metrics import binary_metrics, video_level
from .compress import inference_autocast, load_detector
from .train import predict

__all__ = ["EvalResult", "evaluate"]

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    out_dir: Path
    metrics: dict[str, Any]

    def summary(self) -> str:
        o = self.metrics["overall"]
        return (
            f"{self.metrics['split']} split of {self.metrics['workdir']}: {o['video']['count']} videos, "
            f"video AUC {o['video']['auc']:.4f}, AP {o['video']['ap']:.4f}, EER {o['video']['eer']:.4f}, "
            f"accuracy {o['video']['acc@thr']:.4f} at threshold {self.metrics['threshold']:.3f}; "
            f"frame AUC {o['frame']['auc']:.4f}\nreport: {self.out_dir / 'report.md'}"
        )


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.4f}"


def _plots(out: Path, vlabels: np.ndarray, vscores: np.ndarray, title: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    names = []
    if len(np.unique(vlabels)) == 2:
        fpr, tpr, _ = roc_curve(vlabels, vscores)
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.plot(fpr, tpr, lw=2)
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, videos ({title})")
        fig.tight_layout()
        fig.savefig(out / "roc.png", dpi=100)
        plt.close(fig)
        names.append("roc.png")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.linspace(0, 1, 21)
    for lab, name in ((0, "real"), (1, "fake")):
        ax.hist(vscores[vlabels == lab], bins=bins, alpha=0.6, label=name)
    ax.set(xlabel="video probability of fake", ylabel="videos", title=f"Scores ({title})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=100)
    plt.close(fig)
    names.append("scores.png")
    return names


def evaluate(
    run_dir: str | Path,
    split: str = "test",
    workdir: str | Path | None = None,
    aggregation: str = "mean",
    device: str = "cpu",
    out_dir: str | Path | None = None,
    batch_videos: int = 4,
    workers: int = 0,
    progress: bool = True,
) -> EvalResult:
    """Score ``split`` of ``workdir`` (default: the training work directory) and write a report."""
    run_dir = Path(run_dir)
    model = load_detector(run_dir, device)
    own = Path(model.extra.get("workdir", ""))
    work = Path(workdir) if workdir else own
    if not work.is_dir():
        raise ConfigError(f"work directory {work} not found: pass --workdir")
    cross = own.resolve() != work.resolve()
    out = Path(out_dir) if out_dir else (run_dir / f"eval-{work.name}-{split}" if cross else run_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_cfg = DataConfig.from_dict(model.extra.get("data", {}))
    ds = VideoDataset(work, split, model.cfg.modality, data_cfg, model.preprocess, train=False,
                      expect=model.extra.get("features"))
    if len(ds) == 0:
        raise ConfigError(f"no {split} videos with {model.cfg.modality} artifacts in {work}")
    loader = DataLoader(ds, batch_size=batch_videos, shuffle=False, collate_fn=collate, num_workers=workers)
    pred = predict(model, loader, device, inference_autocast(model), progress=progress, desc=f"evaluate {split}")
    threshold = model.threshold
    ids, vscores, vlabels = video_level(pred["prob"], pred["video"], pred["label"], aggregation)
    methods = np.array([ds.videos[i].method for i in ids])
    frame_methods = np.array([ds.videos[i].method for i in pred["video"]])

    def block(vmask: np.ndarray, fmask: np.ndarray) -> dict[str, Any]:
        return {"video": binary_metrics(vlabels[vmask], vscores[vmask], threshold),
                "frame": binary_metrics(pred["label"][fmask], pred["prob"][fmask], threshold)}

    real_v, real_f = vlabels == 0, pred["label"] == 0
    per_method = {
        m: block(real_v | (methods == m), real_f | (frame_methods == m))
        for m in sorted(set(methods[vlabels == 1]))
    }
    weights = model.extra.get("backbone_weights", {})
    metrics = {
        "run": str(run_dir.resolve()),
        "workdir": str(work.resolve()),
        "cross_dataset": cross,
        "split": split,
        "aggregation": aggregation,
        "threshold": threshold,
        "modality": model.cfg.modality,
        "backbone": model.cfg.backbone,
        "backbone_weights": weights,
        "features": model.extra.get("features", {}),
        "inference": model.extra.get("inference", {"runtime": "torch", "method": "fp32"}),
        "left_out": ds.missing,
        "overall": block(np.ones(len(ids), bool), np.ones(len(pred["prob"]), bool)),
        "per_method": per_method,
        "videos": [{"video_id": ds.videos[i].video_id, "method": ds.videos[i].method,
                    "label": int(ds.videos[i].label), "score": float(s)} for i, s in zip(ids, vscores)],
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    plots = _plots(out, vlabels, vscores, f"{work.name}/{split}")
    atomic_write_text(out / "report.md", _report(metrics, plots))
    return EvalResult(out, metrics)


def _describe_feature(record: dict[str, Any]) -> str:
    """``farneback (opencv)``, ``depth-anything/... (pretrained)``: what made a feature, from what."""
    weights = record.get("weights")
    source = weights.get("init", "?") if isinstance(weights, dict) else weights
    return f"{record.get('method') or record.get('model')} ({source})"


def _report(m: dict[str, Any], plots: list[str]) -> str:
    w = m["backbone_weights"]
    init = w.get("init", "unknown")
    lines = [
        f"# Evaluation: {Path(m['run']).name} on {Path(m['workdir']).name} / {m['split']}",
        "",
        f"- Detector: {m['backbone']} on **{m['modality']}**; backbone weights: **{init}** ({w.get('name', '?')})",
    ]
    if init == "random":
        lines.append("- **The backbone started from random weights**: these figures say the pipeline works, "
                     "not how well a pretrained detector would do.")
    feats = "; ".join(f"{k}: {_describe_feature(v)}" for k, v in m["features"].items()) or "rgb crops only"
    inf = m["inference"]
    variant = inf.get("method", "fp32")
    if "max_prob_diff" in inf:
        variant += f" (max probability difference vs the original: {inf['max_prob_diff']:.2e})"
    lines += [
        f"- Inference: {variant}",
        f"- Features: {feats}",
        f"- Data: {m['workdir']}{' (cross-dataset)' if m['cross_dataset'] else ''}, split `{m['split']}`: "
        f"{m['overall']['video']['real']} real and {m['overall']['video']['fake']} fake videos, "
        f"{m['overall']['frame']['count']} time points; {len(m['left_out'])} videos left out for missing artifacts",
        f"- Video score: {m['aggregation']} of frame probabilities; threshold {m['threshold']:.3f} "
        "(chosen on validation videos)",
        "",
        "| subset | level | count | real | fake | AUC | AP | EER | acc@0.5 | acc@thr |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [("overall", m["overall"])] + [(f"real + {k}", v) for k, v in m["per_method"].items()]
    for name, b in rows:
        for level in ("video", "frame"):
            r = b[level]
            lines.append(f"| {name} | {level} | {r['count']} | {r['real']} | {r['fake']} | {_fmt(r['auc'])} | "
                         f"{_fmt(r['ap'])} | {_fmt(r['eer'])} | {_fmt(r['acc@0.5'])} | {_fmt(r['acc@thr'])} |")
    lines.append("")
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"
