"""How raw flow and depth become the pictures a detector sees (applied at load time).

Flow ``[N, S, S, 2]`` (pixels of the crop between frames t and t+1):

- ``hsv-per-picture`` (the study's): hue = direction, value = magnitude / the picture's own
  maximum. The sub-pixel noise of a still face and a fast head turn come out equally bright:
  the magnitude is thrown away.
- ``hsv-fixed``: the same with value = magnitude / ``flow_max`` pixels, clipped: a still field
  stays black, 1 and 4 pixels of motion differ.
- ``polar-log``: channels (dx, dy, log-magnitude), each with a fixed normalisation:
  ``(clip(dx / flow_max, -1, 1) + 1) / 2``, the same for dy, and
  ``log1p(|flow|) / log1p(flow_max)`` clipped to 1. Unlike HSV, direction is not lost where
  the motion is small (hue is undefined at zero), and magnitude is compressed, not clipped.

``flow_relative`` subtracts the head's motion first: the median flow of the ring of the crop
outside the face box (the crop is ``box_scale`` times the box, so the ring is the outer
``(1 - 1/box_scale) / 2`` of each side), so the picture shows the face moving against its own
head and not the camera or the head as a whole.

Depth ``[N, S, S]`` (relative, larger = nearer):

- ``crop-minmax`` (the study's): min-max over the whole crop; at the frame's edge the crop is
  zero-padded, and the padding's depth then decides the scale.
- ``face-minmax``: min-max over the face box (the crop's centre ``1/box_scale``), clipped: the
  face uses the full range whatever the borders hold.
- ``fixed``: value = depth / ``depth_max``, clipped to 0..1.

Each gives uint8 ``[N, S, S, 3]``; depth is grey copied to 3 channels.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..core.errors import ConfigError

__all__ = ["DEPTH_ENCODINGS", "FLOW_ENCODINGS", "encode_depth", "encode_flow", "face_slice", "flow_to_rgb",
           "relative_motion"]

FLOW_ENCODINGS = ("hsv-per-picture", "hsv-fixed", "polar-log")
DEPTH_ENCODINGS = ("crop-minmax", "face-minmax", "fixed")


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Encode flow ``[..., H, W, 2]`` as RGB uint8 ``[..., H, W, 3]`` through HSV.

    Hue is the direction, measured counter-clockwise as seen on screen (y points down in images,
    so up is -dy): right 0°, up 90°, left 180°, down 270°, so those four come in increasing hue.
    Saturation is full. Value is the magnitude divided by ``max_magnitude`` (pixels), clipped to
    1; ``None`` uses each picture's own maximum (per-clip scaling). Zero motion is black.
    """
    flow = np.asarray(flow, np.float32)
    dx, dy = flow[..., 0], flow[..., 1]
    mag = np.hypot(dx, dy)
    angle = np.degrees(np.arctan2(-dy, dx)) % 360.0
    if max_magnitude is None:
        peak = mag.reshape(*mag.shape[:-2], -1).max(-1)[..., None, None] if mag.ndim >= 2 else mag
        scale = np.where(peak > 0, peak, 1.0)
    else:
        if max_magnitude <= 0:
            raise ConfigError("max_magnitude: must be positive")
        scale = max_magnitude
    value = np.clip(mag / scale, 0.0, 1.0)
    hsv = np.stack([angle / 2.0, np.full_like(mag, 255.0), value * 255.0], -1)  # OpenCV: H in [0, 180)
    hsv = np.round(hsv).astype(np.uint8)
    hsv[..., 0] %= 180
    flat = hsv.reshape(-1, 1, 3)
    return cv2.cvtColor(flat, cv2.COLOR_HSV2RGB).reshape(hsv.shape)


def face_slice(side: int, box_scale: float) -> slice:
    """Rows (and columns) of a ``side``-pixel crop that hold the face box: its centre 1/box_scale."""
    inner = int(round(side / box_scale))
    start = (side - inner) // 2
    return slice(start, start + inner)


def relative_motion(flow: np.ndarray, box_scale: float = 1.3) -> np.ndarray:
    """Flow minus the median flow of the ring outside the face box (the head and background
    around the face), per picture: a uniform pan becomes zero."""
    flow = np.asarray(flow, np.float32)
    side = flow.shape[-2]
    ring = np.ones(flow.shape[-3:-1], bool)
    inner = face_slice(side, box_scale)
    ring[inner, inner] = False
    head = np.median(flow[..., ring, :], axis=-2)  # [N, 2]
    return flow - head[..., None, None, :]


def encode_flow(flow: np.ndarray, encoding: str, flow_max: float | None = None, relative: bool = False,
                box_scale: float = 1.3) -> np.ndarray:
    """Flow ``[N, S, S, 2]`` as uint8 pictures ``[N, S, S, 3]`` (see the module docstring)."""
    flow = np.asarray(flow, np.float32)
    if relative:
        flow = relative_motion(flow, box_scale)
    if encoding == "hsv-per-picture":
        return flow_to_rgb(flow, None)
    if flow_max is None or flow_max <= 0:
        raise ConfigError(f"flow encoding {encoding}: needs flow_max, a positive scale in pixels")
    if encoding == "hsv-fixed":
        return flow_to_rgb(flow, flow_max)
    if encoding == "polar-log":
        dx = (np.clip(flow[..., 0] / flow_max, -1, 1) + 1) / 2
        dy = (np.clip(flow[..., 1] / flow_max, -1, 1) + 1) / 2
        mag = np.clip(np.log1p(np.hypot(flow[..., 0], flow[..., 1])) / np.log1p(flow_max), 0, 1)
        return np.round(np.stack([dx, dy, mag], -1) * 255).astype(np.uint8)
    raise ConfigError(f"flow_encoding: {encoding!r} not one of {', '.join(FLOW_ENCODINGS)}")


def encode_depth(depth: np.ndarray, encoding: str, depth_max: float | None = None, box_scale: float = 1.3) -> np.ndarray:
    """Depth ``[N, S, S]`` as grey uint8 pictures ``[N, S, S, 3]`` (see the module docstring).

    A flat region (no depth variation) becomes black rather than dividing by zero."""
    d = np.asarray(depth, np.float32)
    if encoding == "fixed":
        if depth_max is None or depth_max <= 0:
            raise ConfigError("depth encoding fixed: needs depth_max, a positive value")
        grey = np.clip(d / depth_max, 0, 1)
    elif encoding in ("crop-minmax", "face-minmax"):
        region = d
        if encoding == "face-minmax":
            inner = face_slice(d.shape[-1], box_scale)
            region = d[..., inner, inner]
        lo = region.min(axis=(-2, -1), keepdims=True)
        span = region.max(axis=(-2, -1), keepdims=True) - lo
        grey = np.where(span > 0, np.clip((d - lo) / np.where(span > 0, span, 1.0), 0, 1), 0.0)
    else:
        raise ConfigError(f"depth_encoding: {encoding!r} not one of {', '.join(DEPTH_ENCODINGS)}")
    grey = np.round(grey * 255.0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
