"""What a detector reads and how it is encoded (:class:`DataConfig`), and the pictures it sees:
raw flow, depth and RGB arrays encoded (:mod:`..features.encodings`) and normalised for the backbone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.config import Settings, require
from ..features.encodings import DEPTH_ENCODINGS, FLOW_ENCODINGS, encode_depth, encode_flow
from .architecture import Preprocess

__all__ = ["DataConfig", "TRAIN_FACES", "encode_inputs", "encode_pictures", "to_backbone"]

TRAIN_FACES = ("main", "all")  # DataConfig.train_faces


@dataclass(frozen=True)
class DataConfig(Settings):
    flow: str = "farneback"  # flow artifacts: WORKDIR/flow/<flow>/
    depth: str = "depth-anything-v2-small"  # depth artifacts: WORKDIR/depth/<depth>/
    # Encodings (truthinmotion.features.encodings), chosen by benchmarks/learning.py (README: its table):
    # fixed-scale flow relative to the head learnt best; the study's were hsv-per-picture and
    # crop-minmax. Depth with random weights could not rank its encodings: face-minmax is the
    # default because it ignores the zero padding of crops at the frame's edge.
    flow_encoding: str = "hsv-fixed"  # hsv-per-picture (the study's) | hsv-fixed | polar-log
    flow_max: float = 4.0  # flow scale in pixels of the crop (hsv-fixed, polar-log)
    flow_relative: bool = True  # subtract the head's motion (the ring around the face) first
    depth_encoding: str = "face-minmax"  # crop-minmax (the study's) | face-minmax | fixed
    depth_max: float | None = None  # depth scale (fixed)
    train_points: int = 8  # time points drawn per video per training step
    flip: float = 0.5  # probability of a horizontal flip (training only)
    train_faces: str = "main"  # faces trained on: main (the main face of each video) or all

    def check(self) -> None:
        require(self.flow_encoding in FLOW_ENCODINGS, f"flow_encoding: one of {', '.join(FLOW_ENCODINGS)}")
        require(self.flow_max > 0, "flow_max: positive (pixels)")
        require(self.depth_encoding in DEPTH_ENCODINGS, f"depth_encoding: one of {', '.join(DEPTH_ENCODINGS)}")
        require(self.depth_encoding != "fixed" or (self.depth_max or 0) > 0,
                "depth_max: a positive value is needed by depth_encoding fixed")
        require(self.train_points >= 1, "train_points: at least 1")
        require(0.0 <= self.flip <= 1.0, "flip: a probability")
        require(self.train_faces in TRAIN_FACES, f"train_faces: {' or '.join(TRAIN_FACES)}")

    @classmethod
    def from_saved(cls, record: dict[str, Any] | None):
        """Settings saved by a run (its config.yaml, or a detector's ``data`` record). Runs saved
        before the encodings were settings used the study's: per-picture flow unless a
        ``flow_max`` was given, and crop-wide depth."""
        record = dict(record or {})
        if "flow_encoding" not in record:
            record["flow_encoding"] = "hsv-per-picture" if record.get("flow_max") is None else "hsv-fixed"
            record.setdefault("flow_relative", False)
        record.setdefault("depth_encoding", "crop-minmax")
        return cls.from_dict(record)


def encode_pictures(
    arrays: dict[str, np.ndarray], modalities: tuple[str, ...], cfg: DataConfig, box_scale: float = 1.3,
) -> dict[str, np.ndarray]:
    """The pictures a detector sees, uint8 ``{modality: [N, S, S, 3]}``, from raw ``flow
    [N,S,S,2]``, ``depth [N,S,S]`` and ``rgb [N,S,S,3]`` arrays, encoded as ``cfg`` says
    (``box_scale``: the crops' size relative to the face box, from the faces settings)."""
    pics = {}
    for m in modalities:
        if m == "flow":
            pics[m] = encode_flow(arrays["flow"], cfg.flow_encoding, cfg.flow_max, cfg.flow_relative, box_scale)
        elif m == "depth":
            pics[m] = encode_depth(arrays["depth"], cfg.depth_encoding, cfg.depth_max, box_scale)
        else:
            pics[m] = arrays["rgb"]
    return pics


def to_backbone(pictures: dict[str, np.ndarray], pre: Preprocess) -> dict[str, torch.Tensor]:
    """uint8 pictures ``[N, S, S, 3]`` as backbone inputs ``[N, 3, size, size]`` float32, normalised."""
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    out = {}
    for m, pic in pictures.items():
        x = torch.from_numpy(np.ascontiguousarray(pic)).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-1] != pre.size:
            x = torch.nn.functional.interpolate(x, size=(pre.size, pre.size), mode="bilinear", align_corners=False)
        out[m] = (x - mean) / std
    return out


def encode_inputs(
    arrays: dict[str, np.ndarray], modalities: tuple[str, ...], pre: Preprocess, cfg: DataConfig,
    box_scale: float = 1.3,
) -> dict[str, torch.Tensor]:
    """Backbone inputs ``{modality: [N, 3, size, size] float32}`` from raw arrays:
    :func:`encode_pictures` then :func:`to_backbone`."""
    return to_backbone(encode_pictures(arrays, modalities, cfg, box_scale), pre)
