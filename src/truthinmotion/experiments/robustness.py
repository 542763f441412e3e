"""``tim robustness``: how a detector's verdicts hold up when its test videos are perturbed.

Every test video of the work directory (the videos ``tim evaluate`` scores there; pseudo-fakes,
which are no files of their own, are left out) is scored as it is (the clean row) and then once
per perturbation and level of :mod:`..media.perturb` (the DeeperForensics-1.0 set of Jiang et al.,
CVPR 2020, resizing and a bitrate cap): the perturbed copy goes through the whole pipeline from
the run directory alone (faces, flow, depth, detector: :class:`..inference.scorer.Scorer`, as
``tim detect`` scores a video). Per type and level: video AUC, accuracy at the detector's
threshold and expected calibration error, the same figures of the clean verdicts of the same
videos beside them, the drop, the share of videos whose label flips, and the PSNR of the copies
over the frames the pipeline samples.

Each (video, perturbation, level) is a line of ``verdicts.jsonl`` as it finishes, with the
parameters and seed that made its copy; a re-run skips every line made with the same settings
from the same source file, so an interrupted run resumes. A copy that cannot be made or scored
(no face left after blurring) is a line with its status and reason, and the batch goes on.
Copies are written to a temporary folder and deleted once scored, unless ``keep_videos``; they
never enter the work directory, so no perturbed test video can reach training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.config import Settings, require
from ..core.errors import ConfigError, StageError
from ..core.io import atomic_write_text, path_key, source_identity
from ..core.metrics import AGGREGATIONS, binary_metrics
from ..data.index import manifest_hash, read_manifest
from ..data.pseudo import is_pseudo
from ..data.splits import SPLITS
from ..media.perturb import LEVELS, PERTURBATIONS, perturb_video, psnr_frames, require_av
from ..media.video import probe, sample_points
from ..reports.plots import figure, save_figure

__all__ = ["CLEAN", "RobustnessConfig", "RobustnessResult", "cell_seed", "run_robustness"]

log = logging.getLogger(__name__)

CLEAN = "clean"  # the perturbation of the unperturbed video's line (level 0)


@dataclass(frozen=True)
class RobustnessConfig(Settings):
    """What ``tim robustness`` measures: the section ``robustness`` of a settings file."""

    perturbations: tuple[str, ...] = tuple(PERTURBATIONS)  # codes of media.perturb.PERTURBATIONS
    levels: tuple[int, ...] = LEVELS  # 1 (mildest) to 5; resize has 3
    seed: int = 0  # with a video's id, type and level, seeds its copy's draws (blocks, noise)
    split: str = "test"  # the videos perturbed
    aggregation: str = "mean"  # a face's score from its points' scores

    def check(self) -> None:
        bad = sorted(set(self.perturbations) - set(PERTURBATIONS))
        require(bool(self.perturbations) and not bad,
                f"perturbations: {bad or 'none'} not known; choose from {', '.join(PERTURBATIONS)}")
        require(bool(self.levels) and set(self.levels) <= set(LEVELS), f"levels: each one of {LEVELS}")
        require(self.split in SPLITS, f"split: one of {', '.join(SPLITS)}")
        require(self.aggregation in AGGREGATIONS, f"aggregation: one of {', '.join(AGGREGATIONS)}")

    def cells(self) -> list[tuple[str, int]]:
        """(type, level) of every perturbed cell: the levels a type has among those asked."""
        return [(c, lv) for c in self.perturbations for lv in self.levels if lv <= len(PERTURBATIONS[c].params)]


def cell_seed(seed: int, video_id: str, code: str, level: int) -> int:
    """The seed of one copy: the run's seed, the video, the type and the level, nothing else."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{video_id}:{code}:{level}".encode()).digest()[:8], "big") >> 1


@dataclass
class RobustnessResult:
    out_dir: Path
    table: dict[str, Any]
    scored: int  # cells scored by this run
    reused: int  # cells found done in verdicts.jsonl

    def summary(self) -> str:
        return (f"robustness: {self.scored} copies scored now, {self.reused} already done\n"
                + markdown_table(self.table) + f"\nreport: {self.out_dir / 'robustness.md'}")


def _key(line: dict[str, Any]) -> tuple[str, str, int]:
    return line["video_id"], line["perturbation"], int(line["level"])


def _read_log(path: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Lines already made; a last line cut short by a kill is dropped."""
    if not path.is_file():
        return {}
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        atomic_write_text(path, text)  # a kill here keeps every finished line
    return {_key(rec): rec for rec in map(json.loads, filter(str.strip, text.splitlines()))}


def _append(path: Path, line: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(line, separators=(",", ":"), allow_nan=False) + "\n")
        f.flush()


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _test_videos(work: Path, record: Any, split: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows ``tim evaluate`` scores in ``split`` (those with every artifact the detector needs),
    less pseudo-fakes; and the ids left out as pseudo-fakes."""
    from ..training.dataset import VideoDataset

    ds = VideoDataset(work, split, "+".join(record.modalities), record.data, record.preprocess, train=False,
                      expect=record.feature_expect())
    scored = {item.video_id for item in ds.videos}
    rows = [r for r in read_manifest(work) if r["video_id"] in scored]
    return [r for r in rows if not is_pseudo(r)], [r["video_id"] for r in rows if is_pseudo(r)]


def run_robustness(
    run_dir: str | Path,
    workdir: str | Path | None = None,
    cfg: RobustnessConfig = RobustnessConfig(),
    *,
    out_dir: str | Path | None = None,
    keep_videos: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    allow_split_change: bool = False,
) -> RobustnessResult:
    """Score every ``cfg.split`` video of ``workdir`` (default: the detector's own) clean and
    perturbed; write ``verdicts.jsonl``, ``robustness.json``, ``robustness.md`` and
    ``robustness.png`` to ``out_dir`` (default ``RUN/robustness-<workdir key>``)."""
    from tqdm.auto import tqdm

    from ..models.detector import read_record
    from ..training.runs import check_split

    from ..backends.weights import report_folder_for
    from ..models.detector import detector_dir

    require_av()  # before any work: a missing encoder is said at once
    report_folder_for(run_dir, out_dir, "the report")
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    detector = _files_hash(detector_dir(run_dir))  # verdicts of another detector are not reused
    work, own = record.provenance.work_directory(workdir)
    if own:
        check_split(record.provenance.manifest_hash, manifest_hash(work), f"the detector of {run_dir}",
                    allow_split_change)
    if keep_videos is not None and Path(keep_videos).resolve().is_relative_to(work.resolve()):
        raise ConfigError(f"--keep-videos {keep_videos} is inside the work directory {work}: perturbed copies of "
                          "test videos are kept outside it, so that no stage can index or train on them")
    out = Path(out_dir) if out_dir else run_dir / f"robustness-{path_key(work)}"
    out.mkdir(parents=True, exist_ok=True)
    videos, pseudo = _test_videos(work, record, cfg.split)
    if not videos:
        raise ConfigError(f"no {cfg.split} videos with artifacts in {work} to perturb")
    if pseudo:
        log.info("%d pseudo-fakes of the %s split left out: they are made from their sources' frames, not files",
                 len(pseudo), cfg.split)
    log_path = out / "verdicts.jsonl"
    lines = _read_log(log_path)
    points = record.faces.num_points
    jobs, reused = [], 0
    for r in videos:
        source = source_identity(r["path"]) if Path(r["path"]).is_file() else {"path": r["path"]}
        for code, level in [(CLEAN, 0), *cfg.cells()]:
            spec = {"seed": None if code == CLEAN else cell_seed(cfg.seed, r["video_id"], code, level),
                    "aggregation": cfg.aggregation, "source": source, "detector": detector}
            old = lines.get((r["video_id"], code, level))
            # a model-stage error may pass (memory): it is tried again; every other status is final
            if old is not None and old.get("spec") == spec and old["status"] != "error":
                reused += 1
                continue
            jobs.append((r, code, level, spec))
    log.info("robustness of %s: %d videos x %d cells; %d done before, %d to do", run_dir, len(videos),
             len(cfg.cells()) + 1, reused, len(jobs))
    scorer = None
    if jobs:
        from ..inference.scorer import Scorer

        scorer = Scorer(run_dir, device, cfg.aggregation)
    bar = tqdm(total=len(jobs), desc="robustness", unit="copy", disable=not progress or not jobs)
    with tempfile.TemporaryDirectory(prefix="tim-robustness-") as tmp:
        for r, code, level, spec in jobs:
            line = _score_cell(scorer, r, code, level, spec, Path(keep_videos) if keep_videos else Path(tmp), points,
                               keep=keep_videos is not None)
            _append(log_path, line)
            lines[_key(line)] = line
            bar.set_postfix_str(f"{code}{level or ''} {r['video_id'][:20]}")
            bar.update(1)
    bar.close()
    wanted = {(r["video_id"], c, lv) for r in videos for c, lv in [(CLEAN, 0), *cfg.cells()]}
    table = summarise([lines[k] for k in sorted(wanted)], cfg)
    table.update({"run": str(run_dir.resolve()), "workdir": str(work.resolve()), "split": cfg.split,
                  "settings": cfg.to_dict(), "left_out_pseudo": pseudo,
                  "backbone_weights": (record.provenance.backbone_weights or {}).get("init", "unknown")})
    atomic_write_text(out / "robustness.json", json.dumps(table, indent=2, allow_nan=False))
    plot = _plot(table, out / "robustness.png")
    atomic_write_text(out / "robustness.md", _report(table, plot.name))
    return RobustnessResult(out, table, len(jobs), reused)


def _files_hash(folder: Path) -> str:
    """A hash of every file of a detector's folder (weights and record): which detector it is."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:24]


def _score_cell(scorer: Any, row: dict[str, Any], code: str, level: int, spec: dict[str, Any], folder: Path,
                points: int, keep: bool) -> dict[str, Any]:
    """One line of verdicts.jsonl: the copy made (unless clean), scored, and what made it."""
    line: dict[str, Any] = {"video_id": row["video_id"], "label": int(row["label"]), "method": row["method"],
                            "perturbation": code, "level": level, "spec": spec, "params": None, "psnr": None,
                            "seconds": {}}
    path = Path(row["path"])
    copy = None
    try:
        if code != CLEAN:
            copy = folder / f"{code}-{level}" / f"{row['video_id']}.mp4"
            made = perturb_video(path, copy, code, level, seed=spec["seed"])
            line["params"], line["seconds"]["perturb"] = made.params, round(made.seconds, 4)
            line["psnr"] = _finite(psnr_frames(path, copy, sample_points(probe(path).frames, points)))
            path = copy
        t = time.perf_counter()
        verdict = scorer(path)
        line["seconds"]["score"] = round(time.perf_counter() - t, 4)
    except StageError as err:
        line.update(status=err.status, reason=err.reason)
        log.warning("%s %s level %d: %s: %s", row["video_id"], code, level, err.status, err.reason)
        return line
    except (ConfigError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001 - one copy must not cost the others their verdicts
        line.update(status="error", reason=f"{type(err).__name__}: {err}")
        log.warning("%s %s level %d: error: %s", row["video_id"], code, level, line["reason"], exc_info=True)
        return line
    finally:
        if copy is not None and not keep and copy.exists():
            copy.unlink()
    line.update(status=verdict.status, reason=verdict.reason, score=_finite(verdict.score),
                probability=_finite(verdict.probability), predicted=verdict.label,
                score_threshold=verdict.score_threshold)
    if not verdict.ok:
        log.warning("%s %s level %d: %s: %s", row["video_id"], code, level, verdict.status, verdict.reason)
    return line


def _figures(lines: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    from ..models.calibration import expected_calibration_error

    labels = np.array([ln["label"] for ln in lines], int)
    scores = np.array([ln["score"] for ln in lines], float)
    probs = np.array([ln["probability"] for ln in lines], float)
    m = binary_metrics(labels, scores, threshold)
    return {"videos": len(lines), "auc": _finite(m["auc"]), "acc": _finite(m["acc@thr"]),
            "ece": _finite(expected_calibration_error(labels, probs))}


def summarise(lines: Sequence[dict[str, Any]], cfg: RobustnessConfig) -> dict[str, Any]:
    """The table of ``robustness.json`` from the lines of the videos and cells asked for."""
    clean = {ln["video_id"]: ln for ln in lines if ln["perturbation"] == CLEAN}
    good = {v: ln for v, ln in clean.items() if ln["status"] == "ok"}
    thresholds = {ln["score_threshold"] for ln in good.values()}
    if len(thresholds) > 1:
        raise ConfigError(f"verdicts.jsonl holds verdicts at several thresholds {sorted(thresholds)}: the run "
                          "directory's detector changed; remove the file to start again")
    threshold = thresholds.pop() if thresholds else float("nan")
    rows = []
    for code, level in cfg.cells():
        cell = [ln for ln in lines if ln["perturbation"] == code and ln["level"] == level]
        ok = [ln for ln in cell if ln["status"] == "ok" and ln["video_id"] in good]
        before = _figures([good[ln["video_id"]] for ln in ok], threshold)
        after = _figures(ok, threshold)
        psnrs = [ln["psnr"] for ln in cell if ln.get("psnr") is not None]
        flips = [ln["predicted"] != good[ln["video_id"]]["predicted"] for ln in ok]
        p = PERTURBATIONS[code]
        rows.append({
            "perturbation": code, "name": p.name, "level": level, "parameter": p.param(level), "unit": p.unit,
            "videos": len(cell), "scored": len(ok),
            "failed": dict(Counter(ln["status"] for ln in cell if ln["status"] != "ok")),
            "psnr": _finite(float(np.mean(psnrs))) if psnrs else None,
            "clean": before, "perturbed": after,
            "drop": {k: None if before[k] is None or after[k] is None else before[k] - after[k] for k in ("auc", "acc")},
            "flipped": _finite(float(np.mean(flips))) if flips else None,
            "seconds_per_video": _finite(float(np.mean([ln["seconds"].get("perturb", 0) + ln["seconds"].get("score", 0)
                                                         for ln in cell]))) if cell else None,
        })
    return {"threshold": _finite(threshold), "aggregation": cfg.aggregation,
            "clean": {**_figures(list(good.values()), threshold), "failed": dict(Counter(
                ln["status"] for ln in clean.values() if ln["status"] != "ok"))},
            "rows": rows}


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def markdown_table(table: dict[str, Any]) -> str:
    c = table["clean"]
    out = ["| perturbation | level | parameter | videos | PSNR dB | AUC clean | AUC | drop | acc clean | acc | drop "
           "| ECE clean | ECE | flipped | failed |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
           f"| clean | 0 | | {c['videos']} | | {_fmt(c['auc'])} | | | {_fmt(c['acc'])} | | | {_fmt(c['ece'])} | | "
           f"| {_failed(c['failed'])} |"]
    for r in table["rows"]:
        b, a, d = r["clean"], r["perturbed"], r["drop"]
        out.append(f"| {r['name']} ({r['perturbation']}) | {r['level']} | {r['parameter']:g} | {r['scored']}/{r['videos']} "
                   f"| {_fmt(r['psnr'], '.1f')} | {_fmt(b['auc'])} | {_fmt(a['auc'])} | {_fmt(d['auc'], '+.3f')} "
                   f"| {_fmt(b['acc'])} | {_fmt(a['acc'])} | {_fmt(d['acc'], '+.3f')} | {_fmt(b['ece'])} "
                   f"| {_fmt(a['ece'])} | {_fmt(r['flipped'], '.2f')} | {_failed(r['failed'])} |")
    return "\n".join(out) + "\n"


def _failed(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or ""


def _plot(table: dict[str, Any], path: Path) -> Path:
    """Video AUC against level, a line per type, the clean AUC dashed."""
    fig, ax = figure(6.5, 4)
    for code in dict.fromkeys(r["perturbation"] for r in table["rows"]):
        rows = [r for r in table["rows"] if r["perturbation"] == code and r["perturbed"]["auc"] is not None]
        if rows:
            ax.plot([r["level"] for r in rows], [r["perturbed"]["auc"] for r in rows], "o-", ms=3, label=code)
    if table["clean"]["auc"] is not None:
        ax.axhline(table["clean"]["auc"], color="k", ls="--", lw=0.8, label="clean")
    ax.set(xlabel="level", ylabel="video AUC", ylim=(0, 1.02), xticks=list(LEVELS), title="Robustness to perturbations")
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    return save_figure(fig, path)


def _report(table: dict[str, Any], plot: str) -> str:
    s = table["settings"]
    lines = [f"# Robustness: {Path(table['run']).name} on {Path(table['workdir']).name} / {table['split']}", ""]
    if table["backbone_weights"] == "random":
        lines += ["- **The backbone started from random weights**: these figures say the pipeline works, not how a "
                  "pretrained detector holds up.", ""]
    lines += [
        f"- Each {table['split']} video scored as it is (clean) and perturbed by every type and level below "
        f"(DeeperForensics-1.0's seven types and five levels, resizing and a bitrate cap; seed {s['seed']}), "
        "each copy through the whole pipeline: faces, flow, depth, detector.",
        f"- Video score: {table['aggregation']} of frame probabilities; accuracy at the detector's threshold "
        f"{_fmt(table['threshold'])}; ECE of the calibrated probabilities (15 bins).",
        "- *clean* beside each cell: the clean verdicts of the videos scored in that cell; *drop*: clean minus "
        "perturbed; *flipped*: the share of those videos whose label changed; *failed*: copies with no verdict "
        "(no face found, not smaller than the target size).",
        f"- Left out: {len(table['left_out_pseudo'])} pseudo-fakes (made from their sources' frames, no file to "
        "perturb).",
        "",
        markdown_table(table),
        f"![{plot}]({plot})",
    ]
    return "\n".join(lines) + "\n"
