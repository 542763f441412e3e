"""Compact artifacts: every picture stored as its own compressed image, decoded one at a time.

An artifact keeps a stack of pictures (``[T, K, ...]``: faces x time points) as one byte array
``<name>_data`` and the end offsets ``<name>_ends [T*K]``: picture ``i`` is the bytes between
``ends[i-1]`` and ``ends[i]``, an empty one is a point without a face and decodes to zeros.
A reader decodes only the pictures it needs (training reads a few points of each video).

Choices, measured by ``python benchmarks/artifacts.py`` on the shared FF++ videos:

- **Crops**: JPEG at quality 95 (OpenCV's libjpeg). 8x smaller than the zlib'd arrays (0.84
  MB a video at K=32); the flow computed from them moves by 0.020 px on average. JPEG at 90:
  0.60 MB, 0.033 px; WebP at 95 and 90: 0.52 and 0.35 MB, but 0.060 and 0.090 px and 15x the
  encoding time; PNG (lossless): 3.96 MB and 4x JPEG's decoding time.
- **Flow**: fixed point, 1/16 px (:data:`FLOW_STEP`), dx beside dy in one 16-bit PNG per
  picture. Rounding each component to the nearest step bounds the end-point error against the
  float32 flow by ``FLOW_STEP / sqrt(2)`` = 0.044 px (mean about 0.024 px); the range is
  +-2048 px. PNG's row filters predict the smooth field, so it compresses far better than
  the float16 array did; 1/32 px cost about a third more bytes. Farnebäck's own error is
  larger than either step, and the ``hsv-fixed`` picture's value step is 1/64 px.
- **Depth**: per picture its minimum and maximum (float32) and the map between them in 12 bits
  (a 16-bit PNG): the error is at most 1/8190 of the picture's range. The face box, where
  ``face-minmax`` spreads its 256 grey levels, spans a good part of the crop's range, so its
  pictures barely change; 16 bits cost a tenth more bytes for noise.

PNGs are written with zlib's run-length strategy: as small as level 6 of the default one at a
quarter of its time (level 9 took 40 times as long).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

__all__ = [
    "CROP_FORMATS",
    "DEPTH_LEVELS",
    "FLOW_STEP",
    "unpack_crops",
    "unpack_depth",
    "unpack_flow",
    "pack_crops",
    "pack_depth",
    "pack_flow",
    "pack_blobs",
    "picture_bytes",
    "stored_crops",
    "stored_depth",
    "stored_flow",
]

CROP_FORMATS = ("jpeg", "png", "raw")  # raw: the uint8 array as it is (zlib'd with the artifact)
FLOW_STEP = 1 / 16  # pixels per unit of the stored flow
DEPTH_LEVELS = 4095  # depth is stored in 12 bits between the picture's minimum and maximum
_OFFSET = 32768  # signed flow stored as uint16 PNG samples
_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 9, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]


def pack_blobs(blobs: Sequence[bytes | np.ndarray], name: str) -> dict[str, np.ndarray]:
    """``{name_data, name_ends}`` of encoded pictures (see the module docstring)."""
    sizes = np.array([len(b) for b in blobs], np.int64)
    data = np.frombuffer(b"".join(bytes(b) for b in blobs), np.uint8)
    return {f"{name}_data": data, f"{name}_ends": np.cumsum(sizes)}


def picture_bytes(arrays: dict[str, np.ndarray], name: str, i: int) -> np.ndarray:
    """The encoded bytes of picture ``i`` (flat index) of a packed stack."""
    ends = arrays[f"{name}_ends"]
    start = int(ends[i - 1]) if i else 0
    return arrays[f"{name}_data"][start:int(ends[i])]


def _encode(image: np.ndarray, ext: str, params: list[int]) -> np.ndarray:
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:  # pragma: no cover - OpenCV refuses only unsupported shapes, which callers never pass
        raise ValueError(f"OpenCV could not encode a {image.shape} {image.dtype} picture as {ext}")
    return buf


def _flat(mask: np.ndarray | None, n: int) -> np.ndarray:
    return np.ones(n, bool) if mask is None else np.asarray(mask, bool).reshape(-1)


def _shape(arrays: dict[str, np.ndarray], name: str) -> tuple[int, ...]:
    return tuple(int(s) for s in arrays[f"{name}_shape"])


def _indices(lead: tuple[int, ...], index: Iterable[int] | None) -> np.ndarray:
    flat = np.arange(int(np.prod(lead)))
    return flat if index is None else np.asarray(list(index), np.int64)


# ---------------------------------------------------------------- crops


def pack_crops(crops: np.ndarray, valid: np.ndarray | None, fmt: str = "jpeg", quality: int = 95) -> dict[str, np.ndarray]:
    """Crops ``[..., S, S, 3]`` uint8 RGB as packed images (``valid`` ``[...]``: False leaves an
    empty picture); ``raw`` keeps the array."""
    if fmt == "raw":
        return {"crops": crops}
    pics = crops.reshape(-1, *crops.shape[-3:])
    ext, params = (".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality]) if fmt == "jpeg" else (".png", _PNG)
    keep = _flat(valid, len(pics))
    blobs = [_encode(np.ascontiguousarray(p[..., ::-1]), ext, params) if k else b"" for p, k in zip(pics, keep)]
    return {**pack_blobs(blobs, "crops"), "crops_shape": np.array(crops.shape, np.int64)}


def unpack_crops(arrays: dict[str, np.ndarray], index: Iterable[int] | None = None) -> np.ndarray:
    """Crops ``[n, S, S, 3]`` uint8 RGB of the flat picture ``index`` (all: ``[..., S, S, 3]``)."""
    if "crops" in arrays:
        crops = arrays["crops"]
        return crops if index is None else crops.reshape(-1, *crops.shape[-3:])[np.asarray(list(index), np.int64)]
    shape = _shape(arrays, "crops")
    which = _indices(shape[:-3], index)
    out = np.zeros((len(which), *shape[-3:]), np.uint8)
    for j, i in enumerate(which):
        buf = picture_bytes(arrays, "crops", int(i))
        if len(buf):
            out[j] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return out.reshape(*shape) if index is None else out


def stored_crops(crops: np.ndarray, fmt: str, quality: int) -> np.ndarray:
    """The crops as a faces artifact gives them back: what training saw, for ``detect``."""
    if fmt == "raw":
        return crops
    return unpack_crops(pack_crops(crops, None, fmt, quality)).reshape(crops.shape)


# ---------------------------------------------------------------- flow


def _flow_levels(flow: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(flow, np.float32) / FLOW_STEP), -_OFFSET, _OFFSET - 1).astype(np.int32)


def stored_flow(flow: np.ndarray) -> np.ndarray:
    """The flow as an artifact gives it back (float32, in steps of :data:`FLOW_STEP`)."""
    return _flow_levels(flow).astype(np.float32) * np.float32(FLOW_STEP)


def pack_flow(flow: np.ndarray, valid: np.ndarray | None) -> dict[str, np.ndarray]:
    """Flow ``[..., S, S, 2]`` (pixels) as 16-bit PNGs of dx and dy side by side, in steps of
    :data:`FLOW_STEP`."""
    side = flow.shape[-3:-1]
    q = (_flow_levels(flow) + _OFFSET).astype(np.uint16).reshape(-1, *side, 2)
    keep = _flat(valid, len(q))
    blobs = [_encode(np.concatenate([p[..., 0], p[..., 1]], 1), ".png", _PNG) if k else b"" for p, k in zip(q, keep)]
    return {**pack_blobs(blobs, "flow"), "flow_shape": np.array(flow.shape, np.int64)}


def unpack_flow(arrays: dict[str, np.ndarray], index: Iterable[int] | None = None) -> np.ndarray:
    """Flow ``[n, S, S, 2]`` float32 pixels of the flat picture ``index`` (all: ``[..., S, S, 2]``)."""
    shape = _shape(arrays, "flow")
    which = _indices(shape[:-3], index)
    s = shape[-2]
    out = np.zeros((len(which), *shape[-3:]), np.float32)
    for j, i in enumerate(which):
        buf = picture_bytes(arrays, "flow", int(i))
        if len(buf):
            img = (cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).astype(np.int32) - _OFFSET).astype(np.float32)
            out[j, ..., 0], out[j, ..., 1] = img[:, :s] * np.float32(FLOW_STEP), img[:, s:] * np.float32(FLOW_STEP)
    return out.reshape(*shape) if index is None else out


# ---------------------------------------------------------------- depth


def _depth_range(pics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return pics.min((-2, -1)), pics.max((-2, -1))


def _depth_levels(pics: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    span = np.where(hi > lo, hi - lo, 1.0).astype(np.float32)[..., None, None]
    return np.rint((pics - lo[..., None, None]) / span * DEPTH_LEVELS).astype(np.uint16)


def _depth_values(levels: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return lo[..., None, None] + levels.astype(np.float32) / np.float32(DEPTH_LEVELS) * (hi - lo)[..., None, None]


def stored_depth(depth: np.ndarray) -> np.ndarray:
    """Depth maps ``[..., S, S]`` as an artifact gives them back (12 bits of each map's range)."""
    pics = np.asarray(depth, np.float32)
    lo, hi = _depth_range(pics)
    return _depth_values(_depth_levels(pics, lo, hi), lo, hi)


def pack_depth(depth: np.ndarray, valid: np.ndarray | None) -> dict[str, np.ndarray]:
    """Depth ``[..., S, S]`` as per-picture ``depth_min``/``depth_max`` and 12-bit levels between."""
    pics = np.asarray(depth, np.float32)
    lo, hi = _depth_range(pics)
    levels = _depth_levels(pics, lo, hi).reshape(-1, *depth.shape[-2:])
    keep = _flat(valid, len(levels))
    blobs = [_encode(q, ".png", _PNG) if k else b"" for q, k in zip(levels, keep)]
    return {**pack_blobs(blobs, "depth"), "depth_shape": np.array(depth.shape, np.int64), "depth_min": lo, "depth_max": hi}


def unpack_depth(arrays: dict[str, np.ndarray], index: Iterable[int] | None = None) -> np.ndarray:
    """Depth ``[n, S, S]`` float32 of the flat picture ``index`` (all: ``[..., S, S]``)."""
    shape = _shape(arrays, "depth")
    which = _indices(shape[:-2], index)
    lo, hi = arrays["depth_min"].reshape(-1), arrays["depth_max"].reshape(-1)
    out = np.zeros((len(which), *shape[-2:]), np.float32)
    for j, i in enumerate(which):
        buf = picture_bytes(arrays, "depth", int(i))
        if len(buf):
            out[j] = _depth_values(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED), lo[i], hi[i])
    return out.reshape(*shape) if index is None else out
