"""The faces artifact (``faces/<id>.npz``): every face's track of boxes and crops, written and read
(see :mod:`.extract` for the schemas)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.compact import unpack_crops, pack_crops
from ..core.errors import StageError
from ..core.io import load_npz, save_npz

__all__ = ["SCHEMA", "Faces", "Track", "load_crops", "with_track_axis"]

log = logging.getLogger(__name__)


SCHEMA = 3  # faces artifacts with a track axis and compact crops (see the module docstring)


@dataclass
class Track:
    """One face through the K time points of a video."""

    boxes: np.ndarray  # [K, 4] float32: face box x1, y1, x2, y2 in original pixels, NaN: no face
    scores: np.ndarray  # [K] float32: MTCNN probability (interpolated where not detected)
    detected: np.ndarray  # [K] bool: the box came from a detection at this point
    crops: np.ndarray  # [K, 2, S, S, 3] uint8 RGB: frames t and t+1, same square box

    @property
    def valid(self) -> np.ndarray:
        """``[K]`` bool: time points with this face."""
        return ~np.isnan(self.boxes[:, 0])


@dataclass
class Faces:
    """Face crops of one video: the main face in the fields below (shapes use K time points and
    crop side S), any further faces in ``more``; :attr:`tracks` lists them all."""

    frame_index: np.ndarray  # [K] int64: t of each pair (t, t+1)
    boxes: np.ndarray  # [K, 4] float32: the main face's box in original pixels, NaN: no face
    scores: np.ndarray  # [K] float32: MTCNN probability (interpolated where not detected)
    detected: np.ndarray  # [K] bool: the box came from a detection at this point
    crops: np.ndarray  # [K, 2, S, S, 3] uint8 RGB: frames t and t+1, same square box
    meta: dict[str, Any] = field(default_factory=dict)
    more: list[Track] = field(default_factory=list)  # the other faces, by weight

    @property
    def valid(self) -> np.ndarray:
        """``[K]`` bool: time points with the main face."""
        return ~np.isnan(self.boxes[:, 0])

    @property
    def tracks(self) -> list[Track]:
        return [Track(self.boxes, self.scores, self.detected, self.crops), *self.more]

    def save(self, path: Path, compress: bool = True, crop_format: str = "jpeg", crop_quality: int = 95) -> None:
        tracks = self.tracks
        boxes = np.stack([t.boxes for t in tracks])
        both = np.repeat(~np.isnan(boxes[..., :1]), 2, -1)  # [T, K, 2]: both crops of a pair with a face
        crops = pack_crops(np.stack([t.crops for t in tracks]), both, crop_format, crop_quality)
        save_npz(
            path, {**self.meta, "schema": SCHEMA}, compress=compress and crop_format == "raw",
            frame_index=self.frame_index, boxes=boxes, scores=np.stack([t.scores for t in tracks]),
            detected=np.stack([t.detected for t in tracks]), **crops,
        )

    @classmethod
    def load(cls, path: Path) -> "Faces":
        a, meta = load_npz(path)
        a = with_track_axis(a, meta)
        crops = unpack_crops(a)
        main, *more = [Track(a["boxes"][i], a["scores"][i], a["detected"][i], crops[i]) for i in range(len(a["boxes"]))]
        return cls(a["frame_index"], main.boxes, main.scores, main.detected, main.crops, meta, more)


def with_track_axis(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """Faces or features arrays of any schema with the track axis first (schema 1 had the main
    face alone); an unknown schema asks for the artifacts to be made again."""
    schema = meta.get("schema", 1)
    if schema in (2, SCHEMA):
        return arrays
    if schema == 1:
        return {k: v if k == "frame_index" else v[None] for k, v in arrays.items()}
    stage = meta.get("stage", "faces")
    command = "faces" if stage == "faces" else "features"
    raise StageError("error", f"{stage} artifact of schema {schema}, this version reads 1 to {SCHEMA}: "
                              f"run `tim {command} --overwrite` with this version")


def load_crops(path: Path, track: int, points: np.ndarray, frame: int = 0) -> np.ndarray:
    """Crops ``[n, S, S, 3]`` of one face at ``points`` (indices into K), frame t (0) or t+1 (1)
    of each pair: only those pictures are decoded."""
    a, meta = load_npz(path, ("crops", "crops_data", "crops_ends", "crops_shape", "boxes"))
    a = with_track_axis(a, meta)
    k = a["boxes"].shape[1]
    return unpack_crops(a, (track * k + np.asarray(points, np.int64)) * 2 + frame)
