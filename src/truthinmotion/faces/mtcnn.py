"""MTCNN face detection (facenet-pytorch's shipped weights) and the box geometry around it.

MTCNN: Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks", 2016. Whole-frame detection runs the full cascade; ``refine`` runs its
last stage (O-net) alone on given boxes, which is how the faces stage follows a face. Everything
facenet-pytorch provides is reached through ``_Facenet``, which names what it relies on.
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

__all__ = ["FaceDetector", "box_iou", "crop_square", "square_box"]


# ---------------------------------------------------------------- geometry


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``[..., 4]`` (x1, y1, x2, y2), broadcast; NaN-safe (0)."""
    x1 = np.maximum(a[..., 0], b[..., 0])
    y1 = np.maximum(a[..., 1], b[..., 1])
    x2 = np.minimum(a[..., 2], b[..., 2])
    y2 = np.minimum(a[..., 3], b[..., 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[..., 2] - z[..., 0]) * (z[..., 3] - z[..., 1])  # noqa: E731
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / (area(a) + area(b) - inter)
    return np.nan_to_num(iou, nan=0.0)


def square_box(box: np.ndarray, scale: float) -> np.ndarray:
    """The square of side ``scale`` x the longer side of ``box``, centred on it: ``[4]``."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = scale * max(box[2] - box[0], box[3] - box[1]) / 2
    return np.array([cx - half, cy - half, cx + half, cy + half])


def crop_square(frame: np.ndarray, box: np.ndarray, scale: float, size: int) -> np.ndarray:
    """Crop ``frame [H, W, 3]`` to the scaled square around ``box``, zero-padded, ``[size, size, 3]``."""
    return _crop(frame, np.round(square_box(box, scale)).astype(int), size)


def _crop(frame: np.ndarray, square: np.ndarray, size: int) -> np.ndarray:
    """Crop the integer square (x1, y1, x2, y2) of ``frame``, zero-padded, resized to ``size``."""
    x1, y1, x2, y2 = square
    side = max(x2 - x1, 1)
    h, w = frame.shape[:2]
    out = np.zeros((side, side, 3), dtype=frame.dtype)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x1 + side, w), min(y1 + side, h)
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = frame[sy1:sy2, sx1:sx2]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(out, (size, size), interpolation=interp)


# ---------------------------------------------------------------- detection


class _Facenet:
    """The one place that touches facenet-pytorch (2.5.x). What it relies on, so an upgrade breaks
    here and nowhere else:

    - ``MTCNN(keep_all, min_face_size, thresholds, device, post_process)``;
    - ``MTCNN.detect(frames [B, H, W, 3] uint8 RGB) -> (boxes, probs)``, one entry per frame,
      ``None`` where no face;
    - the attribute ``min_face_size``, read at each ``detect`` call;
    - the O-net module ``MTCNN.onet(x [N, 3, 48, 48], normalised as (x - 127.5) / 128)
      -> (box regression [N, 4], landmarks, class probabilities [N, 2])``.
    """

    def __init__(self, min_face: int, thresholds: Sequence[float], device: str):
        from facenet_pytorch import MTCNN

        self._mtcnn = MTCNN(keep_all=True, min_face_size=min_face, thresholds=list(thresholds),
                            device=device, post_process=False)

    def detect(self, batch: np.ndarray, min_face: int | None) -> tuple[list, list]:
        default = self._mtcnn.min_face_size
        if min_face is not None:
            self._mtcnn.min_face_size = min_face
        try:
            return self._mtcnn.detect(batch)
        finally:
            self._mtcnn.min_face_size = default

    def onet(self, x):
        """(box regression [N, 4], face probability [N]) of 48x48 RGB crops ``x [N, 3, 48, 48]``."""
        reg, _, prob = self._mtcnn.onet((x - 127.5) * 0.0078125)
        return reg, prob[:, 1]


class FaceDetector:
    """MTCNN (facenet-pytorch, shipped weights) on batches of equally sized RGB frames."""

    def __init__(self, min_face: int, min_score: float, thresholds: Sequence[float], device: str = "cpu"):
        """No defaults of its own: the settings come from :class:`~.config.FacesConfig`
        (:meth:`from_config`), so there is one place that says what they are."""
        self.net = _Facenet(min_face, [*thresholds, min_score], device)
        self.min_score = min_score
        self.device = device

    @classmethod
    def from_config(cls, cfg: Any, device: str = "cpu") -> "FaceDetector":
        """From a :class:`~truthinmotion.faces.config.FacesConfig` (min_face, min_score, thresholds)."""
        return cls(cfg.min_face, cfg.min_score, cfg.thresholds, device)

    def __call__(
        self, frames: Sequence[np.ndarray], batch_size: int = 16, min_face: int | None = None
    ) -> list[np.ndarray]:
        """Detect in ``frames`` (RGB uint8, same size): per frame ``[n, 5]`` (x1, y1, x2, y2, p).

        ``min_face`` overrides the smallest face size (pixels) for this call.
        """
        return self._detect(frames, batch_size, min_face)

    def refine(
        self, frames: Sequence[np.ndarray], boxes: np.ndarray, bgr: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """One pass of MTCNN's last stage (O-net) on given face boxes: (boxes [N, 4], probs [N]).

        Each box is made square (as the cascade does before O-net), cropped from its RGB frame,
        resized to 48x48 and regressed. This is how a face found at one time point is followed to
        the next: O-net sees the face where it was predicted and corrects the box, with no
        image pyramid and no candidate search.
        """
        import torch

        if len(boxes) == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        squares = np.stack([np.round(square_box(b, 1.0)) for b in boxes]).astype(int)
        crops = np.stack([_crop(f, sq, 48) for f, sq in zip(frames, squares)])
        if bgr:
            crops = np.ascontiguousarray(crops[..., ::-1])
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().to(self.device)
        with torch.no_grad():
            reg, prob = self.net.onet(x)
        reg, prob = reg.cpu().numpy(), prob.cpu().numpy()
        side = (squares[:, 2] - squares[:, 0] + 1)[:, None].astype(np.float32)  # MTCNN's +1 convention
        return squares.astype(np.float32) + reg * side, prob

    def _detect(self, frames: Sequence[np.ndarray], batch_size: int, min_face: int | None) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for i in range(0, len(frames), batch_size):
            batch = np.stack(frames[i : i + batch_size])
            boxes, probs = self.net.detect(batch, min_face)
            for b, p in zip(boxes, probs):
                if b is None:
                    out.append(np.zeros((0, 5), np.float32))
                    continue
                det = np.concatenate([np.asarray(b, np.float32), np.asarray(p, np.float32)[:, None]], 1)
                out.append(det[det[:, 4] >= self.min_score])
        return out
