"""Detectors: one DINOv2 encoder per modality (:mod:`.architecture`), a fusion, and a small head.

The embedding of a picture is the normalised CLS token. As in the study, the encoders are frozen
but for their last ``train_blocks`` transformer blocks and final norm, and the head is
Linear -> ReLU -> Dropout -> Linear giving one logit (fake).

A saved detector (``save_pretrained``) is a directory with ``model.safetensors`` and
``config.json``, its :class:`~.record.DetectorRecord`: the detector's settings, the backbone's
full architecture, the preprocessing, the faces, flow and depth settings it was trained on, its
verdict rule and where it came from, so ``Detector.from_pretrained(path)`` rebuilds it with no
flags and no network.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..backends.weights import INITS, resolve_folder
from ..core.errors import ConfigError
from ..core.io import atomic_path, atomic_write_text
from .architecture import DetectorConfig, Preprocess, build_backbone
from .record import DetectorRecord

__all__ = ["Detector", "DetectorOutput", "SavedDetector", "detector_dir", "read_record"]

log = logging.getLogger(__name__)


@dataclass
class DetectorOutput:
    logit: torch.Tensor  # [B] fake logit (for score fusion: logit of the mean probability)
    embedding: torch.Tensor  # [B, D] fused embedding (concatenated CLS embeddings)
    parts: torch.Tensor  # [B, M] per-modality logits (score fusion), else [B, 1]


def _head(d: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


class SavedDetector:
    """What every loaded detector (PyTorch or ONNX) tells about itself: its record."""

    record: DetectorRecord
    cfg: DetectorConfig

    @property
    def preprocess(self) -> Preprocess:
        return self.record.preprocess


def detector_dir(path: str | Path) -> Path:
    """A run directory's ``best/``, or ``path`` itself when it is a detector directory; a hub id
    (``org/name[@revision]``) is its snapshot in the Hugging Face cache, downloaded if missing
    (:func:`..backends.weights.resolve_folder`)."""
    path = resolve_folder(path, what="detector")
    return path / "best" if (path / "best" / "config.json").is_file() else path


def read_record(path: str | Path) -> DetectorRecord:
    """The record of the detector in ``path`` (a run directory or a detector directory): a
    :class:`ConfigError` (not a traceback) when it is missing, damaged, or not a detector's."""
    path = detector_dir(path)
    file = path / "config.json"
    if not file.is_file():
        raise ConfigError(f"no detector at {path}: expected config.json and weights (a run directory or its best/)")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{file} is damaged (not JSON: {err}); re-copy or retrain the detector") from None
    if not isinstance(data, dict) or "detector" not in data or "backbone_config" not in data:
        raise ConfigError(f"{file} is not a truthinmotion detector config (no 'detector'/'backbone_config')")
    return DetectorRecord.from_json(data, file).replace(provenance={"run": str(path.resolve())})


class Detector(SavedDetector, nn.Module):
    """``forward({modality: [B, 3, H, W]}) -> DetectorOutput``; pictures already normalised."""

    def __init__(self, cfg: DetectorConfig, encoders: dict[str, nn.Module], record: DetectorRecord | None = None):
        super().__init__()
        self.cfg = cfg
        bcfg = next(iter(encoders.values())).config.to_dict()
        # The architecture parts of the record are the model's own, whatever was passed.
        self.record = (record or DetectorRecord(cfg, bcfg)).replace(detector=cfg, backbone_config=bcfg)
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
        record: DetectorRecord | None = None,
    ) -> "Detector":
        """A new detector: encoders from pretrained (or random) DINOv2 weights, a fresh head;
        ``record`` gives what it will be trained on (its architecture parts are filled in)."""
        if init not in INITS:
            raise ConfigError(f"init: {init!r} not one of {', '.join(INITS)}")
        keys = ["shared"] if cfg.shared_encoder else list(cfg.modalities)
        encoders, weights = {}, None
        for k in keys:
            encoders[k], weights = build_backbone(cfg.backbone, init=init, path=backbone_path)
        model = cls(cfg, encoders, record)
        model.record = model.record.replace(provenance={"backbone_weights": weights})
        return model

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
        """The record as ``config.json`` holds it."""
        return self.record.to_json()

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
        record = read_record(path)
        cfg = record.detector
        bcfg = Dinov2Config.from_dict(record.backbone_config)
        keys = ["shared"] if cfg.shared_encoder else list(cfg.modalities)
        model = cls(cfg, {k: Dinov2Model(bcfg) for k in keys}, record)
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
