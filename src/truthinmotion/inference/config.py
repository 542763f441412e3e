"""The settings of ``tim detect`` (:class:`DetectConfig`, the ``detect:`` section of a settings
file): how videos are scored; what scores them (faces, features, verdict rule) is the detector's
record. A light module, so that ``tim`` reads its options without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..backends.runtime import PRECISIONS, RUNTIMES
from ..core.config import Settings, require
from ..core.metrics import AGGREGATIONS

__all__ = ["DetectConfig"]


@dataclass(frozen=True)
class DetectConfig(Settings):
    aggregation: str = "mean"  # a face's score from its points' scores: one of core.metrics.AGGREGATIONS
    # depth and detector in ONNX Runtime (onnx) or PyTorch (torch); auto: ONNX Runtime on the CPU
    # (the same scores within 1e-5, about 2x faster), PyTorch on a GPU
    runtime: str = "auto"
    # depth at fp32 or int8 (ONNX Runtime dynamic int8 on the CPU: ~1.6x faster depth, scores
    # slightly off, benchmarks/detect.py); None: the precision the detector's depth was computed at
    depth_precision: str | None = None
    # score half of each face's points first and stop where the label is wrong with probability at
    # most this (the score is then the mean of the points scored); None: every point is scored
    early_stop: float | None = None
    workers: int = 1  # CPU processes (or Ray actors) decoding, finding faces and flow for the model stage
    batch_size: int = 64  # pictures per model pass, across videos
    evidence_points: int = 4  # on a report page: this many most and least suspicious points

    def check(self) -> None:
        require(self.aggregation in AGGREGATIONS, f"aggregation: one of {', '.join(AGGREGATIONS)}")
        require(self.runtime in RUNTIMES, f"runtime: one of {', '.join(RUNTIMES)}")
        require(self.depth_precision in (None, *PRECISIONS), f"depth_precision: {' or '.join(PRECISIONS)}")
        require(self.early_stop is None or 0.0 < self.early_stop < 1.0, "early_stop: between 0 and 1")
        require(self.workers >= 1 and self.batch_size >= 1, "workers and batch_size: at least 1")
        require(self.evidence_points >= 1, "evidence_points: at least 1")
