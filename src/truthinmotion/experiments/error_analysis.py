"""Evaluation's error analysis: the most confidently wrong videos, with the pictures the
detector saw and where it looked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..inference.explain import explain
from ..reports.page import overlay

__all__ = ["error_analysis"]


def error_analysis(out: Path, model: Any, ds: Any, pred: dict[str, np.ndarray], videos: list[dict[str, Any]],
                   threshold: float, box_scale: float = 1.3, per_kind: int = 3) -> list[str]:
    """Markdown for evaluate's report: the most confidently wrong videos (false fakes: real
    videos scored highest above the threshold; missed fakes: fakes scored lowest below it), each
    with the panels of its worst point (the highest-scoring point of a real video, the lowest of a
    fake), written as PNG files under ``out/errors``."""
    import torch

    from ..models.inputs import encode_pictures, to_backbone
    from ..inference.explain import neutral_inputs
    from ..faces.artifact import load_crops
    from ..core.io import WorkDir

    wrong_real = sorted((v for v in videos if v["label"] == 0 and v["score"] >= threshold), key=lambda v: -v["score"])
    wrong_fake = sorted((v for v in videos if v["label"] == 1 and v["score"] < threshold), key=lambda v: v["score"])
    lines = ["", "## Error analysis", ""]
    if not wrong_real and not wrong_fake:
        return lines + ["No test video is on the wrong side of the threshold."]
    can_explain = isinstance(model, torch.nn.Module)
    if not can_explain:
        lines.append("(An ONNX detector has no gradients: panels without saliency.)")
    mods = model.cfg.modalities
    base = neutral_inputs(mods, ds.cfg, model.preprocess, ds.pre.size, box_scale) if can_explain else None
    folder = out / "errors"
    folder.mkdir(parents=True, exist_ok=True)
    for title, chosen in (("False fakes (real videos called fake)", wrong_real[:per_kind]),
                          ("Missed fakes (fakes called real)", wrong_fake[:per_kind])):
        if not chosen:
            continue
        lines += [f"### {title}", ""]
        for v in chosen:
            rows = np.flatnonzero(np.array([ds.videos[i].video_id == v["video_id"] for i in pred["video"]]))
            worst = rows[np.argmax(pred["prob"][rows])] if v["label"] == 0 else rows[np.argmin(pred["prob"][rows])]
            item, point = int(pred["video"][worst]), int(pred["point"][worst])
            pics = encode_pictures(ds.load_arrays(item, [point]), mods, ds.cfg, box_scale)
            crop = load_crops(WorkDir(ds.work.root).faces(v["video_id"]), ds.videos[item].track, [point])[0]
            size = crop.shape[0]
            panels = [("crop", crop)] + [(m, pics[m][0]) for m in mods if m != "rgb"]
            if can_explain:
                sal = explain(model, to_backbone(pics, model.preprocess), size, baseline=base)
                panels += [(f"{m}-saliency", overlay(crop, sal[m][0])) for m in mods]
            names = []
            for name, img in panels:
                file = folder / f"{v['video_id']}-{name}.png"
                cv2.imwrite(str(file), cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR))
                names.append(f"![{name}](errors/{file.name})")
            lines += [f"- `{v['video_id']}` ({v['method']}): score {v['score']:.3f}, probability "
                      f"{v['probability']:.3f}; worst point {point} (score {pred['prob'][worst]:.3f}, face "
                      f"{ds.videos[item].track})", "", "  " + " ".join(names), ""]
    return lines
