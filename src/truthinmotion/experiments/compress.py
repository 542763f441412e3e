"""Compression: mixed precision, torch.compile, ONNX (fp32 and dynamic int8), distillation.

Every method writes a run directory that ``tim detect``, ``tim evaluate`` and ``tim benchmark``
load like any other (:func:`load_detector`):

- ``fp16`` / ``bf16``: encoder weights in half precision, on disk and in memory (LayerNorms
  and the head stay fp32), and inference under autocast (Micikevicius et al., "Mixed Precision
  Training", ICLR 2018). fp16 needs a GPU; bf16 also runs on CPUs (slowly where they lack bf16
  units).
- ``compile``: ``torch.compile`` of the fp32 detector, applied when it is loaded: measured on its
  own, not mixed with a precision change.
- ``onnx`` / ``int8``: the detector exported to ONNX with a dynamic batch axis and run with ONNX
  Runtime; ``int8`` quantizes the weights of its matrix products to int8 with dynamic
  (per-batch) activation scales (ONNX Runtime ``quantize_dynamic``), the usual CPU deployment.
  (The ONNX export uses PyTorch's TorchScript exporter: the newer exporter needs onnxscript.)
- ``distill``: :mod:`truthinmotion.training.distill` (a trained student, not a conversion).

Each output is checked against the original PyTorch detector on real inputs (pictures of the
run's own validation videos): the largest probability difference is recorded in its config.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..core.errors import ConfigError
from ..training.dataset import VideoDataset, collate
from ..core.io import dir_size
from ..models.detector import Detector
from ..backends.onnxrun import fingerprint, quantize_int8
from ..backends.weights import resolve_folder
from ..backends.runtime import autocast_context
from ..models.loading import export_onnx, inference_autocast, load_detector
from ..training.runs import checkpoint_dir, restore_checkpoints

__all__ = ["COMPRESS_METHODS", "CompressResult", "compress", "sample_inputs", "write_variant"]

log = logging.getLogger(__name__)

COMPRESS_METHODS = ("fp16", "bf16", "compile", "onnx", "int8", "distill")


# ---------------------------------------------------------------- checking against the original


def sample_inputs(model: Detector, split: str = "val", max_pictures: int = 64) -> dict[str, torch.Tensor]:
    """Real backbone inputs: pictures of the run's own ``split`` videos (all their time points)."""
    if not model.record.provenance.workdir:
        raise ConfigError("the detector records no work directory (an exported detector): compress and benchmark "
                          "check a detector on its own validation videos, so give them the run directory it was "
                          "trained in")
    work, _ = model.record.provenance.work_directory()
    ds = VideoDataset(work, split, model.cfg.modality, model.record.data, model.preprocess,
                      expect=model.record.feature_expect())
    if len(ds) == 0:
        raise ConfigError(f"no {split} videos in {work} to check the compressed detector on")
    parts, n = [], 0
    for batch in DataLoader(ds, batch_size=2, collate_fn=collate):
        parts.append(batch["inputs"])
        n += len(batch["label"])
        if n >= max_pictures:
            break
    return {m: torch.cat([p[m] for p in parts])[:max_pictures] for m in model.cfg.modalities}


def _probs(model: Any, inputs: dict[str, torch.Tensor], device: str, amp: str, batch: int = 16) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(next(iter(inputs.values()))), batch):
            x = {m: t[i : i + batch].to(device) for m, t in inputs.items()}
            with autocast_context(device, amp):
                out.append(torch.sigmoid(model(x).logit.float()).cpu().numpy())
    return np.concatenate(out)


# ---------------------------------------------------------------- methods


@dataclass
class CompressResult:
    out_dir: Path
    method: str
    max_prob_diff: float | None
    checked_on: int
    size_bytes: int

    def summary(self) -> str:
        check = (f"; max probability difference vs the original {self.max_prob_diff:.2e} on "
                 f"{self.checked_on} real pictures" if self.max_prob_diff is not None else "")
        return f"{self.method}: {self.out_dir / 'best'} ({self.size_bytes / 1e6:.1f} MB){check}"


def write_variant(model: Detector, method: str, best: Path, example: dict[str, torch.Tensor]) -> None:
    """Write ``model`` as a ``method`` variant into the directory ``best`` (weights + config.json).

    ``example`` holds a couple of input pictures per modality (ONNX export traces them).
    """
    inference: dict[str, Any] = {"method": method, "parameters": sum(p.numel() for p in model.parameters())}
    if method == "compile":
        inference.update({"runtime": "torch", "autocast": "off", "compile": True})
        plain = copy.deepcopy(model)
        plain.record = plain.record.replace(inference=inference)
        plain.save_pretrained(best)
        return
    if method in ("fp16", "bf16"):
        dtype = torch.float16 if method == "fp16" else torch.bfloat16
        inference.update({"runtime": "torch", "autocast": method, "compile": False})
        half = copy.deepcopy(model)
        half.record = half.record.replace(inference=inference)
        # Encoder weights are stored in half precision; LayerNorms and the head stay fp32 (their
        # sums are where half precision loses most).
        for enc in half.encoders.values():
            enc.to(dtype)
            for mod in enc.modules():
                if isinstance(mod, torch.nn.LayerNorm):
                    mod.float()
        half.save_pretrained(best)
        return
    import onnx

    best.mkdir(parents=True, exist_ok=True)
    fp32 = best / "model.onnx"
    export_onnx(model, fp32, example)
    onnx.checker.check_model(str(fp32))
    file = "model.onnx"
    if method == "int8":
        quantize_int8(fp32, best / "model.int8.onnx", op_types=None)
        fp32.unlink()
        file = "model.int8.onnx"
    inference.update({"runtime": "onnx", "file": file})
    record = model.record.replace(inference=inference).to_json()
    (best / "config.json").write_text(json.dumps(record, indent=2, default=str))


def compress(
    run_dir: str | Path, method: str, out_dir: str | Path, *, device: str = "cpu", check_split: str = "val",
) -> CompressResult:
    """Write a compressed copy of ``run_dir``'s best detector into ``out_dir`` (a run directory).

    The variant is built in a temporary directory, checked against the original on real
    pictures, and only then renamed to ``out_dir/best``.
    """
    if method not in COMPRESS_METHODS or method == "distill":
        raise ConfigError(f"method: {method!r}; one of {', '.join(m for m in COMPRESS_METHODS if m != 'distill')} "
                          "(distillation: tim compress --method distill --teacher RUN)")
    run_dir, out_dir = resolve_folder(run_dir, what="detector"), Path(out_dir)  # a hub id: its snapshot
    if method == "fp16" and not device.startswith("cuda"):
        raise ConfigError("fp16 runs under CUDA autocast: use --device cuda, or bf16 on a CPU")
    if out_dir.resolve() == run_dir.resolve():
        raise ConfigError("the output run directory must differ from the input one")
    model = Detector.from_pretrained(run_dir).eval()
    inputs = sample_inputs(model, check_split)
    reference = _probs(model, inputs, "cpu", "off")
    model.record = model.record.replace(inference={"source": str(run_dir.resolve()), "source_weights": fingerprint(model)})
    # Built in a temporary folder and checked there; it replaces out_dir/best as a unit (and what
    # a kill of an earlier compression left half-done is settled first).
    restore_checkpoints(out_dir)
    with checkpoint_dir(out_dir, "best") as tmp:
        write_variant(model, method, tmp, {m: x[:2] for m, x in inputs.items()})
        check_device = "cpu" if method in ("onnx", "int8") else device
        loaded = load_detector(tmp, check_device)
        probs = _probs(loaded, inputs, check_device, inference_autocast(loaded))
        diff = float(np.abs(probs - reference).max())
        if not math.isfinite(diff):
            raise ConfigError(f"{method}: the variant's probabilities are not finite on the check pictures "
                              f"({int((~np.isfinite(probs)).sum())} of {len(probs)}); nothing was written")
        data = json.loads((tmp / "config.json").read_text())
        data["inference"].update({"max_prob_diff": diff, "checked_on": int(len(probs)), "check_split": check_split})
        (tmp / "config.json").write_text(json.dumps(data, indent=2, default=str))
    best = out_dir / "best"
    log.info("%s: max probability difference %.3e on %d real pictures", method, diff, len(probs))
    return CompressResult(out_dir, method, diff, int(len(probs)), dir_size(best))
