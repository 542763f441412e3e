"""The kinds of pseudo-fake: a real video's sampled frames, its face blended from a transformed
copy of itself.

A *blend* follows Self-Blended Images (Shiohara & Yamasaki, "Detecting Deepfakes with
Self-Blended Images", CVPR 2022): the source face is the frame itself with colour, sharpness,
scale and offset jitter, blended back through the face region (an ellipse on the face box, its
outline deformed by random low harmonics, its edge feathered). The kinds differ in time:

- ``blend``: one blend for the whole clip: boundary and colour traces, smooth motion.
- ``blend-drift``: the blend's offset, scale and mask size drift over the frames, slowly (a swing
  of a few frames' period) or in jumps (video-level blending's "facial feature drift", StA and
  FakeSTormer, CVPR 2025 / ICCV 2025).
- ``frame-wise``: an independent blend in every frame, as frame-by-frame generators leave.
- ``timing``: the face region taken from a neighbouring frame (resampled timing of lip-sync).

Three frame-wise families of ``benchmarks/learning.py`` are kinds too (made on request): ``warp``
(an independent small affine warp of the face each frame: about 1.5 px, 3%, 1.5 degrees),
``flicker`` (an independent colour gain of about 6% per channel each frame) and ``seam`` (the face
shifted 1.5 px through a mask whose size changes each frame).

Each kind is one function ``(frames, points, boxes, cfg, rng) -> (frames, record)`` (see
:func:`make_twin`); frames are BGR ``[H, W, 3]`` uint8 keyed by frame index, boxes ``[K, 4]`` the
face box of each time point in those frames' pixels. A pixel is changed only where its kind's
mask is above 0: beyond the feathered edge the twin is its source, to the bit.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import cv2
import numpy as np

from .config import ALL_KINDS, FAMILIES, SynthConfig

__all__ = ["KIND_FUNCTIONS", "blend_frame", "draw_blend", "face_mask", "frames_needed", "make_twin"]

log = logging.getLogger(__name__)

_HARMONICS = (2, 3, 4, 5)  # the outline's deformation: low harmonics keep it a plausible face region


def draw_blend(cfg: SynthConfig, rng: np.random.Generator) -> dict[str, Any]:
    """The parameters of one blend, drawn (plain numbers, so a twin's record shows them)."""
    return {
        "gain": (1 + rng.normal(0, cfg.colour, 3)).round(4).tolist(),
        "bias": rng.normal(0, cfg.brightness, 3).round(3).tolist(),
        "sharp": round(float(rng.normal(0, cfg.sharpness)), 4),
        "scale": round(float(1 + rng.normal(0, cfg.scale)), 4),
        "shift": rng.normal(0, cfg.shift, 2).round(4).tolist(),
        "grow": round(float(rng.uniform(*cfg.grow)), 4),
        "outline": [[round(float(rng.normal(0, cfg.elastic / 2)), 4), round(float(rng.uniform(0, 2 * np.pi)), 4)]
                    for _ in _HARMONICS],
    }


def face_mask(shape: tuple[int, int], box: np.ndarray, grow: float, outline: list, feather: float) -> np.ndarray:
    """The blending mask ``[H, W]`` float32 in 0..1: an ellipse over ``box`` (x1, y1, x2, y2),
    ``grow`` times its size, outline deformed by ``outline`` ([amplitude, phase] per harmonic),
    edge feathered by a Gaussian of sd ``feather`` times the box's side. Exactly 0 beyond the
    feather's reach (a finite kernel)."""
    h, w = shape
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    ax, ay = 0.5 * (box[2] - box[0]) * grow, 0.55 * (box[3] - box[1]) * grow
    theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    r = 1 + sum(a * np.cos(k * theta + ph) for k, (a, ph) in zip(_HARMONICS, outline))
    pts = np.stack([cx + ax * r * np.cos(theta), cy + ay * r * np.sin(theta)], 1)
    m = np.zeros((h, w), np.float32)
    cv2.fillPoly(m, [np.round(pts * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
    sd = max(0.5, feather * max(box[2] - box[0], box[3] - box[1]))
    k = int(2 * round(3 * sd) + 1)
    return cv2.GaussianBlur(m, (k, k), sd, borderType=cv2.BORDER_CONSTANT)


def _roi(shape: tuple[int, int], box: np.ndarray, reach: float) -> tuple[int, int, int, int]:
    """The part of the frame a blend on ``box`` can touch: the box grown by ``reach`` of its side."""
    side = max(box[2] - box[0], box[3] - box[1])
    x0, y0 = int(max(0, np.floor(box[0] - reach * side))), int(max(0, np.floor(box[1] - reach * side)))
    x1, y1 = int(min(shape[1], np.ceil(box[2] + reach * side))), int(min(shape[0], np.ceil(box[3] + reach * side)))
    return x0, y0, x1, y1


def _reach(cfg: SynthConfig, p: dict[str, Any]) -> float:
    """How far beyond the box (share of its side) a mask can reach: its size, outline and feather."""
    return 0.6 * p["grow"] * (1 + sum(abs(a) for a, _ in p["outline"])) + 3.5 * cfg.feather


def blend_frame(frame: np.ndarray, box: np.ndarray, p: dict[str, Any], cfg: SynthConfig,
                source: np.ndarray | None = None) -> tuple[np.ndarray, tuple[int, int, np.ndarray]]:
    """(the frame with its face blended, (x0, y0, the mask of the part it touched)): the source
    is ``source`` (another frame, as ``timing`` takes) or the frame itself jittered by ``p``
    (:func:`draw_blend`)."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = _roi((h, w), box, _reach(cfg, p) + abs(p["scale"] - 1) + max(map(abs, p["shift"])) + 0.1)
    sub = frame[y0:y1, x0:x1].astype(np.float32)
    local = np.asarray(box, np.float64) - [x0, y0, x0, y0]
    mask = face_mask(sub.shape[:2], local, p["grow"], p["outline"], cfg.feather)
    if source is not None:
        src = source[y0:y1, x0:x1].astype(np.float32)
    else:
        side = max(box[2] - box[0], box[3] - box[1])
        centre = ((local[0] + local[2]) / 2, (local[1] + local[3]) / 2)
        m = cv2.getRotationMatrix2D(centre, p.get("angle", 0.0), p["scale"])
        m[:, 2] += np.asarray(p["shift"]) * side
        src = cv2.warpAffine(sub, m, sub.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if p["sharp"]:
            sd = max(0.5, 0.01 * side)
            src = src + p["sharp"] * (src - cv2.GaussianBlur(src, (0, 0), sd))
        src = src * np.float32(p["gain"]) + np.float32(p["bias"])
    out = frame.copy()
    out[y0:y1, x0:x1] = np.clip(np.round(sub + mask[..., None] * (src - sub)), 0, 255).astype(np.uint8)
    return out, (x0, y0, mask)


def _pairs(points: np.ndarray) -> list[tuple[int, int]]:
    """(time point index, frame index) of both frames of every pair."""
    return [(i, int(t) + j) for i, t in enumerate(points) for j in (0, 1)]


def _blend(frames, points, boxes, cfg, rng, per_frame: Callable[[int, int], dict[str, Any]], record) -> tuple:
    out, masks = dict(frames), {}
    for i, f in _pairs(points):
        if np.isnan(boxes[i, 0]):
            continue
        out[f], masks[f] = blend_frame(frames[f], boxes[i], per_frame(i, f), cfg)
    return out, masks, record


def _kind_blend(frames, points, boxes, cfg, rng):
    p = draw_blend(cfg, rng)
    return _blend(frames, points, boxes, cfg, rng, lambda i, f: p, {"blend": p})


def _kind_drift(frames, points, boxes, cfg, rng):
    p = draw_blend(cfg, rng)
    n = int(points.max()) + 2
    mode = "slow" if rng.random() < 0.5 else "jumps"
    if mode == "slow":  # a smooth swing of offset, scale and size, each of its own period and phase
        period = rng.uniform(*cfg.drift_period, 4)
        phase = rng.uniform(0, 2 * np.pi, 4)
        swing = cfg.drift * np.sin(2 * np.pi * np.arange(n)[:, None] / period + phase)  # [n, 4]
        record = {"period": period.round(3).tolist(), "phase": phase.round(3).tolist()}
    else:  # piecewise constant: a jump of each at some frames
        steps = rng.normal(0, cfg.jump, (n, 4)) * (rng.random((n, 1)) < cfg.jump_rate)
        swing = np.cumsum(steps, 0)
        record = {"jumps": int((np.abs(steps).sum(1) > 0).sum())}

    def at(i: int, f: int) -> dict[str, Any]:
        d = swing[f]
        return {**p, "shift": [p["shift"][0] + d[0], p["shift"][1] + d[1]], "scale": p["scale"] + d[2],
                "grow": float(np.clip(p["grow"] * (1 + d[3]), 0.3, 2.0))}

    return _blend(frames, points, boxes, cfg, rng, at, {"blend": p, "mode": mode, **record})


def _kind_framewise(frames, points, boxes, cfg, rng):
    drawn = {f: draw_blend(cfg, rng) for _, f in _pairs(points)}
    return _blend(frames, points, boxes, cfg, rng, lambda i, f: drawn[f], {"blends": len(drawn)})


def _timing_offsets(f: int, last: int, cfg: SynthConfig, rng: np.random.Generator) -> int:
    """The frame whose face frame ``f`` shows: ``f + d`` for a d of 1..timing frames either way,
    turned back at the video's ends so it is never ``f`` itself."""
    d = int(rng.integers(1, cfg.timing + 1)) * (1 if rng.random() < 0.5 else -1)
    g = f + d if 0 <= f + d <= last else f - d
    return int(np.clip(g, 0, last))


def _kind_timing(frames, points, boxes, cfg, rng, last: int | None = None):
    p = draw_blend(cfg, rng)  # only the mask's geometry is used: the source is another frame as it is
    last = max(frames) if last is None else last
    out, masks, taken = dict(frames), {}, {}
    for i, f in _pairs(points):
        g = taken.setdefault(f, _timing_offsets(f, last, cfg, rng))
        if np.isnan(boxes[i, 0]):
            continue
        out[f], masks[f] = blend_frame(frames[f], boxes[i], p, cfg, source=frames[g])
    return out, masks, {"mask": {k: p[k] for k in ("grow", "outline")}, "from": {str(f): g for f, g in taken.items()}}


def _plain(cfg: SynthConfig, rng: np.random.Generator) -> dict[str, Any]:
    """A blend that changes nothing but what a family sets: the face box's ellipse, unjittered."""
    return {**draw_blend(cfg, rng), "gain": [1.0] * 3, "bias": [0.0] * 3, "sharp": 0.0, "scale": 1.0,
            "shift": [0.0, 0.0], "grow": 1.0, "outline": [[0.0, 0.0]] * len(_HARMONICS)}


def _family(name: str):
    def kind(frames, points, boxes, cfg, rng):
        side = {f: max(boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]) for i, f in _pairs(points)
                if not np.isnan(boxes[i, 0])}
        drawn = {}
        for _, f in _pairs(points):
            p = _plain(cfg, rng)
            px = 1.0 / side.get(f, 1.0)  # one pixel as a share of the face box
            if name == "warp":
                p.update(angle=float(rng.normal(0, 1.5)), scale=float(1 + rng.normal(0, 0.03)),
                         shift=(rng.normal(0, 1.5, 2) * px).tolist())
            elif name == "flicker":
                p.update(gain=(1 + rng.normal(0, 0.06, 3)).tolist())
            else:  # seam
                p.update(shift=[1.5 * px, 0.0], grow=float(1 + rng.normal(0, 0.06)))
            drawn[f] = p
        return _blend(frames, points, boxes, cfg, rng, lambda i, f: drawn[f], {"family": name, "frames": len(drawn)})
    return kind


KIND_FUNCTIONS = {"blend": _kind_blend, "blend-drift": _kind_drift, "frame-wise": _kind_framewise,
                  "timing": _kind_timing, **{name: _family(name) for name in FAMILIES}}
assert set(KIND_FUNCTIONS) == set(ALL_KINDS)


def frames_needed(kind: str, points: np.ndarray, frames: int, cfg: SynthConfig) -> np.ndarray:
    """The frame indices a kind reads: both frames of every pair, and for ``timing`` every frame
    its faces may come from."""
    pairs = np.concatenate([points, points + 1])
    if kind == "timing":
        pairs = np.concatenate([pairs + d for d in range(-cfg.timing, cfg.timing + 1)])
    return np.unique(np.clip(pairs, 0, frames - 1))


def make_twin(kind: str, frames: dict[int, np.ndarray], points: np.ndarray, boxes: np.ndarray, cfg: SynthConfig,
              rng: np.random.Generator, last: int | None = None, masks: bool = False,
              ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], dict[str, Any]]:
    """(the twin's frames, the mask ``[H, W]`` of every changed frame if ``masks`` (else none),
    what was drawn): ``frames`` holds every frame of :func:`frames_needed`; only both frames of each
    pair of ``points`` are changed, with ``boxes [K, 4]`` (NaN: no face at that point, left as it
    is). ``last`` is the video's last frame index (``timing`` turns back there)."""
    fn = KIND_FUNCTIONS[kind]
    out, parts, record = fn(frames, points, boxes, cfg, rng, last) if kind == "timing" else fn(
        frames, points, boxes, cfg, rng)
    full = {}
    for f, (x0, y0, m) in parts.items() if masks else ():
        full[f] = np.zeros(frames[f].shape[:2], np.float32)
        full[f][y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
    return out, full, record
