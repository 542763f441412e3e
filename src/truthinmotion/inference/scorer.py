"""Scoring videos with a trained detector in memory: :class:`Preparer` (CPU: faces, the crops
as the artifacts store them, flow) and :class:`Scorer` (the models: depth, detector, the
verdict rule, optional early stop and evidence)."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..core.errors import ConfigError
from ..models.inputs import encode_pictures, to_backbone
from ..faces.mtcnn import FaceDetector
from ..faces.artifact import Faces
from ..faces.config import FacesConfig
from ..faces.extract import extract_faces
from ..features.depth import DepthEstimator
from ..features.flow import FlowConfig, FlowEstimator, check_flow
from ..data.compact import stored_crops, stored_depth, stored_flow
from ..core.errors import StageError
from .explain import neutral_inputs
from ..reports.page import Evidence
from .evidence import build_evidence
from ..core.metrics import AGGREGATIONS
from .sequential import draw_seed, first_round, undecided
from ..models.loading import inference_autocast, load_detector
from ..models.detector import read_record
from ..backends.runtime import autocast_context
from .verdict import Verdict

__all__ = ["Prepared", "Preparer", "Scorer", "model_info"]

log = logging.getLogger(__name__)


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
        record = read_record(run_dir)
        return cls(record.faces, record.flow_settings(), "rgb" in record.modalities, device)

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
    """What a report says about a run directory's detector (:meth:`DetectorRecord.describe`)."""
    return read_record(run_dir).describe()


def _runtime_of(model: Any) -> str:
    """``onnxruntime int8``, ``torch bf16``, ...: what runs a loaded detector, at what precision."""
    return f"{'onnxruntime' if hasattr(model, 'session') else 'torch'} {model.record.inference.precision}"


class Scorer:
    """All the models of a run directory, built once; ``__call__(path) -> Verdict``.

    :meth:`score` does one video; :meth:`prepare` (CPU: faces, flow) and :meth:`finish` (the
    models: depth, detector) split it, so CPU workers can prepare videos while the model stage
    scores several of them at once, ``batch_size`` pictures per forward pass. Built with
    ``prepare=False`` it holds the model stage only. ``runtime`` (``auto``: ONNX Runtime on the
    CPU, :mod:`..backends.onnxrun`) runs depth and a plain fp32 detector; ``torch`` keeps them in PyTorch.
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
        record = self.model.record
        self.rule = record.rule(aggregation)
        self.faces_cfg = record.faces
        mods = record.modalities
        flow_cfg = self._flow_cfg = record.flow_settings()
        self.preparer = Preparer(self.faces_cfg, flow_cfg, "rgb" in mods, device) if prepare else None
        if flow_cfg is not None and not prepare:
            check_flow(flow_cfg)  # the workers will build it: a missing model fails here, before any video
        depth_cfg = record.depth_settings(depth_precision)
        self.depth = DepthEstimator(depth_cfg, device, runtime) if depth_cfg is not None else None
        self.data_cfg = record.data
        self.model_info = record.describe()
        self.runtime_info = {"detector": _runtime_of(self.model),
                             **({"depth": self.depth.describe()} if self.depth else {})}

    def __call__(self, path: str | Path) -> Verdict:
        return self.score(path)[0]

    def sibling(self) -> "Scorer":
        """A scorer of the same loaded detector and depth model with a preparer of its own (face
        detector and flow): one per thread of ``tim serve``, the models loaded once. Scoring keeps
        no state in the scorer, and saliency takes no gradient of the weights."""
        twin = copy.copy(self)
        if self.preparer is not None:
            twin.preparer = Preparer(self.faces_cfg, self._flow_cfg, "rgb" in self.model.record.modalities,
                                     self.device)
        return twin

    def prepare(self, path: str | Path) -> Prepared:
        if self.preparer is None:
            raise RuntimeError("this Scorer was built with prepare=False")
        return self.preparer(path)

    def score(self, path: str | Path, evidence: int = 0) -> tuple[Verdict, Evidence | None]:
        """The verdict, and with ``evidence`` > 0 what backs it: the ``evidence`` most and the 2
        least suspicious time points of the deciding face, with saliency (:mod:`..reports.page`)."""
        return self.finish([self.prepare(path)], evidence)[0]

    def finish(self, items: Sequence[Prepared], evidence: int = 0) -> list[tuple[Verdict, Evidence | None]]:
        """Verdicts of prepared videos: depth of all their crops, then the detector over all their
        pictures, ``batch_size`` at a time; a stage's time is shared out by each video's points.
        With ``early_stop``, half of each face's points first, then the rest of the videos that
        are still undecided (:mod:`.sequential`).

        A failure while scoring a group is narrowed down to the video that causes it: the group
        is scored again one video at a time, and the video that still fails gets status ``error``
        with the reason, while the others get their verdicts."""
        try:
            return self._finish(items, evidence)
        except (ConfigError, KeyboardInterrupt, MemoryError):
            raise
        except Exception as err:  # noqa: BLE001 - one video must not cost the others their verdicts
            if len(items) > 1:
                return [out for p in items for out in self.finish([p], evidence)]
            (p,) = items
            log.warning("%s: the model stage failed: %s: %s", p.video, type(err).__name__, err, exc_info=True)
            verdict = self._failed(p)
            verdict.status, verdict.reason = "error", f"{type(err).__name__}: {err}"
            return [(verdict, None)]

    def _finish(self, items: Sequence[Prepared], evidence: int = 0) -> list[tuple[Verdict, Evidence | None]]:
        ok = [p for p in items if p.status == "ok"]
        timings = [dict(p.timings) for p in ok]
        if self.early_stop is None or not ok:
            rows = [np.arange(p.points) for p in ok]
            probs, pictures, inputs = self._score(ok, rows, timings)
        else:
            if evidence:
                raise ConfigError("--early-stop leaves points unscored, which evidence needs: use one or the other")
            counts = [[int(n) for n in p.valid.sum(1)] for p in ok]
            seeds = [draw_seed() for _ in ok]
            rows = [first_round(c, s) for c, s in zip(counts, seeds)]
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
            if self.early_stop is not None and results[id(p)][0].ok:
                results[id(p)][0].early_stop["seed"] = seeds[j]
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
        # A video with no rows (decided in the first round of early stop) has nothing to encode.
        pictures = [encode_pictures(a, self.model.cfg.modalities, self.data_cfg, self.faces_cfg.box_scale) if n else {}
                    for a, n in zip(arrays, counts)]
        inputs = [to_backbone(pics, self.model.preprocess) if pics else {} for pics in pictures]
        joined = {m: torch.cat([x[m] for x in inputs if x]) for m in self.model.cfg.modalities}
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
