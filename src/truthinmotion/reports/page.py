"""Evidence for a verdict, and the page a person reads: ``tim detect --report DIR``.

:func:`build_evidence` collects, for the face that decided a verdict, its most and least
suspicious time points: the face crop, each modality's picture exactly as the detector saw it
(before the resize to the backbone's input), and a saliency map per modality
(:func:`truthinmotion.inference.explain.explain`), plus a frame with every face's box. It returns arrays,
for the service and notebooks. :func:`write_report` turns a verdict and its evidence into one
self-contained HTML file (images embedded as PNG data), so the page travels as one file.
"""

from __future__ import annotations

import base64
import html
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..core.io import atomic_write_text

__all__ = ["Evidence", "overlay", "write_report"]


@dataclass
class Evidence:
    """What backs a verdict; P chosen time points of the deciding face, crop side S."""

    points: np.ndarray  # [P] time point indices (into the verdict's frame_index)
    scores: np.ndarray  # [P] the detector's score at each
    kinds: list[str]  # "most suspicious" | "least suspicious", per point
    crops: np.ndarray  # [P, S, S, 3] uint8 RGB: the face crop of frame t
    pictures: dict[str, np.ndarray]  # modality -> [P, S, S, 3] uint8, as the detector saw them
    saliency: dict[str, np.ndarray]  # modality -> [P, S, S] float32, each map sums to 1; {}: none
    frame: np.ndarray | None = None  # [H, W, 3] uint8 RGB at the most suspicious point
    frame_point: int = 0  # its time point
    boxes: dict[int, list[float]] = field(default_factory=dict)  # track -> box in that frame
    note: str = ""  # why something is missing (saliency of a detector without gradients)


def _png(img: np.ndarray) -> str:
    """An RGB uint8 image as an <img> data URI."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("cannot encode a PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def overlay(crop: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """The saliency map as a heat map over the crop (scaled to its own maximum for display)."""
    peak = float(saliency.max())
    heat = np.uint8(np.round(255 * saliency / peak)) if peak > 0 else np.zeros(saliency.shape, np.uint8)
    color = cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return np.uint8(np.round(0.5 * crop + 0.5 * color))


def _frame_with_boxes(ev: Evidence, tracks: list[dict[str, Any]]) -> np.ndarray:
    """The frame, shown 480 to 960 pixels wide, with every face's box and probability; a box is
    red where that face is labelled fake at the detector's threshold (not at p = 0.5)."""
    img = cv2.cvtColor(ev.frame, cv2.COLOR_RGB2BGR)
    scale = min(max(480 / img.shape[1], 1.0), 960 / max(img.shape[:2]))
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    prob = {t["track"]: t["probability"] for t in tracks}
    fake = {t["track"]: t["label"] == "fake" for t in tracks}
    font, thick = 0.5, 2
    for j, box in ev.boxes.items():
        x1, y1, x2, y2 = (int(round(c * scale)) for c in box)
        colour = (0, 0, 255) if fake.get(j, False) else (0, 160, 0)
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, thick)
        text = f"face {j}: p={prob.get(j, float('nan')):.2f}"
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, 1)
        x = min(max(0, x1), img.shape[1] - w - 2)
        y = y1 - 6 if y1 - 6 - h >= 0 else y2 + h + 6
        cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, font, colour, 1, cv2.LINE_AA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_report(verdict: Any, evidence: Evidence | None, model_info: dict[str, Any], out: Path) -> Path:
    """One self-contained HTML page for a verdict (``out``: the .html file)."""
    from .plots import plot_scores

    e = html.escape
    fps = verdict.faces.get("fps") or 25.0
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(Path(verdict.video).name)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px} table{border-collapse:collapse}"
             " td,th{border:1px solid #ccc;padding:3px 8px;text-align:left} figure{display:inline-block;"
             "margin:4px;text-align:center} figcaption{font-size:12px} .fake{color:#b00} .real{color:#070}</style>",
             "</head><body>", f"<h1>{e(Path(verdict.video).name)}</h1>"]
    if not verdict.ok:
        parts.append(f"<p>No verdict: <b>{e(verdict.status)}</b>: {e(verdict.reason)}</p></body></html>")
        atomic_write_text(out, "\n".join(parts))
        return out
    parts.append(
        f"<p class='{e(verdict.label)}' style='font-size:1.4em'>Probability that a face was manipulated: "
        f"<b>{verdict.probability:.3f}</b>, <b>{e(verdict.label)}</b> (threshold {verdict.threshold:.3f})</p>")
    rows = [("score", f"{verdict.score:.4f} ({e(verdict.aggregation)} of the deciding face's time points; "
                      f"threshold {verdict.score_threshold:.4f})"),
            ("calibration", e(verdict.calibration)), ("deciding face", str(verdict.track))]
    rows += [(f"face {t['track']}", f"probability {t['probability']:.3f} ({e(t['label'])}), "
                                    f"{t['time_points']} time points, box {t['box']}") for t in verdict.tracks]
    det, data = model_info.get("detector", {}), model_info.get("data", {})
    weights = model_info.get("backbone_weights", {})
    rows += [("detector", f"{e(str(det.get('backbone')))} on {e(str(det.get('modality')))}; backbone weights: "
                          f"<b>{e(str(weights.get('init', 'unknown')))}</b>"),
             ("encodings", e(", ".join(f"{k}={data.get(k)}" for k in ("flow_encoding", "flow_max", "flow_relative",
                                                                          "depth_encoding") if k in data))),
             ("inference", e(str(model_info.get("inference", {}).get("method", "fp32")))),
             ("trained on fakes", e(f"{model_info.get('fakes') or 'dataset (not recorded)'}: "
                                    f"{', '.join(model_info.get('fake_methods') or ()) or '?'}"))]
    parts.append("<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>")
    with tempfile.TemporaryDirectory() as tmp:
        png = plot_scores(verdict, Path(tmp) / "scores.png")
        plot = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
    parts.append(f"<h2>Score over time</h2><img alt='score over time' src='{_png(plot)}'>")
    if evidence is not None:
        if evidence.frame is not None:
            t = verdict.frame_index[evidence.frame_point] / fps
            parts.append(f"<h2>Faces at {t:.2f} s (the most suspicious point)</h2>"
                         f"<img alt='frame with faces' src='{_png(_frame_with_boxes(evidence, verdict.tracks))}'>")
        mods = list(evidence.pictures)
        parts.append(
            "<h2>Time points</h2><p>Each row: the face crop of frame t, each picture exactly as the "
            "detector saw it, and where it looked: saliency (gradient x (input - a picture of nothing "
            "happening): how strongly the fake score depends on each pixel of that picture where it "
            "differs from a still face, red most) over the crop. Saliency shows where the score is "
            "sensitive, not proof that an artefact is there.</p>")
        if evidence.note:
            parts.append(f"<p class='note'><b>Note:</b> {e(evidence.note)}</p>")
        for i, point in enumerate(evidence.points):
            t = verdict.frame_index[int(point)] / fps
            cells = [("face crop", evidence.crops[i])]
            cells += [(f"{m} (as seen)", evidence.pictures[m][i]) for m in mods if m != "rgb"]
            cells += [(f"{m} saliency", overlay(evidence.crops[i], evidence.saliency[m][i]))
                      for m in mods if m in evidence.saliency]
            figs = "".join(f"<figure><img alt='{e(c)}' src='{_png(img)}'><figcaption>{e(c)}</figcaption></figure>"
                           for c, img in cells)
            parts.append(f"<h3>{e(evidence.kinds[i])}: t = {t:.2f} s, score {evidence.scores[i]:.3f}</h3>{figs}")
    parts.append("<h2>Time per stage</h2><table>" + "".join(
        f"<tr><th>{e(k)}</th><td>{v:.3f} s</td></tr>" for k, v in verdict.timings.items()) + "</table>")
    parts.append("</body></html>")
    atomic_write_text(out, "\n".join(parts))
    return out


