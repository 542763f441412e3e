"""``tim detect``: score videos with a trained detector, every stage in memory, no work directory.

The run directory says everything: the faces settings, the flow and depth settings and weights
the detector was trained on, its preprocessing, and its verdict rule for each aggregation
(threshold and calibration, :mod:`truthinmotion.calibration`). For each video: the score
(the frame probabilities aggregated, the mean by default), the calibrated probability that its
face was manipulated, a label at the aggregation's threshold, per-time-point scores, the faces
found and the time each stage took. A video that cannot be decoded or shows no face gets a
status and a reason instead of a score.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .calibration import verdict_rule
from .config import ConfigError
from .data import DataConfig, encode_pictures, to_backbone
from .faces import FaceDetector, Faces, FacesConfig, extract_faces
from .features import DepthConfig, DepthEstimator, FlowConfig, FlowEstimator, check_flow
from .index import VIDEO_SUFFIXES
from .compact import stored_crops, stored_depth, stored_flow
from .io import StageError, atomic_write_text
from .preflight import check_writable
from .explain import neutral_inputs
from .report import Evidence, build_evidence, write_report
from .metrics import AGGREGATIONS
from .sequential import first_round, undecided
from .compress import inference_autocast, load_detector
from .engine import LOCAL, Engine
from .models import detector_dir, parse_modalities, read_detector_config
from .runtime import autocast_context

__all__ = ["Prepared", "Preparer", "Scorer", "Verdict", "check_outputs", "detect", "expand_inputs", "to_json"]

log = logging.getLogger(__name__)


@dataclass
class Verdict:
    video: str
    status: str  # ok | no_face | unreadable | truncated | too_short | too_large | non_finite | error
    reason: str = ""
    probability: float | None = None  # calibrated probability that the video is fake
    label: str | None = None  # fake | real: probability >= threshold
    threshold: float | None = None  # on the probability (the score threshold, calibrated)
    score: float | None = None  # the frame scores aggregated, uncalibrated
    score_threshold: float | None = None  # chosen on validation videos for this aggregation
    aggregation: str = "mean"
    calibration: str = "identity"  # platt | identity (a detector trained without calibration)
    track: int | None = None  # the face that decided the verdict; frame_scores are its own
    tracks: list[dict[str, Any]] = field(default_factory=list)  # every face: see the README
    frame_index: list[int] = field(default_factory=list)
    frame_scores: list[float | None] = field(default_factory=list)  # None: no face at that point
    faces: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    # --early-stop: its error bound, the points scored of all with a face, whether it stopped early
    early_stop: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, str] = field(default_factory=dict)  # what ran each model, at what precision

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _flow_config(rec: dict[str, Any]) -> FlowConfig:
    if rec.get("init") == "random":
        raise ConfigError(
            "this detector was trained on RAFT flow from random weights, which cannot be rebuilt: "
            "retrain on flow from saved weights (--flow-weights FILE)"
        )
    keys = {f for f in FlowConfig.__dataclass_fields__}
    return FlowConfig.from_dict({k: v for k, v in rec.items() if k in keys})


def _depth_config(rec: dict[str, Any]) -> DepthConfig:
    if rec.get("init") == "random":
        raise ConfigError(
            "this detector was trained on depth from a randomly initialised model, which cannot be "
            "rebuilt: save the depth model to a directory (save_pretrained) and compute depth with it"
        )
    return DepthConfig(model=rec["model"], init="pretrained", input_size=rec["input_size"],
                       precision=rec.get("precision", "fp32"))


@dataclass
class Prepared:
    """A video after the CPU stages (faces, stored crops, flow), ready for the model stage (depth,
    detector); or, with a status other than ok, its failure. Picklable: it crosses processes."""

    video: str
    status: str = "ok"
    reason: str = ""
    faces: Faces | None = None
    valid: np.ndarray | None = None  # [T, K]: points with each face
    crops: np.ndarray | None = None  # [N, 2, S, S, 3]: the stored crops of the valid points
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # flow, rgb of those points
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def points(self) -> int:
        return 0 if self.crops is None else len(self.crops)


class Preparer:
    """The CPU side of scoring: faces, their crops as the artifacts store them, and flow."""

    def __init__(self, faces_cfg: FacesConfig, flow_cfg: FlowConfig | None, rgb: bool, device: str = "cpu"):
        self.faces_cfg, self.rgb = faces_cfg, rgb
        self.face_detector = FaceDetector.from_config(faces_cfg, device)
        self.flow = FlowEstimator(flow_cfg, device) if flow_cfg is not None else None

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu") -> "Preparer":
        """The preparer of a run directory's detector (its faces and flow settings)."""
        extra = read_detector_config(detector_dir(run_dir))
        mods = parse_modalities(extra["detector"]["modality"])
        return cls(_faces_config(extra), _flow_config(extra["features"]["flow"]) if "flow" in mods else None,
                   "rgb" in mods, device)

    def __call__(self, path: str | Path) -> Prepared:
        out = Prepared(str(path))
        t0 = time.perf_counter()
        try:
            faces = extract_faces(path, self.faces_cfg, self.face_detector)
        except StageError as err:
            out.status, out.reason = err.status, err.reason
            out.timings["faces"] = time.perf_counter() - t0
            return out
        except Exception as err:  # noqa: BLE001 - report, and let the other videos go on
            out.status, out.reason = "error", f"{type(err).__name__}: {err}"
            return out
        valid = np.stack([tr.valid for tr in faces.tracks])  # [T, K]
        crops = np.stack([tr.crops for tr in faces.tracks])[valid]  # the valid points of every face
        # What training read back from the artifacts: the stored crops, flow and depth.
        crops = stored_crops(crops, self.faces_cfg.crop_format, self.faces_cfg.crop_quality)
        out.faces, out.valid, out.crops = faces, valid, crops
        out.timings["faces"] = time.perf_counter() - t0
        # Only the points with a face, of all faces at once: no zero-filled arrays to index back down.
        if self.flow is not None:
            t = time.perf_counter()
            out.arrays["flow"] = stored_flow(self.flow(crops))
            out.timings["flow"] = time.perf_counter() - t
        if self.rgb:
            out.arrays["rgb"] = crops[:, 0]
        return out


def model_info(run_dir: str | Path) -> dict[str, Any]:
    """What a report says about the detector: its saved configuration, the data settings in full."""
    record = read_detector_config(detector_dir(run_dir))
    extra = {k: v for k, v in record.items() if k not in ("format", "backbone_config")}
    return {**extra, "data": DataConfig.from_saved(extra.get("data", {})).to_dict()}


def _runtime_of(model: Any) -> str:
    """``onnxruntime int8``, ``torch bf16``, ...: what runs a loaded detector, at what precision."""
    inference = getattr(model, "extra", {}).get("inference", {})
    precision = inference.get("method") if inference.get("method") in ("int8", "fp16", "bf16") else "fp32"
    return f"{'onnxruntime' if hasattr(model, 'session') else 'torch'} {precision}"


def _faces_config(extra: dict[str, Any]) -> FacesConfig:
    # Crops are scored as the faces artifacts stored them for training; a detector trained
    # before compact artifacts saw them raw.
    known = set(FacesConfig.__dataclass_fields__)
    record = {"crop_format": "raw", **extra.get("faces", {})}
    return FacesConfig.from_dict({k: v for k, v in record.items() if k in known})


class Scorer:
    """All the models of a run directory, built once; ``__call__(path) -> Verdict``.

    :meth:`score` does one video; :meth:`prepare` (CPU: faces, flow) and :meth:`finish` (the
    models: depth, detector) split it, so CPU workers can prepare videos while the model stage
    scores several of them at once, ``batch_size`` pictures per forward pass. Built with
    ``prepare=False`` it holds the model stage only. ``runtime`` (``auto``: ONNX Runtime on the
    CPU, :mod:`.onnxrun`) runs depth and a plain fp32 detector; ``torch`` keeps them in PyTorch.
    ``early_stop``: the error bound of :mod:`.sequential` (None: every point is scored).
    ``depth_precision`` (``fp32``/``int8``) overrides the precision the detector's depth was
    computed at (None: the same).
    """

    def __init__(self, run_dir: str | Path, device: str = "cpu", aggregation: str = "mean", batch_size: int = 64,
                 prepare: bool = True, runtime: str = "auto", early_stop: float | None = None,
                 depth_precision: str | None = None):
        if aggregation not in AGGREGATIONS:
            raise ConfigError(f"aggregation: {aggregation!r} not one of {', '.join(AGGREGATIONS)}")
        if batch_size < 1:
            raise ConfigError("batch size: at least 1 picture")
        if early_stop is not None and not (0.0 < early_stop < 1.0 and aggregation == "mean"):
            raise ConfigError("early stop: an error bound between 0 and 1 (0.01), with the mean aggregation "
                              f"(its bound is for means), not {early_stop} with {aggregation}")
        self.early_stop = early_stop
        self.model = load_detector(run_dir, device, runtime)
        self.amp = inference_autocast(self.model)
        self.device, self.aggregation, self.batch_size = device, aggregation, batch_size
        self.rule = verdict_rule(self.model.extra, aggregation)
        extra = self.model.extra
        self.faces_cfg = _faces_config(extra)
        feats = extra.get("features", {})
        mods = self.model.cfg.modalities
        flow_cfg = _flow_config(feats["flow"]) if "flow" in mods else None
        self.preparer = Preparer(self.faces_cfg, flow_cfg, "rgb" in mods, device) if prepare else None
        if flow_cfg is not None and not prepare:
            check_flow(flow_cfg)  # the workers will build it: a missing model fails here, before any video
        self.depth = None
        if "depth" in mods:
            depth_cfg = _depth_config(feats["depth"]).updated({"precision": depth_precision})
            self.depth = DepthEstimator(depth_cfg, device, runtime)
        self.data_cfg = DataConfig.from_saved(extra.get("data", {}))
        self.model_info = model_info(run_dir)
        self.runtime_info = {"detector": _runtime_of(self.model),
                             **({"depth": self.depth.describe()} if self.depth else {})}

    def __call__(self, path: str | Path) -> Verdict:
        return self.score(path)[0]

    def prepare(self, path: str | Path) -> Prepared:
        if self.preparer is None:
            raise RuntimeError("this Scorer was built with prepare=False")
        return self.preparer(path)

    def score(self, path: str | Path, evidence: int = 0) -> tuple[Verdict, Evidence | None]:
        """The verdict, and with ``evidence`` > 0 what backs it: the ``evidence`` most and the 2
        least suspicious time points of the deciding face, with saliency (:mod:`.report`)."""
        return self.finish([self.prepare(path)], evidence)[0]

    def finish(self, items: Sequence[Prepared], evidence: int = 0) -> list[tuple[Verdict, Evidence | None]]:
        """Verdicts of prepared videos: depth of all their crops, then the detector over all their
        pictures, ``batch_size`` at a time; a stage's time is shared out by each video's points.
        With ``early_stop``, half of each face's points first, then the rest of the videos that
        are still undecided (:mod:`.sequential`)."""
        ok = [p for p in items if p.status == "ok"]
        timings = [dict(p.timings) for p in ok]
        if self.early_stop is None or not ok:
            rows = [np.arange(p.points) for p in ok]
            probs, pictures, inputs = self._score(ok, rows, timings)
        else:
            if evidence:
                raise ConfigError("--early-stop leaves points unscored, which evidence needs: use one or the other")
            counts = [[int(n) for n in p.valid.sum(1)] for p in ok]
            rows = [first_round(c) for c in counts]
            probs = [np.full(p.points, np.nan, np.float32) for p in ok]
            for p, r, pr in zip(probs, rows, self._score(ok, rows, timings)[0]):
                p[r] = pr
            rest = [np.setdiff1d(np.arange(p.points), r) if any(undecided(pr, c, self.rule.threshold, self.early_stop))
                    else np.zeros(0, np.int64) for p, r, pr, c in zip(ok, rows, probs, counts)]
            for p, r, pr in zip(probs, rest, self._score(ok, rest, timings)[0]):
                p[r] = pr
            pictures = inputs = [None] * len(ok)
            scored = [np.isin(np.arange(p.points), np.concatenate([r, x])) for p, r, x in zip(ok, rows, rest)]
        results = {}
        for j, p in enumerate(ok):
            results[id(p)] = self._verdict(p, probs[j], timings[j], evidence, pictures[j], inputs[j],
                                           None if self.early_stop is None else scored[j])
        return [results[id(p)] if p.status == "ok" else (self._failed(p), None) for p in items]

    def _score(self, ok: Sequence[Prepared], rows: Sequence[np.ndarray], timings: list[dict[str, float]]
               ) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]], list[dict[str, torch.Tensor]]]:
        """Probabilities of the ``rows`` of each video (with the pictures and backbone inputs
        they came from): depth of their crops, then the detector, ``batch_size`` at a time, the
        time of each stage added to each video's timings in proportion to its rows."""
        counts = [len(r) for r in rows]
        total = sum(counts)
        cuts = np.cumsum(counts)[:-1]
        if total == 0:
            return [np.zeros(0, np.float32) for _ in ok], [{} for _ in ok], [{} for _ in ok]

        def share(stage: str, seconds: float) -> None:
            for tm, n in zip(timings, counts):
                tm[stage] = tm.get(stage, 0.0) + seconds * n / total

        # every row (no early stop): the arrays as they are, not copies
        picks = [slice(None) if len(r) == p.points else r for p, r in zip(ok, rows)]
        arrays = [{k: v[s] for k, v in p.arrays.items()} for p, s in zip(ok, picks)]
        if self.depth is not None:
            t = time.perf_counter()
            depth = stored_depth(self.depth(np.concatenate([p.crops[s, 0] for p, s in zip(ok, picks)])))
            for a, d in zip(arrays, np.split(depth, cuts)):
                a["depth"] = d
            share("depth", time.perf_counter() - t)
        t = time.perf_counter()
        pictures = [encode_pictures(a, self.model.cfg.modalities, self.data_cfg, self.faces_cfg.box_scale)
                    for a in arrays]
        inputs = [to_backbone(pics, self.model.preprocess) for pics in pictures]
        joined = {m: torch.cat([x[m] for x in inputs]) for m in inputs[0]}
        out = []
        with torch.no_grad(), autocast_context(self.device, self.amp):
            for i in range(0, total, self.batch_size):
                batch = {m: x[i:i + self.batch_size].to(self.device) for m, x in joined.items()}
                out.append(self.model(batch).logit.float().cpu())
        probs = np.split(torch.sigmoid(torch.cat(out)).numpy(), cuts)
        share("detector", time.perf_counter() - t)
        return probs, pictures, inputs

    def _failed(self, p: Prepared) -> Verdict:
        verdict = self._blank(p.video)
        verdict.status, verdict.reason = p.status, p.reason
        verdict.timings = {k: round(v, 4) for k, v in p.timings.items()}
        return verdict

    def _blank(self, video: str) -> Verdict:
        rule = self.rule
        return Verdict(video=video, status="ok", threshold=rule.probability_threshold, score_threshold=rule.threshold,
                       aggregation=self.aggregation, calibration=rule.calibration.method,
                       runtime=dict(self.runtime_info))

    def _verdict(self, p: Prepared, probs: np.ndarray, timings: dict[str, float], evidence: int,
                 pictures: dict[str, np.ndarray], inputs: dict[str, torch.Tensor], scored: np.ndarray | None = None,
                 ) -> tuple[Verdict, Evidence | None]:
        """``scored``: the rows whose ``probs`` were computed (early stop); None: all of them."""
        rule, faces, valid, tracks = self.rule, p.faces, p.valid, p.faces.tracks
        scored = np.ones(len(probs), bool) if scored is None else scored
        verdict = self._blank(p.video)
        verdict.faces = {k: faces.meta[k] for k in ("tracks", "max_faces_per_frame", "coverage", "frames", "fps")}
        verdict.faces["time_points"] = valid.shape[1]  # distinct pairs; fewer than asked in a short video
        verdict.faces["time_points_with_face"] = int(valid[0].sum())
        if not np.isfinite(probs[scored]).all():
            verdict.status = "non_finite"
            verdict.reason = (f"the detector gave {int((~np.isfinite(probs[scored])).sum())} non-finite scores of "
                              f"{int(scored.sum())}: "
                              "its weights are damaged or overflow; no verdict")
            verdict.timings = {k: round(v, 4) for k, v in timings.items()}
            return verdict, None
        # Each face is judged on its own; the video is as fake as its most fake face.
        cuts = np.cumsum(valid.sum(1))[:-1]
        for j, (tr, pr, sc) in enumerate(zip(tracks, np.split(probs, cuts), np.split(scored, cuts))):
            scores: list[float | None] = [None] * valid.shape[1]
            for i, x, s in zip(np.flatnonzero(valid[j]), pr, sc):
                scores[i] = float(x) if s else None
            score = AGGREGATIONS[self.aggregation](pr[sc])
            verdict.tracks.append({
                "track": j, "probability": float(rule.calibration(score)), "score": score,
                "label": "fake" if score >= rule.threshold else "real", "time_points": int(valid[j].sum()),
                "time_points_scored": int(sc.sum()),
                "box": [round(float(c), 1) for c in np.nanmedian(tr.boxes, axis=0)], "frame_scores": scores,
            })
        if self.early_stop is not None:
            verdict.early_stop = {"error_bound": self.early_stop, "time_points_scored": int(scored.sum()),
                                  "of": len(scored), "stopped": bool(not scored.all())}
        top = max(verdict.tracks, key=lambda r: r["score"])
        verdict.frame_index = [int(x) for x in faces.frame_index]
        verdict.frame_scores = top["frame_scores"]
        verdict.track = top["track"]
        verdict.score = top["score"]
        verdict.probability = top["probability"]
        verdict.label = top["label"]
        found = None
        if evidence > 0:
            t = time.perf_counter()
            start = int(valid[: top["track"]].sum())  # the deciding face's rows among all faces'
            rows = start + np.arange(int(valid[top["track"]].sum()))
            base = neutral_inputs(self.model.cfg.modalities, self.data_cfg, self.model.preprocess,
                                  p.crops.shape[2], self.faces_cfg.box_scale)
            found = build_evidence(
                p.video, self.model, faces, rows, np.flatnonzero(valid[top["track"]]), probs, p.crops, pictures,
                inputs, evidence, self.device, self.amp, base)
            timings["evidence"] = time.perf_counter() - t
        timings["total"] = sum(v for k, v in timings.items() if k != "total")
        verdict.timings = {k: round(v, 4) for k, v in timings.items()}
        return verdict, found


def expand_inputs(items: Iterable[str | Path]) -> list[Path]:
    """Video files from files and directories (recursively, by suffix); errors for missing paths."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in VIDEO_SUFFIXES and q.is_file()))
        elif p.exists():
            out.append(p)
        else:
            raise ConfigError(f"not found: {p}")
    if not out:
        raise ConfigError("no videos to score")
    return out


def plot_scores(verdict: Verdict, path: Path) -> Path:
    """Score over time PNG: per-time-point scores, the video's score and its threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fps = verdict.faces.get("fps") or 25.0
    t = [i / fps for i, s in zip(verdict.frame_index, verdict.frame_scores) if s is not None]
    s = [x for x in verdict.frame_scores if x is not None]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(t, s, "o-", ms=3, label="time point")
    ax.axhline(verdict.score_threshold, color="k", ls="--", lw=0.8, label=f"threshold ({verdict.aggregation})")
    ax.axhline(verdict.score, color="r", lw=1,
               label=f"video {verdict.aggregation}: {verdict.score:.3f}; probability {verdict.probability:.3f} ({verdict.label})")
    ax.set(ylim=(0, 1), xlabel="seconds", ylabel="score (uncalibrated)", title=Path(verdict.video).name)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def check_outputs(inputs: Sequence[Path], *outputs: str | Path | None) -> None:
    """Refuse, before any work, an output that cannot be written or that is one of the inputs."""
    sources = {p.resolve() for p in inputs}
    for out in outputs:
        if out is None:
            continue
        path = Path(out)
        if path.resolve() in sources:
            raise ConfigError(f"{path} is one of the videos to score: choose another output file")
        if path.is_dir():
            raise ConfigError(f"{path} is a directory: give a file name for the output")
        check_writable(path.parent)


def to_json(verdicts: Sequence[Verdict]) -> str:
    """Strict JSON (no NaN or Infinity tokens): a non-finite number becomes null."""
    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return json.dumps([clean(asdict(v)) for v in verdicts], indent=2, allow_nan=False)


def _write(path: Path, text: str) -> Path:
    """Write ``text`` atomically; if that fails after the work is done, keep it beside in the
    temporary directory and say where, rather than lose it."""
    try:
        atomic_write_text(path, text)
        return path
    except OSError as err:
        fd, rescue = tempfile.mkstemp(prefix=f"tim-{path.stem}-", suffix=path.suffix)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        log.error("could not write %s (%s); the results are in %s", path, err, rescue)
        return Path(rescue)


def _plot_names(paths: Sequence[Path]) -> dict[Path, str]:
    """A plot file name per video: its stem, with a short hash of its folder where stems repeat."""
    import hashlib
    from collections import Counter

    stems = Counter(p.stem for p in paths)
    return {p: p.stem if stems[p.stem] == 1 else
            f"{p.stem}-{hashlib.sha1(str(p.resolve().parent).encode()).hexdigest()[:8]}" for p in paths}


def detect(
    videos: Sequence[str | Path],
    run_dir: str | Path,
    *,
    device: str = "cpu",
    aggregation: str = "mean",
    json_out: str | Path | None = None,
    csv_out: str | Path | None = None,
    jsonl_out: str | Path | None = None,
    plot_dir: str | Path | None = None,
    report_dir: str | Path | None = None,
    evidence_points: int = 4,
    progress: bool = True,
    workers: int = 1,
    batch_size: int = 64,
    engine: Engine = LOCAL,
    runtime: str = "auto",
    early_stop: float | None = None,
    depth_precision: str | None = None,
) -> list[Verdict]:
    """Score every video; write JSON / CSV / JSON lines / plots / report pages where asked.
    Failures are verdicts, not errors.

    Outputs are checked before any video is scored; if writing one still fails, the results go
    to a file in the temporary directory and the log says where. ``jsonl_out`` gets each
    verdict as its video finishes, and the videos already in it are not scored again (their
    verdicts are read back, so the other outputs still list every video). ``workers`` CPU
    processes (or Ray actors) prepare videos for a model stage that scores ``batch_size``
    pictures at a time across videos (:mod:`.batchscore`). ``runtime``, ``early_stop`` and
    ``depth_precision``: see :class:`Scorer`.
    """
    from tqdm.auto import tqdm

    from .batchscore import JsonLines, stream_verdicts

    if early_stop is not None and report_dir is not None:
        raise ConfigError("--early-stop leaves points unscored, which the evidence of --report needs: use one or "
                          "the other")
    paths = expand_inputs(videos)
    check_outputs(paths, json_out, csv_out, jsonl_out)
    for flag, folder in (("--plot", plot_dir), ("--report", report_dir)):
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            raise ConfigError(f"{flag} {folder} is a file: give a directory")
        if folder is not None:
            check_writable(folder)
    lines = JsonLines(jsonl_out) if jsonl_out else None
    done = {k: Verdict(**v) for k, v in lines.done().items()} if lines else {}
    todo = [p for p in paths if str(p.resolve()) not in done]
    if done:
        log.info("%d of %d videos already have a verdict in %s; scoring the other %d",
                 len(paths) - len(todo), len(paths), jsonl_out, len(todo))
    names = _plot_names(paths)
    pages = {str(p): str(Path(report_dir) / f"{names[p]}.html") for p in todo} if report_dir else None
    if report_dir:
        Path(report_dir).mkdir(parents=True, exist_ok=True)
    scored: dict[str, Verdict] = {}
    info = model_info(run_dir) if report_dir else None
    stream = stream_verdicts(todo, run_dir, device=device, aggregation=aggregation, workers=workers,
                             batch_size=batch_size, evidence=evidence_points if report_dir else 0, pages=pages,
                             engine=engine, runtime=runtime, early_stop=early_stop,
                             depth_precision=depth_precision)
    bar = tqdm(total=len(todo), desc="detect", unit="video", disable=not progress or len(todo) < 2)
    try:
        for v, evidence in stream:
            p = Path(v.video)
            if not v.ok:
                log.warning("%s: %s: %s", p, v.status, v.reason)
            elif plot_dir:
                Path(plot_dir).mkdir(parents=True, exist_ok=True)
                plot_scores(v, Path(plot_dir) / f"{names[p]}.png")
            if report_dir and engine.kind == "local":
                write_report(v, evidence, info, Path(pages[v.video]))
            if lines:
                lines.append(v)
            scored[str(p.resolve())] = v
            bar.update(1)
    finally:
        stream.close()
        bar.close()
    verdicts = [done.get(str(p.resolve())) or scored[str(p.resolve())] for p in paths]
    if json_out:
        _write(Path(json_out), to_json(verdicts))
    if csv_out:
        fields = ["video", "status", "probability", "label", "threshold", "score", "score_threshold", "aggregation",
                  "time_points", "time_points_with_face", "seconds", "reason"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        w.writerows({"video": v.video, "status": v.status, "probability": v.probability, "label": v.label,
                     "threshold": v.threshold, "score": v.score, "score_threshold": v.score_threshold,
                     "aggregation": v.aggregation, "time_points": v.faces.get("time_points"),
                     "time_points_with_face": v.faces.get("time_points_with_face"),
                     "seconds": v.timings.get("total"), "reason": v.reason} for v in verdicts)
        _write(Path(csv_out), buf.getvalue())
    return verdicts
