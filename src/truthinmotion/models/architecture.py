"""What a detector is built of: the DINOv2 backbones (Oquab et al., "DINOv2: Learning Robust
Visual Features without Supervision", 2023, through transformers), the preprocessing their
weights expect, the modalities, and the detector's settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..core.errors import ConfigError
from ..core.config import Settings, require
from ..backends.weights import check_hf_model, load_hf_model

__all__ = ["BACKBONES", "FUSIONS", "MODALITIES", "BackboneSpec", "DetectorConfig", "Preprocess", "build_backbone",
           "check_backbone", "parse_modalities"]

log = logging.getLogger(__name__)

MODALITIES = ("flow", "depth", "rgb")
FUSIONS = ("concat", "score")  # DetectorConfig.fusion


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
        require(self.fusion in FUSIONS, f"fusion: {' or '.join(FUSIONS)}")
        require(self.train_blocks >= -1, "train_blocks: -1 (all), 0 (head only) or a number of blocks")
        require(self.head_hidden >= 1, "head_hidden: at least 1")
        require(0.0 <= self.dropout < 1.0, "dropout: 0 to 1")

    @property
    def modalities(self) -> tuple[str, ...]:
        return parse_modalities(self.modality)


