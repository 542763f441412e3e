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

from ..core.errors import StageError

__all__ = ["VideoInfo", "fit_frame", "probe", "read_frames", "sample_points"]


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


def _count(cap: cv2.VideoCapture) -> int:
    n = 0
    while cap.grab():
        n += 1
    return n


def probe(path: str | Path) -> VideoInfo:
    """Frame count, frame rate and size; errors for unreadable videos.

    The container's frame count is not trusted when it is missing or absurd (WebM/MKV written by
    browsers and streams carry none, and OpenCV then reports 0 or a negative number): the frames
    are counted by decoding them instead. A count that is too high (a truncated file) is found
    when reading, as ``truncated``.
    """
    cap = _open(path)
    try:
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if frames <= 0 or frames > 10_000_000:
            frames = _count(cap)
    finally:
        cap.release()
    info = VideoInfo(path=str(path), frames=frames, fps=fps if 0 < fps < 1000 else 0.0, width=width, height=height)
    if info.width <= 0 or info.height <= 0 or info.frames == 0:
        raise StageError("unreadable", f"{Path(path).name} has no decodable frames ({info.width}x{info.height})")
    if info.frames < 2:
        raise StageError("too_short", f"{Path(path).name} has {info.frames} frame(s): a time point needs a pair "
                                      "of consecutive frames")
    return info


def sample_points(num_frames: int, k: int) -> np.ndarray:
    """Up to ``k`` distinct time points evenly spaced over the video: ``[min(k, num_frames - 1)]``.

    The first point is frame 0 and the last ``num_frames - 2``, so that every pair (t, t+1)
    exists; a video with fewer than ``k + 1`` frames gives one point per pair it holds, never
    repeated points.
    """
    if num_frames < 2:
        raise StageError("too_short", f"{num_frames} frame(s): a time point needs 2 consecutive frames")
    n = min(k, num_frames - 1)
    return np.unique(np.round(np.linspace(0, num_frames - 2, n)).astype(np.int64))


def fit_frame(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    """``frame`` shrunk (area interpolation) so that its longer side is at most ``max_side``, as
    :func:`read_frames` keeps it; unchanged when it fits or ``max_side`` is None."""
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
                frame = fit_frame(bgr, max_side)
                yield pos, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if rgb else frame
                target = next(w_iter, -1)
            pos += 1
    finally:
        cap.release()
