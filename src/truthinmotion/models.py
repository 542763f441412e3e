"""Detectors: one DINOv2 encoder per modality, a fusion, and a small head.

DINOv2 (Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", 2023)
through transformers. The embedding of a picture is the normalised CLS token. As in the study,
the encoders are frozen but for their last ``train_blocks`` transformer blocks and final norm,
and the head is Linear -> ReLU -> Dropout -> Linear giving one logit (fake).

A saved detector (``save_pretrained``) is a directory with ``model.safetensors`` and
``config.json`` holding the detector's settings, the backbone's full architecture, the
preprocessing, the feature settings it was trained on and the weights it started from, so
``Detector.from_pretrained(path)`` rebuilds it with no flags and no network.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ConfigError, Settings, require
from .io import atomic_path, atomic_write_text
from .weights import INITS, check_hf_model, load_hf_model

__all__ = [
    "BACKBONES",
    "MODALITIES",
    "Detector",
    "DetectorConfig",
    "DetectorOutput",
    "Preprocess",
    "SavedDetector",
    "build_backbone",
    "check_backbone",
    "detector_dir",
    "read_detector_config",
    "parse_modalities",
]

log = logging.getLogger(__name__)

MODALITIES = ("flow", "depth", "rgb")


@dataclass(frozen=True)
class Preprocess:
    """What a backbone expects of its input pictures; travels with the weights."""

    size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet, as DINOv2 was trained
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> "Preprocess":
        """From the ``preprocess`` entry of a saved detector's config (missing keys: defaults)."""
        r = record or {}
        return cls(r.get("size", cls.size), tuple(r.get("mean", cls.mean)), tuple(r.get("std", cls.std)))


@dataclass(frozen=True)
class BackboneSpec:
    hub_id: str | None  # None: a test size with no published weights
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    use_swiglu_ffn: bool = False


# The published DINOv2 sizes, plus tiny ones of the same architecture for tests and the demo.
BACKBONES: dict[str, BackboneSpec] = {
    "dinov2-small": BackboneSpec("facebook/dinov2-small", 384, 12, 6),
    "dinov2-base": BackboneSpec("facebook/dinov2-base", 768, 12, 12),
    "dinov2-large": BackboneSpec("facebook/dinov2-large", 1024, 24, 16),
    "dinov2-giant": BackboneSpec("facebook/dinov2-giant", 1536, 40, 24, use_swiglu_ffn=True),
    "dinov2-tiny": BackboneSpec(None, 64, 2, 2),
    "dinov2-tiny-wide": BackboneSpec(None, 128, 2, 2),  # a tiny teacher for distillation tests
}


def _dinov2_config(spec: BackboneSpec) -> Any:
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=spec.hidden_size, num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads, use_swiglu_ffn=spec.use_swiglu_ffn,
        image_size=518, patch_size=14,  # the published checkpoints' position grid (37 x 37)
    )


def build_backbone(name: str, *, init: str = "pretrained", path: str | None = None) -> tuple[nn.Module, dict]:
    """A DINOv2 encoder from :data:`BACKBONES` (or a local directory ``path``): (model, weights record)."""
    from transformers import Dinov2Model

    source = _backbone_source(name, init, path)
    return load_hf_model(Dinov2Model, source, init=init, random_config=lambda: _dinov2_config(BACKBONES[name]), what=name)


def _backbone_source(name: str, init: str, path: str | None) -> str:
    if name not in BACKBONES:
        raise ConfigError(f"backbone: {name!r} not one of {', '.join(BACKBONES)}")
    source = path or BACKBONES[name].hub_id
    if source is None:
        if init != "random":
            raise ConfigError(f"{name} is a test size with no published weights: use --init random")
        source = name
    return source


def check_backbone(name: str, *, init: str = "pretrained", path: str | None = None) -> str:
    """Whether :func:`build_backbone` will find its weights, without loading them."""
    return check_hf_model(_backbone_source(name, init, path), init=init, random_known=True, what=name)


def parse_modalities(text: str | tuple[str, ...]) -> tuple[str, ...]:
    mods = tuple(text.split("+")) if isinstance(text, str) else tuple(text)
    bad = [m for m in mods if m not in MODALITIES]
    require(mods and not bad and len(set(mods)) == len(mods),
            f"modality: {'+'.join(mods)!r}; use flow, depth, rgb or a '+' of distinct ones")
    return mods


@dataclass(frozen=True)
class DetectorConfig(Settings):
    backbone: str = "dinov2-small"  # a BACKBONES name
    modality: str = "flow"  # flow, depth, rgb or a '+' of them (flow+depth)
    fusion: str = "concat"  # concat: embeddings into one head; score: mean of per-modality probabilities
    shared_encoder: bool = False  # one encoder for all modalities (fewer parameters)
    train_blocks: int = 1  # last N blocks (+ final norm) trained; 0: head only; -1: everything
    head_hidden: int = 256  # width of the head's hidden layer
    dropout: float = 0.3  # dropout before the head's last layer

    def check(self) -> None:
        require(self.backbone in BACKBONES, f"backbone: {self.backbone!r} not one of {', '.join(BACKBONES)}")
        parse_modalities(self.modality)
        require(self.fusion in ("concat", "score"), "fusion: concat or score")
        require(self.train_blocks >= -1, "train_blocks: -1 (all), 0 (head only) or a number of blocks")
        require(self.head_hidden >= 1, "head_hidden: at least 1")
        require(0.0 <= self.dropout < 1.0, "dropout: 0 to 1")

    @property
    def modalities(self) -> tuple[str, ...]:
        return parse_modalities(self.modality)


@dataclass
class DetectorOutput:
    logit: torch.Tensor  # [B] fake logit (for score fusion: logit of the mean probability)
    embedding: torch.Tensor  # [B, D] fused embedding (concatenated CLS embeddings)
    parts: torch.Tensor  # [B, M] per-modality logits (score fusion), else [B, 1]


def _head(d: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


class SavedDetector:
    """What every saved detector (PyTorch or ONNX) tells about itself, from its ``extra`` record."""

    extra: dict[str, Any]

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess.from_record(self.extra.get("preprocess"))

    @property
    def threshold(self) -> float:
        return float(self.extra.get("threshold", 0.5))


def detector_dir(path: str | Path) -> Path:
    """A run directory's ``best/``, or ``path`` itself when it is a detector directory."""
    path = Path(path)
    return path / "best" if (path / "best" / "config.json").is_file() else path


def read_detector_config(path: Path) -> dict[str, Any]:
    """A saved detector's ``config.json``: a :class:`ConfigError` (not a traceback) when it is
    missing, not JSON, or not a detector's."""
    file = path / "config.json"
    if not file.is_file():
        raise ConfigError(f"no detector at {path}: expected config.json and weights (a run directory or its best/)")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{file} is damaged (not JSON: {err}); re-copy or retrain the detector") from None
    if not isinstance(data, dict) or "detector" not in data or "backbone_config" not in data:
        raise ConfigError(f"{file} is not a truthinmotion detector config (no 'detector'/'backbone_config')")
    return data


class Detector(SavedDetector, nn.Module):
    """``forward({modality: [B, 3, H, W]}) -> DetectorOutput``; pictures already normalised."""

    def __init__(self, cfg: DetectorConfig, encoders: dict[str, nn.Module], extra: dict[str, Any] | None = None):
        super().__init__()
        self.cfg = cfg
        self.extra = dict(extra or {})  # preprocessing, features, weights, threshold: saved as is
        mods = cfg.modalities
        self.encoders = nn.ModuleDict(encoders)
        self.key = {m: ("shared" if cfg.shared_encoder else m) for m in mods}
        d = next(iter(encoders.values())).config.hidden_size
        self.embed_dim = d * len(mods)
        if cfg.fusion == "concat":
            self.heads = nn.ModuleDict({"fused": _head(d * len(mods), cfg.head_hidden, cfg.dropout)})
        else:
            self.heads = nn.ModuleDict({m: _head(d, cfg.head_hidden, cfg.dropout) for m in mods})
        self.apply_freeze()

    # ------------------------------------------------------------ construction

    @classmethod
    def build(
        cls, cfg: DetectorConfig, *, init: str = "pretrained", backbone_path: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> "Detector":
        """A new detector: encoders from pretrained (or random) DINOv2 weights, a fresh head."""
        if init not in INITS:
            raise ConfigError(f"init: {init!r} not one of {', '.join(INITS)}")
        keys = ["shared"] if cfg.shared_encoder else list(cfg.modalities)
        encoders, weights = {}, None
        for k in keys:
            encoders[k], weights = build_backbone(cfg.backbone, init=init, path=backbone_path)
        extra = {"preprocess": asdict(Preprocess()), **(extra or {}), "backbone_weights": weights}
        return cls(cfg, encoders, extra)

    def apply_freeze(self) -> None:
        n = self.cfg.train_blocks
        for enc in self.encoders.values():
            for p in enc.parameters():
                p.requires_grad = n == -1
            # DINOv2's mask token stands in for masked patches in its self-supervised pretraining;
            # a detector never masks (no bool_masked_pos), so it gets no gradient, and DDP stops
            # at the second step on a parameter that requires one and got none.
            enc.embeddings.mask_token.requires_grad = False
            if n > 0:
                for block in enc.encoder.layer[-n:]:
                    for p in block.parameters():
                        p.requires_grad = True
                for p in enc.layernorm.parameters():
                    p.requires_grad = True
        for p in self.heads.parameters():
            p.requires_grad = True

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------ forward

    def embed(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """CLS embedding ``[B, d]`` per modality."""
        return {m: self.encoders[self.key[m]](pixel_values=inputs[m]).pooler_output for m in self.cfg.modalities}

    def forward(self, inputs: dict[str, torch.Tensor]) -> DetectorOutput:
        embs = self.embed(inputs)
        fused = torch.cat([embs[m] for m in self.cfg.modalities], dim=-1)
        if self.cfg.fusion == "concat":
            logit = self.heads["fused"](fused)[:, 0]
            return DetectorOutput(logit, fused, logit[:, None])
        parts = torch.stack([self.heads[m](embs[m])[:, 0] for m in self.cfg.modalities], dim=1)
        prob = torch.sigmoid(parts.float()).mean(1).clamp(1e-6, 1 - 1e-6)
        return DetectorOutput(torch.logit(prob), fused, parts)

    # ------------------------------------------------------------ persistence

    def config_dict(self) -> dict[str, Any]:
        return {
            "format": "truthinmotion-detector/1",
            "detector": self.cfg.to_dict(),
            "backbone_config": next(iter(self.encoders.values())).config.to_dict(),
            **self.extra,
        }

    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``path`` (each atomically)."""
        from safetensors.torch import save_file

        path = Path(path)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(path / "model.safetensors", suffix=".safetensors") as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        atomic_write_text(path / "config.json", json.dumps(self.config_dict(), indent=2, default=str))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str = "cpu") -> "Detector":
        """Rebuild a saved detector from its directory alone (no flags, no network).

        Tensors keep the dtype they were saved in (a bf16 variant stays bf16 in memory).
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        from transformers import Dinov2Config, Dinov2Model

        path = detector_dir(path)
        data = read_detector_config(path)
        cfg = DetectorConfig.from_dict(data["detector"])
        bcfg = Dinov2Config.from_dict(data["backbone_config"])
        keys = ["shared"] if cfg.shared_encoder else list(cfg.modalities)
        extra = {k: v for k, v in data.items() if k not in ("format", "detector", "backbone_config")}
        model = cls(cfg, {k: Dinov2Model(bcfg) for k in keys}, extra)
        weights = path / "model.safetensors"
        try:
            state = load_file(str(weights), device=map_location)
            for name, t in model.state_dict(keep_vars=True).items():  # keep each tensor's saved dtype
                if name in state and state[name].dtype != t.dtype:
                    t.data = t.data.to(state[name].dtype)
            model.load_state_dict(state)
        except (SafetensorError, OSError, RuntimeError) as err:
            raise ConfigError(f"{weights} cannot be loaded ({type(err).__name__}: {str(err).splitlines()[0]}); "
                              "it is missing, damaged or of another detector") from None
        return model.eval()
