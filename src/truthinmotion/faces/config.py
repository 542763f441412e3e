"""The faces stage's settings (:class:`FacesConfig`): one dataclass, every field commented."""

from __future__ import annotations

import logging
from dataclasses import dataclass


from ..data.compact import CROP_FORMATS
from ..core.config import Settings, require

__all__ = ["FacesConfig"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FacesConfig(Settings):
    num_points: int = 32  # K time points per video, evenly spaced; each gives the pair (t, t+1)
    size: int = 224  # S: side of the square crops, in pixels
    box_scale: float = 1.3  # crop side = box_scale x the longer side of the face box (study: 1.3)
    detect_side: int = 300  # frames are downscaled to this short side for detection
    min_face: int = 24  # smallest face MTCNN looks for, in pixels of the detection frame
    min_score: float = 0.9  # detections less confident than this are ignored (MTCNN's O-net)
    thresholds: tuple[float, float] = (0.7, 0.8)  # MTCNN P-net and R-net candidate thresholds
    detect_every: int = 8  # whole-frame pass: every n-th time point (plus the last)
    refine_steps: int = 3  # O-net passes that follow the face from its predicted box at each point
    smooth: bool = False  # 1-2-1 smoothing over neighbouring points (a pair shares its box anyway)
    batch_size: int = 16  # frames per MTCNN call
    max_faces: int = 4  # tracks kept per video, the main face first
    min_track: float = 0.25  # a further track needs this share of the main track's detections
    max_frame_side: int = 1920  # kept frames are downscaled to this long side (bounds memory)
    compress: bool = True  # zlib-compress the artifact's arrays (crops: only crop_format raw)
    crop_format: str = "jpeg"  # jpeg (default), png (lossless, 5x the bytes) or raw (the array)
    crop_quality: int = 95  # JPEG quality of the stored crops
    # Decoded frames a video may hold in memory at once (2 per time point, each at most
    # max_frame_side on its long side, 3 bytes a pixel): a video that would need more is refused
    # with status too_large rather than exhausting the machine. 32 points of 1080p need ~400 MB.
    max_memory_mb: int = 4096

    def check(self) -> None:
        require(1 <= self.num_points <= 1024, "num_points: 1 to 1024 (a video gives at most one per frame pair)")
        require(self.max_memory_mb >= 64, "max_memory_mb: at least 64")
        require(16 <= self.size <= 1024, "size: 16 to 1024 pixels")
        require(1.0 <= self.box_scale <= 3.0, "box_scale: 1.0 to 3.0")
        require(self.detect_side >= 64, "detect_side: at least 64 pixels")
        require(self.min_face >= 12, "min_face: at least 12 pixels (MTCNN's smallest window)")
        require(0.0 < self.min_score < 1.0, "min_score: between 0 and 1")
        require(
            len(self.thresholds) == 2 and all(0.0 < t < 1.0 for t in self.thresholds),
            "thresholds: two numbers between 0 and 1 (P-net, R-net)",
        )
        require(self.detect_every >= 1, "detect_every: at least 1")
        require(1 <= self.refine_steps <= 5, "refine_steps: 1 to 5")
        require(self.batch_size >= 1, "batch_size: at least 1")
        require(1 <= self.max_faces <= 16, "max_faces: 1 to 16")
        require(0.0 < self.min_track <= 1.0, "min_track: above 0, at most 1")
        require(self.max_frame_side >= self.size, "max_frame_side: at least size")
        require(self.crop_format in CROP_FORMATS, f"crop_format: one of {', '.join(CROP_FORMATS)}")
        require(50 <= self.crop_quality <= 100, "crop_quality: 50 to 100")


# ---------------------------------------------------------------- extraction
