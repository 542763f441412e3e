"""Training data over a work directory: videos of a split, their valid time points, encoded inputs.

An item is one face of one video (a track of the faces stage; training uses the main face unless
``train_faces: all``, evaluation every face): ``points`` time points drawn from its valid ones (a
fresh draw each epoch for training; every valid point, in order, for evaluation). Flow, depth and RGB are encoded at
load time (flow -> HSV -> RGB, depth -> grey x 3, RGB = the crop of frame t) and normalised for
the backbone, so encodings can change without recomputing features.

Augmentation (training only) keeps the signals correct: a horizontal flip mirrors every modality
of the item and negates the flow's x component, since motion to the right becomes motion to the
left in a mirrored picture.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.errors import ConfigError
from ..faces.artifact import load_crops, with_track_axis
from ..features.stage import load_feature
from ..data.index import read_manifest
from ..data.augment import AugmentConfig, select_copies
from ..data.pseudo import select_fakes
from ..core.io import WorkDir, load_npz
from ..models.architecture import Preprocess, parse_modalities
from ..models.inputs import DataConfig, encode_inputs
from ..features.depth import DepthConfig
from ..features.flow import FlowConfig

__all__ = ["VideoDataset", "collate", "flip_flow"]

log = logging.getLogger(__name__)


def flip_flow(flow: np.ndarray) -> np.ndarray:
    """Mirror flow ``[..., H, W, 2]`` left-right: the field is flipped and dx negated."""
    out = flow[..., ::-1, :].copy()
    out[..., 0] *= -1
    return out


@dataclass
class VideoItem:
    video_id: str
    label: int
    method: str
    dataset: str
    valid: np.ndarray  # [K] bool
    track: int = 0  # the face: 0 is the main one


class VideoDataset(Dataset):
    """Faces of the videos of ``split`` that have every artifact the modalities need: one item per
    face (``faces="all"``) or per video (``"main"``); with ``fakes`` (dataset, pseudo or both) the
    real videos and those fakes only; perturbed copies (:mod:`..data.augment`) only those that
    ``augment`` plans."""

    def __init__(
        self,
        workdir: str | Path,
        split: str | None,
        modality: str,
        cfg: DataConfig = DataConfig(),
        pre: Preprocess = Preprocess(),
        train: bool = False,
        seed: int = 0,
        expect: dict[str, dict[str, Any]] | None = None,
        faces: str = "all",
        fakes: str | None = None,
        augment: AugmentConfig | None = None,
    ):
        self.work = WorkDir(Path(workdir))
        self.modalities = parse_modalities(modality)
        self.cfg, self.pre, self.train = cfg, pre, train
        self.seed, self.epoch = seed, 0
        self.expect = expect or {}
        rows = read_manifest(workdir)
        rows = [r for r in rows if split is None or r["split"] == split]
        rows = select_copies(rows, augment or AugmentConfig())  # only the perturbed copies this run draws
        if fakes is not None:  # dataset, pseudo or both (resolved: data.pseudo.resolve_fakes)
            rows = select_fakes(rows, fakes)
        self.listed = len(rows)  # videos of the split in the manifest, with artifacts or not
        self._check_folders()
        self.videos: list[VideoItem] = []
        self.missing: list[str] = []
        self.feature_meta: dict[str, dict] = {}
        self.faces_config: dict[str, Any] | None = None  # settings of the faces stage behind the data
        for r in rows:
            paths = self._paths(r["video_id"])
            if not all(p.exists() for p in paths.values()):
                self.missing.append(r["video_id"])
                continue
            valid = self._valid(paths)  # [T, K]
            if not valid[0].any():
                self.missing.append(r["video_id"])
                continue
            for track in range(len(valid) if faces == "all" else 1):
                if valid[track].any():
                    self.videos.append(VideoItem(r["video_id"], r["label"], r["method"], r["dataset"], valid[track], track))
        if self.missing:
            log.warning(
                "%s split: %d of %d videos lack %s artifacts or faces; left out (see errors.csv)",
                split, len(self.missing), len(rows), "/".join(self.modalities),
            )

    def _check_folders(self) -> None:
        """The artifact directories the modalities need exist; if not, name the ones that do."""
        for m in self.modalities:
            kind, name = {"flow": ("flow", self.cfg.flow), "depth": ("depth", self.cfg.depth)}.get(m, ("faces", ""))
            folder = self.work.root / kind / name if name else self.work.root / kind
            if folder.is_dir():
                continue
            if kind == "faces":
                raise ConfigError(f"no face crops in {folder}: run `tim faces {self.work.root}` first")
            parent = self.work.root / kind
            there = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
            if there:
                raise ConfigError(f"no {kind} artifacts named {name!r} in {parent}; there are: {', '.join(there)} "
                                  f"(use --{kind} {there[0]})")
            raise ConfigError(f"no {kind} artifacts in {self.work.root}: run `tim features {self.work.root}` first")

    def _paths(self, vid: str) -> dict[str, Path]:
        paths = {}
        for m in self.modalities:
            if m == "flow":
                paths[m] = self.work.flow(self.cfg.flow, vid)
            elif m == "depth":
                paths[m] = self.work.depth(self.cfg.depth, vid)
            else:
                paths[m] = self.work.faces(vid)
        return paths

    def _valid(self, paths: dict[str, Path]) -> np.ndarray:
        valid = None
        for m, p in paths.items():
            if m == "rgb":
                arrays, meta = load_npz(p, ("boxes",))  # not the crops: only which points have a face
                boxes = with_track_axis(arrays, meta)["boxes"]
                v, faces_cfg = ~np.isnan(boxes[..., 0]), meta.get("config")
            else:
                _, v, meta = load_feature(p, self.expect.get(m), values=False)
                self._check_meta(m, meta, p)
                faces_cfg = meta.get("faces")
            if self.faces_config is None and faces_cfg:
                self.faces_config = faces_cfg
            if valid is not None and len(v) != len(valid):  # faces redone with other tracks since
                raise ConfigError(f"{p}: {len(v)} faces, other artifacts of the video {len(valid)}; "
                                  "recompute the features (tim features --overwrite)")
            valid = v if valid is None else valid & v
        return valid

    def _check_meta(self, m: str, meta: dict, path: Path) -> None:
        """Every artifact of a modality must come from the same settings and weights; those are
        what the detector's record keeps (every setting its flow or depth config has)."""
        keys = {*FlowConfig.__dataclass_fields__, *DepthConfig.__dataclass_fields__, "weights"}
        rec = {k: v for k, v in meta.items() if k in keys}
        first = self.feature_meta.setdefault(m, rec)
        if rec != first:
            raise ConfigError(f"{path}: made with {rec}, other {m} artifacts with {first}; recompute them alike")

    def set_epoch(self, epoch: int) -> None:
        """Draws depend on (seed, epoch, video) only: the same in any DataLoader worker."""
        self.epoch = epoch

    def video_ids(self, items: np.ndarray) -> np.ndarray:
        """The video of each item index in ``items``."""
        ids = np.array([v.video_id for v in self.videos])
        return ids[np.asarray(items, dtype=int)] if len(ids) else np.zeros(0, str)

    @property
    def labels(self) -> np.ndarray:
        return np.array([v.label for v in self.videos])

    def __len__(self) -> int:
        return len(self.videos)

    def load_arrays(self, i: int, points: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Raw arrays of item ``i`` (one face) at ``points`` (default: all K): flow, depth, rgb as
        needed. Only those pictures are decoded."""
        item = self.videos[i]
        points = np.arange(len(item.valid)) if points is None else np.asarray(points)
        arrays = {}
        for m, p in self._paths(item.video_id).items():
            if m == "rgb":
                arrays["rgb"] = load_crops(p, item.track, points)
            else:
                arrays[m] = load_feature(p, track=item.track, points=points)[0]
        return arrays

    def __getitem__(self, i: int) -> dict[str, Any]:
        video = self.videos[i]
        points = np.flatnonzero(video.valid)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if self.train:
            points = np.sort(rng.choice(points, size=self.cfg.train_points, replace=len(points) < self.cfg.train_points))
        arrays = self.load_arrays(i, points)
        if self.train and rng.random() < self.cfg.flip:
            arrays = {k: (flip_flow(v) if k == "flow" else np.ascontiguousarray(v[:, :, ::-1])) for k, v in arrays.items()}
        inputs = encode_inputs(arrays, self.modalities, self.pre, self.cfg, (self.faces_config or {}).get("box_scale", 1.3))
        return {"inputs": inputs, "label": video.label, "video": i, "track": video.track,
                "points": torch.from_numpy(points)}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items of possibly different point counts: inputs ``[sum N, 3, S, S]``, per-point
    ``label`` and ``video`` index tensors."""
    mods = items[0]["inputs"].keys()
    inputs = {m: torch.cat([it["inputs"][m] for it in items]) for m in mods}
    counts = [len(it["points"]) for it in items]
    label = torch.cat([torch.full((n,), float(it["label"])) for n, it in zip(counts, items)])
    video = torch.cat([torch.full((n,), it["video"], dtype=torch.long) for n, it in zip(counts, items)])
    track = torch.cat([torch.full((n,), it.get("track", 0), dtype=torch.long) for n, it in zip(counts, items)])
    return {"inputs": inputs, "label": label, "video": video, "track": track,
            "points": torch.cat([it["points"] for it in items])}
