"""What backs a verdict: the most and least suspicious time points of the deciding face, with
the pictures the detector saw and saliency (:mod:`.explain`), as arrays for pages, the
service and notebooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .explain import explain
from ..media.video import read_frames
from ..reports.page import Evidence

__all__ = ["build_evidence"]


def build_evidence(
    path: str | Path, model: Any, faces: Any, rows: np.ndarray, points: np.ndarray, probs: np.ndarray,
    crops: np.ndarray, pictures: dict[str, np.ndarray], inputs: dict[str, Any], most: int, device: str, amp: str,
    baseline: dict[str, Any] | None = None,
) -> Evidence:
    """Evidence for the face whose scored rows (among every face's) are ``rows``, at time points
    ``points``: its ``most`` highest-scoring points and its 2 lowest."""
    order = np.argsort(-probs[rows], kind="stable")
    top = list(order[:most])
    low = [i for i in order[::-1][:2] if i not in top]
    chosen = np.array(top + low, dtype=int)
    sel = rows[chosen]
    size = crops.shape[2]
    saliency, note = {}, ""
    if isinstance(model, torch.nn.Module) or getattr(model, "source", None) is not None:
        saliency = explain(model, {m: x[sel] for m, x in inputs.items()}, size, device, amp, baseline)
    else:
        note = (f"no saliency: this detector runs in ONNX Runtime ({model.record.inference.method}), which has no "
                "gradients, and the PyTorch detector it was made from "
                f"({Path(model.record.inference.source).name if model.record.inference.source else 'not recorded'}) "
                "is not at hand")
    first = int(points[chosen[0]])
    t = int(faces.frame_index[first])
    frame = next((f for _, f in read_frames(path, [t])), None)
    boxes = {j: [float(c) for c in tr.boxes[first]] for j, tr in enumerate(faces.tracks) if tr.valid[first]}
    return Evidence(points[chosen], probs[sel], ["most suspicious"] * len(top) + ["least suspicious"] * len(low),
                    crops[sel, 0], {m: p[sel] for m, p in pictures.items()}, saliency, frame, first, boxes, note)
