"""Video decoding as a stream: only the frames a stage needs are converted and kept.

Frames are read in order with OpenCV (FFmpeg backend); frames between the wanted ones are only
``grab()``-ed (decoded, not converted), and decoding stops after the last wanted frame. Memory is
bounded by the number of kept frames, and each kept frame is bounded by ``max_side``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from .io import StageError

__all__ = ["VideoInfo", "probe", "read_frames", "sample_points"]


@dataclass(frozen=True)
class VideoInfo:
    path: str
    frames: int  # as the container reports it; decoding may find fewer (truncated files)
    fps: float
    width: int
    height: int


def _open(path: str | Path) -> cv2.VideoCapture:
    path = Path(path)
    if not path.is_file():
        raise StageError("unreadable", f"file not found: {path}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise StageError("unreadable", f"cannot open {path.name} as a video (corrupt or not a video)")
    return cap


def probe(path: str | Path) -> VideoInfo:
    """Frame count, frame rate and size, from the container; errors for unreadable videos."""
    cap = _open(path)
    try:
        info = VideoInfo(
            path=str(path),
            frames=int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
            fps=float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        cap.release()
    if info.frames < 2 or info.width <= 0 or info.height <= 0:
        raise StageError("unreadable", f"{Path(path).name} has {info.frames} frames of {info.width}x{info.height}")
    return info


def sample_points(num_frames: int, k: int) -> np.ndarray:
    """``k`` time points evenly spaced over the video, each with a following frame: ``[k]`` int.

    The first point is frame 0 and the last is ``num_frames - 2`` so that every pair (t, t+1)
    exists; a video with fewer than ``k + 1`` frames repeats points rather than inventing frames.
    """
    if num_frames < 2:
        raise StageError("unreadable", f"{num_frames} frames: a pair needs at least 2")
    return np.round(np.linspace(0, num_frames - 2, k)).astype(np.int64)


def _fit(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    h, w = frame.shape[:2]
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        frame = cv2.resize(frame, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return frame


def read_frames(
    path: str | Path, indices: Sequence[int], max_side: int | None = None, rgb: bool = True
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, uint8 [H, W, 3])`` for each distinct wanted index, in order.

    Frames are RGB, or OpenCV's BGR with ``rgb=False`` (callers that only keep small parts of a
    frame convert those parts instead). Frames larger than ``max_side`` on their long side are
    downscaled (area interpolation).
    Raises :class:`StageError` ``truncated`` when the stream ends before the last wanted frame.
    """
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return
    cap = _open(path)
    try:
        pos, last = 0, wanted[-1]
        w_iter = iter(wanted)
        target = next(w_iter)
        while pos <= last:
            if not cap.grab():
                raise StageError(
                    "truncated", f"{Path(path).name}: stream ended at frame {pos}, needed frame {last}"
                )
            if pos == target:
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    raise StageError("truncated", f"{Path(path).name}: frame {pos} could not be decoded")
                frame = _fit(bgr, max_side)
                yield pos, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if rgb else frame
                target = next(w_iter, -1)
            pos += 1
    finally:
        cap.release()
