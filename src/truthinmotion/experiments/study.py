"""``tim study``: the study's whole experiment in one resumable command, with its tables.

Index, faces and features once; a detector per backbone x modality (a *cell*, trained and
evaluated on the test split, and on every ``--cross`` work directory); the compressions asked
for, of every cell (``distill``: the largest backbone into the smallest, per modality); speed
and size of each cell's variants (``tim benchmark``). Every cell lives in its own run directory
under ``OUT/runs`` and is skipped when done, so an interrupted study continues cell by cell.

The tables (``OUT/study.md``, ``study.json``, ``study.png``) take each figure from the cell's
own ``metrics.json`` and add 95% bootstrap intervals over test videos (videos resampled with
replacement, ``bootstrap`` times; frame AUC resamples videos with all their frames), beside the
figures the original study reported where it reported them. With ``robustness`` (``tim study
--robustness vc,gb``), every cell's test videos are also scored perturbed (``tim robustness``,
:mod:`.robustness`; resumed from each cell's ``verdicts.jsonl``), and its table joins the cell's.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..models.calibration import expected_calibration_error
from ..core.errors import ConfigError
from ..core.io import atomic_write_text
from ..core.metrics import binary_metrics
from ..models.architecture import BACKBONES, parse_modalities
from .pipeline import StudyConfig, prepare_work, train_cell
from ..reports.plots import figure, save_figure
from ..data.index import manifest_hash
from ..core.io import path_key
from .compress import COMPRESS_METHODS
from .robustness import RobustnessConfig, markdown_table

__all__ = ["StudyPlan", "bootstrap_interval", "run_full_study"]

log = logging.getLogger(__name__)

CUDA_ONLY = ("fp16", "compile")
# What the original study reported, where it did (test accuracy on FF++; inference speed-up).
REPORTED = {"flow": "about 53% accuracy", "depth": "above 60% accuracy", "fp16": "about 3x faster, equal accuracy",
            "bf16": "about 3x faster, equal accuracy"}


@dataclass(frozen=True)
class StudyPlan:
    backbones: tuple[str, ...] = ("dinov2-small", "dinov2-base")
    modalities: tuple[str, ...] = ("flow", "depth", "flow+depth")
    compress: tuple[str, ...] = ()
    cross: tuple[str, ...] = ()  # other indexed work directories (with features) to test on
    bootstrap: int = 1000
    seed: int = 0
    robustness: tuple[str, ...] = ()  # perturbation codes measured on every cell (tim robustness); none by default
    robustness_levels: tuple[int, ...] = (1, 3, 5)  # their levels

    def check(self, device: str) -> None:
        unknown = [b for b in self.backbones if b not in BACKBONES]
        if unknown:
            raise ConfigError(f"--backbones: {unknown} not among {', '.join(BACKBONES)}")
        for m in self.modalities:
            parse_modalities(m)
        bad = [c for c in self.compress if c not in COMPRESS_METHODS]
        if bad:
            raise ConfigError(f"--compress: {bad} not among {', '.join(COMPRESS_METHODS)}")
        if not device.startswith("cuda") and any(c in CUDA_ONLY for c in self.compress):
            raise ConfigError(f"--compress {', '.join(c for c in self.compress if c in CUDA_ONLY)} runs on CUDA: "
                              "use --device cuda, or bf16 on a CPU")
        if self.robustness:
            RobustnessConfig(perturbations=self.robustness, levels=self.robustness_levels).check()
        if "distill" in self.compress and len(self.backbones) < 2:
            raise ConfigError("--compress distill needs two backbones (the largest teaches the smallest)")
        for w in self.cross:
            if not (Path(w) / "manifest.csv").is_file():
                raise ConfigError(f"--cross {w}: no manifest.csv (index it and compute its features first)")

    def order(self) -> list[str]:
        """Backbones from the smallest to the largest."""
        return sorted(self.backbones, key=lambda b: BACKBONES[b].hidden_size * BACKBONES[b].num_hidden_layers)


@dataclass
class StudyResult:
    out: Path
    lines: list[str] = field(default_factory=list)
    table: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return "\n".join(self.lines)


def cell_name(backbone: str, modality: str, variant: str = "") -> str:
    return f"{backbone}-{modality.replace('+', '-')}" + (f"-{variant}" if variant else "")


def _done(run_dir: Path, out_dir: Path, split_id: str) -> bool:
    """An evaluation at ``out_dir`` newer than the detector it evaluated, of the split whose
    manifest hash is ``split_id``."""
    metrics, best = out_dir / "metrics.json", run_dir / "best" / "config.json"
    return (metrics.is_file() and best.is_file() and metrics.stat().st_mtime_ns >= best.stat().st_mtime_ns
            and json.loads(metrics.read_text()).get("manifest_hash") == split_id)


def run_full_study(
    root: str | Path, out: str | Path, cfg: StudyConfig, plan: StudyPlan = StudyPlan(), *, workers: int = 1,
    device: str = "cpu", progress: bool = True, space_check: bool = True, allow_split_change: bool = False,
) -> StudyResult:
    """Every cell of ``plan`` under ``out``, then the tables; a re-run continues cell by cell. Cells
    trained on another split (the dataset re-indexed differently since) are refused unless
    ``allow_split_change``."""
    from .bench import benchmark_runs
    from .compress import compress
    from ..training.distill import distill, distill_config
    from .evaluate import evaluate
    from .robustness import run_robustness
    from ..training.runs import train_status

    plan.check(device)
    out = Path(out)
    mods = {m for modality in plan.modalities for m in parse_modalities(modality)}
    work, lines = prepare_work(root, out, cfg, mods, list(plan.backbones), workers=workers, device=device,
                               progress=progress, space_check=space_check, allow_split_change=allow_split_change)
    result = StudyResult(out, lines)
    runs = out / "runs"
    cells: list[dict[str, Any]] = []

    def evaluated(run_dir: Path, where: Path | None = None, name: str = "test") -> Path:
        target = run_dir if where is None else run_dir / f"cross-{path_key(where)}"
        if _done(run_dir, target, manifest_hash(where or work)):
            result.lines.append(f"evaluate: {target.name} of {run_dir.name} is done; skipped")
        else:
            result.lines.append(evaluate(run_dir, "test", where or work, device=device, out_dir=target,
                                         progress=progress, allow_split_change=allow_split_change).summary())
        return target

    def compressed(src: Path, method: str, dst: Path) -> str:
        if (dst / "best" / "config.json").is_file():  # compress renames best/ into place, whole, last
            return f"{method}: {dst.name} exists; skipped"
        return compress(src, method, dst, device=device).summary()

    def distilled(teacher: Path, dst: Path, student: str) -> str:
        # A distillation is a training run: best/ exists from its first epoch on, so only its
        # trainer state says whether it finished.
        overrides = {"device": device, "progress": progress}
        status = train_status(dst, distill_config(teacher, student, overrides=overrides)[1])
        if status == "done":
            return f"distill: {dst.name} is already trained; skipped"
        return distill(teacher, dst, student, overrides=overrides, resume=status == "partial",
                       allow_split_change=allow_split_change).summary()

    def one(backbone: str, modality: str, variant: str, make: Callable[[Path], str] | None) -> None:
        run_dir = runs / cell_name(backbone, modality, variant)
        if make is not None:
            result.lines.append(make(run_dir))
        row = {"backbone": backbone, "modality": modality, "variant": variant or "fp32", "run": str(run_dir),
               "eval": str(evaluated(run_dir))}
        row["cross"] = {path_key(w): str(evaluated(run_dir, Path(w))) for w in plan.cross}
        if plan.robustness:  # each (video, type, level) already scored is reused
            done = run_robustness(run_dir, work, RobustnessConfig(perturbations=plan.robustness,
                                                                  levels=plan.robustness_levels),
                                  device=device, progress=progress, allow_split_change=allow_split_change)
            result.lines.append(f"robustness: {run_dir.name}: {done.scored} copies scored now, {done.reused} "
                                "already done")
            row["robustness"] = done.table
        cells.append(row)

    for modality in plan.modalities:
        for backbone in plan.order():
            run_dir = runs / cell_name(backbone, modality)
            result.lines.append(train_cell(work, cfg, run_dir, device=device, progress=progress,
                                           allow_split_change=allow_split_change, backbone=backbone,
                                           modality=modality))
            one(backbone, modality, "", None)
            for method in plan.compress:
                if method != "distill":
                    one(backbone, modality, method,
                        lambda dst, m=method, src=run_dir: compressed(src, m, dst))
        if "distill" in plan.compress:
            small, large = plan.order()[0], plan.order()[-1]
            teacher = runs / cell_name(large, modality)
            one(small, modality, "distill", lambda dst, t=teacher: distilled(t, dst, small))
    # speed and size: each trained cell against its variants, on the same pictures
    for group in _groups(cells):
        base = Path(group[0]["run"])
        bench = base / "benchmark" / "benchmark.json"
        if not bench.is_file() or bench.stat().st_mtime_ns < max(Path(c["eval"], "metrics.json").stat().st_mtime_ns
                                                                   for c in group):
            benchmark_runs([c["run"] for c in group], device=device, out_dir=base / "benchmark", repeats=5)
        speed = {r["variant"]: r for r in json.loads(bench.read_text())["rows"]}  # by run directory name
        for c in group:
            c["speed"] = speed.get(Path(c["run"]).name, {})
    result.table = tables(cells, plan, cfg, device)
    write_tables(out, result.table)
    result.lines.append(f"study: {out / 'study.md'}")
    return result


def _groups(cells: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Each trained cell with its compressed variants (a distilled student goes with its trained
    namesake of the same backbone and modality)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["backbone"], c["modality"]), []).append(c)
    return [sorted(g, key=lambda c: c["variant"] != "fp32") for g in groups.values()]


# ---------------------------------------------------------------- statistics


def bootstrap_interval(stat: Callable[[np.ndarray], float], n: int, times: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``stat(indices)`` over ``times`` resamples of ``n`` items with
    replacement (resamples where the statistic is undefined, e.g. AUC of one class, are dropped)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(times):
        v = stat(rng.integers(0, n, n))
        if np.isfinite(v):
            values.append(v)
    if not values:
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [50 * (1 - level), 100 - 50 * (1 - level)])
    return float(lo), float(hi)


def _frame_rows(eval_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per test video: (frame labels, frame scores) from ``predictions.csv``."""
    per: dict[str, tuple[list, list]] = {}
    with open(eval_dir / "predictions.csv", newline="") as f:
        for r in csv.DictReader(f):
            labels, scores = per.setdefault(r["video_id"], ([], []))
            labels.append(int(r["label"]))
            scores.append(float(r["score"]))
    return {k: (np.array(a), np.array(b)) for k, (a, b) in per.items()}


def cell_statistics(eval_dir: Path, times: int, seed: int) -> dict[str, Any]:
    """The cell's figures from its ``metrics.json`` with bootstrap 95% intervals over test videos."""
    m = json.loads((eval_dir / "metrics.json").read_text())
    videos = m["videos"]
    labels = np.array([v["label"] for v in videos])
    scores = np.array([v["score"] for v in videos])
    probs = np.array([v["probability"] for v in videos])
    frames = _frame_rows(eval_dir)
    frame_sets = [frames[v["video_id"]] for v in videos]
    thr = m["threshold"]

    def frame_auc(idx: np.ndarray) -> float:
        return binary_metrics(np.concatenate([frame_sets[i][0] for i in idx]),
                              np.concatenate([frame_sets[i][1] for i in idx]))["auc"]

    stats = {
        "video_auc": (m["overall"]["video"]["auc"], lambda i: binary_metrics(labels[i], scores[i])["auc"]),
        "frame_auc": (m["overall"]["frame"]["auc"], frame_auc),
        "accuracy": (m["overall"]["video"]["acc@thr"], lambda i: float(np.mean((scores[i] >= thr) == labels[i]))),
        "ece": (m["calibration"]["ece_after"], lambda i: expected_calibration_error(labels[i], probs[i])),
    }
    out = {"videos": len(videos), "real": int((labels == 0).sum()), "fake": int((labels == 1).sum()),
           "manifest_hash": m.get("manifest_hash"), "trained_manifest_hash": m.get("trained_manifest_hash")}
    for k, (value, fn) in stats.items():
        out[k] = {"value": value, "ci95": bootstrap_interval(fn, len(videos), times, seed)}
    return out


# ---------------------------------------------------------------- tables


def tables(cells: list[dict[str, Any]], plan: StudyPlan, cfg: StudyConfig, device: str) -> dict[str, Any]:
    rows = []
    for c in cells:
        row = {k: c[k] for k in ("backbone", "modality", "variant", "run")}
        row["test"] = cell_statistics(Path(c["eval"]), plan.bootstrap, plan.seed)
        row["cross"] = {name: cell_statistics(Path(d), plan.bootstrap, plan.seed) for name, d in c["cross"].items()}
        speed = c.get("speed", {})
        row["speed"] = {k: speed.get(k) for k in ("size_mb", "latency_p50_ms", "throughput", "speedup_latency",
                                                  "speedup_throughput")}
        row["reported"] = REPORTED.get(c["variant"] if c["variant"] != "fp32" else c["modality"])
        if "robustness" in c:
            row["robustness"] = c["robustness"]
        rows.append(row)
    weights = {"backbone_init": cfg.train.init, "depth": cfg.depth.model, "flow": cfg.flow.method,
               "fakes": cfg.train.fakes}
    return {"rows": rows, "device": device, "bootstrap": plan.bootstrap, "settings": weights,
            "plan": {"backbones": list(plan.backbones), "modalities": list(plan.modalities),
                     "compress": list(plan.compress), "cross": list(plan.cross),
                     "robustness": list(plan.robustness), "robustness_levels": list(plan.robustness_levels)}}


def _fmt(stat: dict[str, Any]) -> str:
    v, (lo, hi) = stat["value"], stat["ci95"]
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else f"{v:.3f}"


def write_tables(out: Path, table: dict[str, Any]) -> None:
    rows = table["rows"]
    lines = ["# Study", "", f"Device: {table['device']}; weights: {table['settings']}; 95% intervals from "
             f"{table['bootstrap']} bootstrap resamples of the test videos.", "",
             "## Accuracy by modality and backbone (test split)", "",
             "| modality | backbone | videos | video AUC | frame AUC | accuracy | ECE | the study reported |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in (r for r in rows if r["variant"] == "fp32"):
        t = r["test"]
        lines.append(f"| {r['modality']} | {r['backbone']} | {t['videos']} ({t['real']} real) | {_fmt(t['video_auc'])} "
                     f"| {_fmt(t['frame_auc'])} | {_fmt(t['accuracy'])} | {_fmt(t['ece'])} | {r['reported'] or ''} |")
    variants = [r for r in rows if r["variant"] != "fp32"] or []
    lines += ["", "## Compression: speed, size and accuracy", "",
              "| modality | backbone | variant | size MB | latency p50 ms | speed-up (latency) | throughput | "
              "video AUC | accuracy | the study reported |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r["modality"], r["backbone"], r["variant"] != "fp32")):
        if r["variant"] == "fp32" and not any(v["modality"] == r["modality"] and v["backbone"] == r["backbone"]
                                              for v in variants):
            continue
        s = r["speed"]
        lines.append(f"| {r['modality']} | {r['backbone']} | {r['variant']} | {s.get('size_mb')} | "
                     f"{s.get('latency_p50_ms')} | {s.get('speedup_latency')}x | {s.get('throughput')} | "
                     f"{_fmt(r['test']['video_auc'])} | {_fmt(r['test']['accuracy'])} | "
                     f"{(r['reported'] or '') if r['variant'] != 'fp32' else ''} |")
    cross = sorted({name for r in rows for name in r["cross"]})
    if cross:
        lines += ["", "## Cross-dataset (video AUC on each work directory's test split)", "",
                  "| modality | backbone | variant | " + " | ".join(cross) + " |",
                  "| --- | --- | --- | " + " | ".join("---" for _ in cross) + " |"]
        for r in rows:
            lines.append(f"| {r['modality']} | {r['backbone']} | {r['variant']} | " +
                         " | ".join(_fmt(r["cross"][n]["video_auc"]) if n in r["cross"] else "" for n in cross) + " |")
    for r in (r for r in rows if "robustness" in r):
        lines += ["", f"## Robustness: {r['modality']}, {r['backbone']}, {r['variant']} (test split, perturbed)", "",
                  markdown_table(r["robustness"])]
    plot = _plot(out, rows)
    lines += ["", f"![video AUC by modality and backbone]({plot.name})", ""]
    atomic_write_text(out / "study.md", "\n".join(lines))
    atomic_write_text(out / "study.json", json.dumps(table, indent=2, default=float))


def _plot(out: Path, rows: list[dict[str, Any]]) -> Path:
    base = [r for r in rows if r["variant"] == "fp32"]
    fig, ax = figure(max(4, 1.2 * len(base)), 3)
    for i, r in enumerate(base):
        s = r["test"]["video_auc"]
        v, (lo, hi) = s["value"], s["ci95"]
        if v is not None and np.isfinite(v):
            err = [[v - lo], [hi - v]] if np.isfinite(lo) else None
            ax.bar(i, v, yerr=err, capsize=4, color="C0" if "base" not in r["backbone"] else "C1")
    ax.set_xticks(range(len(base)), [f"{r['modality']}\n{r['backbone']}" for r in base], fontsize=7)
    ax.set(ylim=(0, 1), ylabel="video AUC (test)", title="video AUC with 95% bootstrap intervals")
    ax.axhline(0.5, color="k", lw=0.6, ls="--")
    return save_figure(fig, out / "study.png")
