"""Evaluation of a trained detector: frame- and video-level metrics, per method, with a report.

Video scores aggregate frame probabilities (``mean`` by default). Accuracy is given at 0.5 and at
the threshold chosen on validation videos for that aggregation during training (frames: at the
threshold chosen on validation frames). Video probabilities are calibrated
(:mod:`truthinmotion.models.calibration`); expected calibration error and Brier score are reported
before and after, with a reliability diagram. ``predictions.csv`` holds every scored point. Per-method rows pair every real video
of the split with the fakes of one method (the usual FaceForensics++ breakdown). Evaluating on
another indexed dataset (``workdir``) is cross-dataset evaluation; its features must have been
computed with the settings the detector was trained on, which is checked. On its own work
directory, a detector is evaluated only on the split it was trained with (its manifest hash).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from ..models.calibration import reliability_bins, brier, expected_calibration_error
from ..core.config import Settings, require
from ..core.errors import ConfigError
from ..data.splits import SPLITS
from ..training.dataset import VideoDataset, collate
from ..core.io import WorkDir, atomic_write_text, load_npz
from ..core.metrics import AGGREGATIONS, binary_metrics, video_level
from .error_analysis import error_analysis
from ..models.loading import inference_autocast, load_detector
from ..training.loop import predict
from ..reports.plots import figure, save_figure
from ..data.index import manifest_hash
from ..data.pseudo import is_pseudo
from ..training.runs import check_split
from ..core.io import path_key
from ..backends.weights import report_folder_for, resolve_folder

__all__ = ["EvalResult", "EvaluateConfig", "evaluate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateConfig(Settings):
    """What ``tim evaluate`` measures: the section ``evaluate`` of a settings file."""

    split: str = "test"
    aggregation: str = "mean"  # video score from frame probabilities
    batch_videos: int = 4
    workers: int = 0  # DataLoader processes

    def check(self) -> None:
        require(self.split in SPLITS, f"split: expected one of {', '.join(SPLITS)}, got {self.split!r}")
        require(self.aggregation in AGGREGATIONS,
                f"aggregation: expected one of {', '.join(AGGREGATIONS)}, got {self.aggregation!r}")
        require(self.batch_videos >= 1, f"batch_videos: expected 1 or more, got {self.batch_videos}")
        require(self.workers >= 0, f"workers: expected 0 or more, got {self.workers}")


@dataclass
class EvalResult:
    out_dir: Path
    metrics: dict[str, Any]

    def summary(self) -> str:
        o, c = self.metrics["overall"], self.metrics["calibration"]
        return (
            f"{self.metrics['split']} split of {self.metrics['workdir']}: {o['video']['count']} videos, "
            f"video AUC {o['video']['auc']:.4f}, AP {o['video']['ap']:.4f}, EER {o['video']['eer']:.4f}, "
            f"accuracy {o['video']['acc@thr']:.4f} at threshold {self.metrics['threshold']:.3f}; "
            f"frame AUC {o['frame']['auc']:.4f}; calibration error (ECE) {_fmt(c['ece_before'])} -> "
            f"{_fmt(c['ece_after'])} ({_chosen(c)})\nreport: {self.out_dir / 'report.md'}"
        )


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.4f}"


def _plots(out: Path, vlabels: np.ndarray, vscores: np.ndarray, title: str) -> list[str]:
    from sklearn.metrics import roc_curve

    names = []
    if len(np.unique(vlabels)) == 2:
        fpr, tpr, _ = roc_curve(vlabels, vscores)
        fig, ax = figure(4.5, 4.5)
        ax.plot(fpr, tpr, lw=2)
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, videos ({title})")
        save_figure(fig, out / "roc.png")
        names.append("roc.png")
    fig, ax = figure(5, 3.5)
    bins = np.linspace(0, 1, 21)
    for lab, name in ((0, "real"), (1, "fake")):
        ax.hist(vscores[vlabels == lab], bins=bins, alpha=0.6, label=name)
    ax.set(xlabel="video probability of fake", ylabel="videos", title=f"Scores ({title})")
    ax.legend()
    save_figure(fig, out / "scores.png")
    names.append("scores.png")
    return names


def _reliability(out: Path, labels: np.ndarray, before: np.ndarray, after: np.ndarray, bins: int = 15) -> str:
    """Reliability diagram: fake rate against mean probability per bin, before and after calibration."""
    fig, ax = figure(4.5, 4.5)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect")
    for probs, name in ((before, "score (uncalibrated)"), (after, "calibrated probability")):
        per_bin = reliability_bins(labels, probs, bins)
        ax.plot(per_bin[:, 0], per_bin[:, 1], "o-", label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability of fake", ylabel="fraction fake",
           title=f"Reliability, videos ({bins} bins)")
    ax.legend(fontsize=7, loc="upper left")
    save_figure(fig, out / "reliability.png")
    return "reliability.png"


def _write_predictions(path: Path, work: Path, ds: VideoDataset, pred: dict[str, np.ndarray],
                       video_prob: dict[str, float], split: str) -> None:
    """One row per scored time point of each face: its frame, score, its video's probability and
    true label."""
    wd = WorkDir(work)
    frames = {v: load_npz(wd.faces(v), ("frame_index",))[0]["frame_index"] for v in video_prob}
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["video_id", "track", "frame_index", "score", "probability", "label", "split"])
    for i, point, score in zip(pred["video"], pred["point"], pred["prob"]):
        item = ds.videos[i]
        w.writerow([item.video_id, item.track, int(frames[item.video_id][point]), f"{score:.6f}",
                    f"{video_prob[item.video_id]:.6f}", item.label, split])
    atomic_write_text(path, buf.getvalue())


def evaluate(
    run_dir: str | Path,
    split: str = EvaluateConfig.split,
    workdir: str | Path | None = None,
    aggregation: str = EvaluateConfig.aggregation,
    device: str = "cpu",
    out_dir: str | Path | None = None,
    batch_videos: int = EvaluateConfig.batch_videos,
    workers: int = EvaluateConfig.workers,
    progress: bool = True,
    allow_split_change: bool = False,
) -> EvalResult:
    """Score ``split`` of ``workdir`` (default: the training work directory) and write a report.
    The training work directory re-indexed into another split is refused unless
    ``allow_split_change``."""
    report_folder_for(run_dir, out_dir, "the report")
    run_dir = resolve_folder(run_dir, what="detector")  # a hub id: its snapshot, before any video
    model = load_detector(run_dir, device)
    record = model.record
    work, own = record.provenance.work_directory(workdir)
    cross = not own
    split_id = manifest_hash(work)
    if not cross:
        check_split(record.provenance.manifest_hash, split_id, f"the detector of {run_dir}", allow_split_change)
    out = Path(out_dir) if out_dir else (run_dir / f"eval-{path_key(work)}-{split}" if cross else run_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = VideoDataset(work, split, model.cfg.modality, record.data, model.preprocess, train=False,
                      expect=record.feature_expect())
    if len(ds) == 0:
        raise ConfigError(f"no {split} videos with {model.cfg.modality} artifacts in {work}")
    loader = DataLoader(ds, batch_size=batch_videos, shuffle=False, collate_fn=collate, num_workers=workers)
    pred = predict(model, loader, device, inference_autocast(model), progress=progress, desc=f"evaluate {split}")
    rule = record.rule(aggregation)
    threshold = rule.threshold
    frame_threshold = float(record.verdict.get("frame_threshold", threshold))
    # every face is scored; a video's score is its highest face's
    ids, vscores, vlabels = video_level(pred["prob"], pred["video"], pred["label"], aggregation,
                                        groups=ds.video_ids(pred["video"]))
    vprobs = rule.calibration(vscores)
    info = {item.video_id: item for item in ds.videos if item.track == 0}
    faces = Counter(item.video_id for item in ds.videos)  # one pass, not one per video
    methods = np.array([info[v].method for v in ids])
    frame_methods = np.array([ds.videos[i].method for i in pred["video"]])

    def block(vmask: np.ndarray, fmask: np.ndarray) -> dict[str, Any]:
        return {"video": binary_metrics(vlabels[vmask], vscores[vmask], threshold),
                "frame": binary_metrics(pred["label"][fmask], pred["prob"][fmask], frame_threshold)}

    real_v, real_f = vlabels == 0, pred["label"] == 0
    # The headline figures are over the fakes the detector was trained on (dataset, pseudo or
    # both): twins made after it was trained, or dataset fakes for a pseudo-fake detector, have
    # rows of their own in per_method and do not move it.
    own = record.provenance.fakes if record.provenance.fakes in ("dataset", "pseudo") else "all"

    def own_fakes(labels: np.ndarray, meths: np.ndarray) -> np.ndarray:
        if own == "all":
            return np.ones(len(labels), bool)
        pseudo = np.array([is_pseudo({"method": m}) for m in meths], bool)
        return (labels == 0) | (pseudo == (own == "pseudo"))

    own_v, own_f = own_fakes(vlabels, methods), own_fakes(pred["label"], frame_methods)
    per_method = {
        m: block(real_v | (methods == m), real_f | (frame_methods == m))
        for m in sorted(set(methods[vlabels == 1]))
    }
    weights = record.provenance.backbone_weights or {}
    metrics = {
        "run": str(run_dir.resolve()),
        "workdir": str(work.resolve()),
        "cross_dataset": cross,
        "split": split,
        "manifest_hash": split_id,
        "trained_manifest_hash": record.provenance.manifest_hash,
        "aggregation": aggregation,
        "threshold": threshold,
        "frame_threshold": frame_threshold,
        "calibration": {
            **rule.calibration.record(),
            "probability_threshold": rule.probability_threshold,
            "ece_before": expected_calibration_error(vlabels[own_v], vscores[own_v]),
            "ece_after": expected_calibration_error(vlabels[own_v], vprobs[own_v]),
            "brier_before": brier(vlabels[own_v], vscores[own_v]),
            "brier_after": brier(vlabels[own_v], vprobs[own_v]),
        },
        "modality": model.cfg.modality,
        "backbone": model.cfg.backbone,
        "backbone_weights": weights,
        "fakes": record.provenance.fakes,
        "fake_methods": list(record.provenance.fake_methods or ()),
        "features": record.feature_expect(),
        "inference": {k: v for k, v in record.inference.to_dict().items() if v is not None},
        "left_out": ds.missing,
        "overall": block(own_v, own_f),
        "overall_fakes": own,  # which fakes the overall and calibration figures hold
        "per_method": per_method,
        "videos": [{"video_id": str(v), "method": info[v].method, "label": int(info[v].label),
                    "faces": int(faces[v]), "score": float(s), "probability": float(q)}
                   for v, s, q in zip(ids, vscores, vprobs)],
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    _write_predictions(out / "predictions.csv", work, ds, pred, dict(zip(ids.tolist(), vprobs.tolist())), split)
    plots = _plots(out, vlabels[own_v], vscores[own_v], f"{work.name}/{split}")
    plots.append(_reliability(out, vlabels[own_v], vscores[own_v], vprobs[own_v]))
    errors = error_analysis(out, model, ds, pred, metrics["videos"], threshold,
                            (ds.faces_config or {}).get("box_scale", 1.3))
    atomic_write_text(out / "report.md", _report(metrics, plots) + "\n".join(errors) + "\n")
    return EvalResult(out, metrics)


def _describe_feature(record: dict[str, Any]) -> str:
    """``farneback (opencv)``, ``depth-anything/... (pretrained)``: what made a feature, from what."""
    weights = record.get("weights")
    source = weights.get("init", "?") if isinstance(weights, dict) else weights
    return f"{record.get('method') or record.get('model')} ({source})"


def _chosen(c: dict[str, Any]) -> str:
    """``platt: <why>``: the calibration the detector holds and why training chose it."""
    return f"{c['method']}: {c['reason']}" if c.get("reason") else c["method"]


def _calibration_line(c: dict[str, Any]) -> str:
    if c["method"] == "identity":
        why = c.get("reason") or "the detector holds no calibration"
        head = f"- Probability: **not calibrated**, scores are reported as they are ({why})"
    else:
        head = (f"- Probability: Platt scaling fitted on validation videos, sigmoid({c['a']:.3f} logit(score) "
                f"{c['b']:+.3f}); the threshold is {c['probability_threshold']:.3f} in probability")
        if c.get("reason"):
            head += f". Chosen by {c['reason']}"
    return (f"{head}. Expected calibration error (15 bins) {_fmt(c['ece_before'])} before, "
            f"{_fmt(c['ece_after'])} after; Brier score {_fmt(c['brier_before'])} before, {_fmt(c['brier_after'])} after")


def _describe_fakes(fakes: str | None, methods: list[str]) -> str:
    """``pseudo fakes (pseudo-blend, pseudo-timing)``: what a detector's training fakes were."""
    if fakes is None:
        return "the dataset's fakes (trained before --fakes was recorded)"
    what = {"dataset": "the dataset's own fakes", "pseudo": "**pseudo-fakes** made from real videos (tim synth)",
            "both": "the dataset's fakes **and** pseudo-fakes (tim synth)"}[fakes]
    return f"{what}: {', '.join(methods) or 'none'}"


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
    lines.append(f"- Trained on: real videos and {_describe_fakes(m.get('fakes'), m.get('fake_methods') or [])}")
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
        f"(chosen on validation videos for the {m['aggregation']}); frames: threshold {m['frame_threshold']:.3f}",
        _calibration_line(m["calibration"]),
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
