"""Relative depth of face crops with Depth Anything V2, and its encoding for a backbone.

Depth Anything V2 (Yang et al., "Depth Anything V2", NeurIPS 2024) through transformers
(``AutoModelForDepthEstimation``). As the model's own ``infer_image`` does, the input is resized to
a multiple of the 14-pixel patch (``input_size``, 518 by default) and normalised with ImageNet's
mean and standard deviation; the predicted relative depth (larger is nearer) is resized back to
the crop's size.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.config import Settings, require
from ..backends.onnxrun import cpu_session, export_cached, export_module, fingerprint, quantize_int8, resolve_runtime
from ..backends.runtime import PRECISIONS
from ..backends.weights import INITS, check_hf_model, load_hf_model

__all__ = ["DEPTH_MODELS", "DepthConfig", "DepthEstimator", "check_depth", "depth_to_rgb", "depth_anything_config"]

log = logging.getLogger(__name__)

# name -> (hub id, backbone sizes, head sizes), as published with the checkpoints.
DEPTH_MODELS: dict[str, dict[str, Any]] = {
    "depth-anything-v2-small": {
        "hub_id": "depth-anything/Depth-Anything-V2-Small-hf",
        "backbone": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "out_indices": [3, 6, 9, 12]},
        "head": {"reassemble_hidden_size": 384, "neck_hidden_sizes": [48, 96, 192, 384], "fusion_hidden_size": 64},
    },
    "depth-anything-v2-base": {
        "hub_id": "depth-anything/Depth-Anything-V2-Base-hf",
        "backbone": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "out_indices": [3, 6, 9, 12]},
        "head": {"reassemble_hidden_size": 768, "neck_hidden_sizes": [96, 192, 384, 768], "fusion_hidden_size": 128},
    },
    "depth-anything-v2-large": {
        "hub_id": "depth-anything/Depth-Anything-V2-Large-hf",
        "backbone": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "out_indices": [5, 12, 18, 24]},
        "head": {"reassemble_hidden_size": 1024, "neck_hidden_sizes": [256, 512, 1024, 1024], "fusion_hidden_size": 256},
    },
    # Same architecture at toy sizes: tests and the offline demo.
    "depth-anything-v2-tiny": {
        "hub_id": None,
        "backbone": {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "out_indices": [1, 2, 3, 4]},
        "head": {"reassemble_hidden_size": 32, "neck_hidden_sizes": [8, 16, 32, 32], "fusion_hidden_size": 16, "head_hidden_size": 8},
    },
}

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def depth_anything_config(name: str) -> Any:
    """The transformers config of a Depth Anything V2 size from :data:`DEPTH_MODELS`."""
    from transformers import DepthAnythingConfig, Dinov2Config

    spec = DEPTH_MODELS[name]
    b = spec["backbone"]
    backbone = Dinov2Config(
        hidden_size=b["hidden_size"], num_hidden_layers=b["num_hidden_layers"],
        num_attention_heads=b["num_attention_heads"], image_size=518, patch_size=14,
        out_indices=b["out_indices"], reshape_hidden_states=False, apply_layernorm=True,
    )
    return DepthAnythingConfig(backbone_config=backbone, depth_estimation_type="relative", **spec["head"])


@dataclass(frozen=True)
class DepthConfig(Settings):
    model: str = "depth-anything-v2-small"  # a DEPTH_MODELS name, a hub id or a local directory
    init: str = "pretrained"  # pretrained | random (tests and the offline demo only)
    input_size: int = 518  # side the crops are resized to; rounded to a multiple of 14
    batch_size: int = 8  # crops per forward pass
    autocast: bool = True  # fp16 autocast on CUDA (ignored on CPU)
    # fp32, or int8: ONNX Runtime dynamic int8 of the encoder's matrix products (CPU only), about
    # 1.6x faster for V2-small at 224 with maps ~2% off (benchmarks/detect.py reports the scores')
    precision: str = "fp32"

    def check(self) -> None:
        require(self.init in INITS, f"init: one of {', '.join(INITS)}")
        require(self.input_size >= 14, "input_size: at least 14")
        require(self.batch_size >= 1, "batch_size: at least 1")
        require(self.precision in PRECISIONS, f"precision: {' or '.join(PRECISIONS)}")

    @property
    def key(self) -> str:
        """Directory name of the artifacts: the table name, else the last part of the id/path."""
        name = self.model if self.model in DEPTH_MODELS else self.model.rstrip("/").rsplit("/", 1)[-1]
        return name + ("-int8" if self.precision == "int8" else "")


def _depth_source(cfg: DepthConfig) -> tuple[str, bool]:
    """(hub id or directory to load, whether the architecture is one of :data:`DEPTH_MODELS`)."""
    known = DEPTH_MODELS.get(cfg.model)
    if known and known["hub_id"] is None and cfg.init != "random":
        raise ConfigError(f"{cfg.model} is a test size with no published weights: use --init random")
    return ((known["hub_id"] or cfg.model) if known else cfg.model), known is not None


def check_depth(cfg: DepthConfig) -> str:
    """Whether the depth model will load, without loading it (see :func:`..weights.check_hf_model`)."""
    name, known = _depth_source(cfg)
    return check_hf_model(name, init=cfg.init, random_known=known, what="depth model")


class DepthEstimator:
    """Relative depth of RGB crops: ``__call__(crops [N, S, S, 3] uint8) -> [N, S, S] float32``.

    ``runtime`` (:func:`..backends.onnxrun.resolve_runtime`): on the CPU the model runs in ONNX Runtime
    by default, exported once to a cache; the numbers are PyTorch's within float rounding.
    """

    def __init__(self, cfg: DepthConfig, device: str = "cpu", runtime: str = "auto"):
        from transformers import AutoModelForDepthEstimation, DepthAnythingForDepthEstimation

        self.cfg, self.device = cfg, device
        if cfg.precision == "int8" and device != "cpu":
            raise ConfigError("depth precision int8 runs in ONNX Runtime on the CPU: use --device cpu or fp32")
        self.runtime = "onnx" if cfg.precision == "int8" else resolve_runtime(runtime, device)
        name, known = _depth_source(cfg)
        cls = DepthAnythingForDepthEstimation if cfg.init == "random" else AutoModelForDepthEstimation
        self.model, self.weights = load_hf_model(
            cls, name, init=cfg.init,
            random_config=(lambda: depth_anything_config(cfg.model)) if known else None,
            what="depth model",
        )
        self.model.eval().to(device)
        self.side = max(14, round(cfg.input_size / 14) * 14)
        self.session = None
        if self.runtime == "onnx":
            self.session = self._onnx_session()
            self.model = None  # ONNX Runtime holds the weights now; no second copy in memory

    def _onnx_session(self):
        import torch

        class PixelsToDepth(torch.nn.Module):
            def __init__(self, inner: torch.nn.Module):
                super().__init__()
                self.inner = inner

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.inner(pixel_values=x).predicted_depth

        side, int8 = self.side, self.cfg.precision == "int8"

        def export(path: Path) -> None:
            example = [torch.zeros(2, 3, side, side)]
            if not int8:
                export_module(PixelsToDepth(self.model), path, example, ["pixel_values"], ["depth"])
                return
            with tempfile.TemporaryDirectory() as tmp:
                fp32 = Path(tmp) / "fp32.onnx"
                export_module(PixelsToDepth(self.model), fp32, example, ["pixel_values"], ["depth"])
                quantize_int8(fp32, path)

        key = fingerprint(self.model, self.model.config.to_json_string(), side, self.cfg.precision)
        path = export_cached(f"depth-{self.cfg.key}-{side}", key, export)
        return cpu_session(path, "depth model")

    def describe(self) -> str:
        """``onnxruntime int8``, ``torch fp16``, ...: what runs the model, at what precision."""
        if self.session is not None:
            return f"onnxruntime {self.cfg.precision}"
        return "torch fp16" if self.cfg.autocast and self.device.startswith("cuda") else "torch fp32"

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        n, s = len(crops), crops.shape[1] if len(crops) else 0
        out = np.zeros((n, s, s), np.float32)
        mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1)
        use_amp = self.cfg.autocast and self.device.startswith("cuda")
        amp = torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext()
        for i in range(0, n, self.cfg.batch_size):
            x = torch.from_numpy(crops[i : i + self.cfg.batch_size]).to(self.device)
            x = x.permute(0, 3, 1, 2).float() / 255.0
            x = F.interpolate(x, size=(self.side, self.side), mode="bicubic", align_corners=False)
            x = (x - mean) / std
            if self.session is not None:
                depth = torch.from_numpy(self.session.run(None, {"pixel_values": x.numpy()})[0])
            else:
                with torch.inference_mode(), amp:
                    depth = self.model(pixel_values=x).predicted_depth  # [B, h, w]
            depth = F.interpolate(depth[:, None].float(), size=(s, s), mode="bilinear", align_corners=False)
            out[i : i + len(x)] = depth[:, 0].cpu().numpy()
        return out


def depth_to_rgb(depth: np.ndarray) -> np.ndarray:
    """The study's depth picture: each map min-max normalised over the whole crop, grey x 3
    (``encode_depth(depth, "crop-minmax")``)."""
    from .encodings import encode_depth

    return encode_depth(depth, "crop-minmax")
