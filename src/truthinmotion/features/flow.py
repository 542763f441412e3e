"""Optical flow between the two crops of each pair, and its encoding as an RGB picture.

Methods: ``farneback`` (Farnebäck, "Two-Frame Motion Estimation Based on Polynomial Expansion",
SCIA 2003), ``dis`` (Kroeger et al., "Fast Optical Flow using Dense Inverse Search", ECCV 2016),
both from OpenCV on grey crops; ``raft-small`` and ``raft-large`` (Teed and Deng, "RAFT:
Recurrent All-Pairs Field Transforms for Optical Flow", ECCV 2020) from torchvision. Flow is in
pixels, ``[..., 2]`` = (dx, dy), x to the right and y down, from frame t to frame t+1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..core.config import Settings, require
from .encodings import flow_to_rgb  # re-exported: the encodings live in truthinmotion.features.encodings
from ..backends.weights import INITS, WeightsNotFound, reachable

__all__ = ["FLOW_METHODS", "FlowConfig", "FlowEstimator", "check_flow", "flow_to_rgb"]

log = logging.getLogger(__name__)

FLOW_METHODS = ("farneback", "dis", "raft-small", "raft-large")


@dataclass(frozen=True)
class FlowConfig(Settings):
    method: str = "farneback"  # farneback | dis | raft-small | raft-large
    # Farnebäck: an image pyramid of 3 levels halving each time, 15-pixel averaging windows, 3
    # iterations per level, 5-pixel polynomial neighbourhoods (sigma 1.2): OpenCV's documented
    # values for dense flow, and robust for the few-pixel motions of a face between two frames.
    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2
    # DIS preset: 0 ultrafast, 1 fast, 2 medium. Medium: the quality preset; at 224 px it costs
    # a few milliseconds a pair.
    dis_preset: int = 2
    raft_weights: str | None = None  # RAFT state dict file; default: torchvision's cache
    raft_iters: int = 12  # RAFT refinement iterations (torchvision's default)
    init: str = "pretrained"  # RAFT: pretrained | random (tests and speed measurements only)
    batch_size: int = 16  # RAFT pairs per forward pass

    def check(self) -> None:
        require(self.method in FLOW_METHODS, f"method: {self.method!r} not one of {', '.join(FLOW_METHODS)}")
        require(0.1 <= self.pyr_scale < 1.0, "pyr_scale: 0.1 to 1")
        require(self.levels >= 1 and self.iterations >= 1 and self.winsize >= 3, "levels, iterations >= 1; winsize >= 3")
        require(self.poly_n in (5, 7), "poly_n: 5 or 7")
        require(self.dis_preset in (0, 1, 2), "dis_preset: 0, 1 or 2")
        require(self.init in INITS, f"init: one of {', '.join(INITS)}")
        require(self.raft_iters >= 1 and self.batch_size >= 1, "raft_iters and batch_size: at least 1")

    def record(self) -> dict[str, Any]:
        """What determines the flow's values: stored with every artifact."""
        keys = {
            "farneback": ("pyr_scale", "levels", "winsize", "iterations", "poly_n", "poly_sigma"),
            "dis": ("dis_preset",),
        }.get(self.method, ("raft_weights", "raft_iters", "init"))
        return {"method": self.method, **{k: getattr(self, k) for k in keys}}


class FlowEstimator:
    """Flow of pairs of RGB crops: ``__call__(pairs [N, 2, S, S, 3] uint8) -> [N, S, S, 2] float32``."""

    def __init__(self, cfg: FlowConfig, device: str = "cpu"):
        self.cfg = cfg
        self.device = device
        self.raft = None
        self.weights = "opencv"
        if cfg.method == "dis":
            self.dis = cv2.DISOpticalFlow_create(cfg.dis_preset)
        elif cfg.method.startswith("raft"):
            self.raft, self.weights = _load_raft(cfg, device)

    def __call__(self, pairs: np.ndarray) -> np.ndarray:
        if len(pairs) == 0:
            s = pairs.shape[2] if pairs.ndim == 5 else 0
            return np.zeros((0, s, s, 2), np.float32)
        if self.raft is not None:
            return self._raft(pairs)
        grey = [(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)) for a, b in pairs]
        if self.cfg.method == "dis":
            return np.stack([self.dis.calc(a, b, None) for a, b in grey])
        c = self.cfg
        return np.stack([
            cv2.calcOpticalFlowFarneback(a, b, None, c.pyr_scale, c.levels, c.winsize, c.iterations, c.poly_n, c.poly_sigma, 0)
            for a, b in grey
        ])

    def _raft(self, pairs: np.ndarray) -> np.ndarray:
        import torch

        out = []
        for i in range(0, len(pairs), self.cfg.batch_size):
            x = torch.from_numpy(pairs[i : i + self.cfg.batch_size]).to(self.device)
            x = x.permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0  # [B, 2, 3, S, S] in [-1, 1]
            s = x.shape[-1]
            # RAFT needs sides divisible by 8 and at least 128 (its correlation pyramid).
            pad = max(128, s + (-s) % 8) - s
            if pad:
                x = torch.nn.functional.pad(x.flatten(0, 1), (0, pad, 0, pad), mode="replicate").unflatten(0, (-1, 2))
            with torch.inference_mode():
                flow = self.raft(x[:, 0], x[:, 1], num_flow_updates=self.cfg.raft_iters)[-1]
            out.append(flow[..., :s, :s].permute(0, 2, 3, 1).float().cpu().numpy())
        return np.concatenate(out)


def _raft_weights(method: str) -> Any:
    from torchvision.models import optical_flow as of

    return {"raft-small": of.Raft_Small_Weights.DEFAULT, "raft-large": of.Raft_Large_Weights.DEFAULT}[method]


def check_flow(cfg: FlowConfig) -> str:
    """Whether the flow method's weights will load, without loading them: ``"opencv"``,
    ``"random"``, ``"file"``, ``"cached"`` or ``"download"``; else :class:`WeightsNotFound`."""
    if not cfg.method.startswith("raft"):
        return "opencv"
    if cfg.init == "random":
        return "random"
    if cfg.raft_weights:
        if not Path(cfg.raft_weights).is_file():
            raise WeightsNotFound(f"{cfg.method}: weights file not found: {cfg.raft_weights}")
        return "file"
    import torch.hub

    url = _raft_weights(cfg.method).url
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    if (cache / url.rsplit("/", 1)[-1]).is_file():
        return "cached"
    reason = reachable(url)
    if reason:
        raise WeightsNotFound(
            f"{cfg.method}: pretrained weights {url.rsplit('/', 1)[-1]} are not in torchvision's cache ({cache}) "
            f"and could not be downloaded ({reason}). Download {url} on a machine with network access into "
            f"{cache}, or pass --flow-weights FILE; --init random only for tests and speed measurements."
        )
    return "download"


def _load_raft(cfg: FlowConfig, device: str) -> tuple[Any, str]:
    import torch
    from torchvision.models import optical_flow as of

    how = check_flow(cfg)
    model = {"raft-small": of.raft_small, "raft-large": of.raft_large}[cfg.method](weights=None)
    if how == "random":
        log.warning("%s: random initialisation (--init random), not pretrained weights", cfg.method)
        source = "random"
    elif how == "file":
        model.load_state_dict(torch.load(cfg.raft_weights, map_location="cpu", weights_only=True))
        source = str(Path(cfg.raft_weights).resolve())
    else:
        weights = _raft_weights(cfg.method)
        try:
            model.load_state_dict(weights.get_state_dict(progress=False))
        except Exception as err:  # noqa: BLE001 - urllib, OSError, ...: all mean "not available"
            raise WeightsNotFound(f"{cfg.method}: pretrained weights could not be had from {weights.url} "
                                  f"({type(err).__name__}: {err}); pass --flow-weights FILE") from None
        source = weights.url
    return model.eval().to(device), source
