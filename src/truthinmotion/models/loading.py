"""Loading a saved detector, whatever variant it is: PyTorch fp32, fp16/bf16, compiled, or ONNX
(fp32 or int8) run by ONNX Runtime; and the ONNX export they share."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..core.errors import ConfigError
from .detector import Detector, DetectorOutput, SavedDetector, detector_dir, read_record
from ..backends.onnxrun import (
    CPU_ROWS, cpu_session, export_cached, export_module, fingerprint, resolve_runtime, run_batches,
)

__all__ = ["OnnxDetector", "export_onnx", "inference_autocast", "load_detector"]

log = logging.getLogger(__name__)


class OnnxDetector(SavedDetector):
    """A detector exported to ONNX, run by ONNX Runtime; called like :class:`Detector`.

    Loaded from a ``tim compress --method onnx|int8`` directory, or made from a PyTorch detector
    on the fly by :meth:`exported` (the default CPU runtime of ``tim detect``). ``providers``
    lists where it really runs: with ``device="cuda"`` ONNX Runtime's CUDA provider when this
    onnxruntime build has it, else the CPU, with a warning that says so.
    """

    _source: Detector | None = None  # the PyTorch detector it was exported from, once loaded
    _source_tried = False

    def __init__(self, path: Path, device: str = "cpu"):
        import onnxruntime as ort

        self.record = read_record(path)
        self.cfg = self.record.detector
        self.device = device
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                log.warning("%s: this onnxruntime build has no CUDA provider; the ONNX detector runs on the CPU "
                            "(install onnxruntime-gpu for CUDA)", path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ONNX Runtime counts physical cores by default; use the threads PyTorch uses, so that
        # variants are compared on the same share of the machine.
        opts.intra_op_num_threads = torch.get_num_threads()
        try:
            session = ort.InferenceSession(str(path / self.record.inference.file), opts, providers=providers)
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ConfigError(f"{path}: the ONNX model cannot be loaded ({str(err).splitlines()[0]})") from None
        self._use(session)
        if device.startswith("cuda") and "CUDAExecutionProvider" not in self.providers:
            log.warning("%s: the ONNX detector runs on the CPU (providers: %s)", path, ", ".join(self.providers))

    @classmethod
    def exported(cls, model: Detector) -> "OnnxDetector":
        """``model``, fp32 PyTorch, run by ONNX Runtime on the CPU: the same probabilities within
        float rounding, exported once into the cache of :mod:`..backends.onnxrun`."""
        size = model.preprocess.size
        example = {m: torch.zeros(2, 3, size, size) for m in model.cfg.modalities}
        key = fingerprint(model, json.dumps(model.config_dict(), sort_keys=True, default=str))
        path = export_cached(f"detector-{model.cfg.backbone}", key, lambda p: export_onnx(model, p, example))
        self = cls.__new__(cls)
        self.cfg, self.record, self.device = model.cfg, model.record, "cpu"
        self._source, self._source_tried = model, True  # kept for gradients: ONNX Runtime has none
        self._use(cpu_session(path, "detector"))
        return self

    @property
    def source(self) -> Detector | None:
        """The PyTorch detector this one was made from, for what needs gradients (saliency): the
        one it was exported from, or the run directory a compressed copy names, when it is still
        there, loads and holds the weights the copy was made from (a run trained again since would
        explain another model); None otherwise. On this detector's device."""
        if not self._source_tried:
            self._source_tried = True
            run, made_from = self.record.inference.source, self.record.inference.source_weights
            if run and (detector_dir(run) / "model.safetensors").is_file():
                try:
                    source = Detector.from_pretrained(run).eval()
                except ConfigError as err:
                    log.warning("the PyTorch detector %s that %s was made from does not load (%s): "
                                "evidence comes without saliency", run, self.record.provenance.run, err)
                    return None
                if made_from and fingerprint(source) != made_from:
                    log.warning("%s holds other weights than %s was made from (trained again since?): "
                                "evidence comes without saliency", run, self.record.provenance.run)
                    return None
                self._source = source.to(self.device)
        return self._source

    def _use(self, session: Any) -> None:
        self.session = session
        self.providers = session.get_providers()
        self.names = [i.name for i in session.get_inputs()]

    def __call__(self, inputs: dict[str, torch.Tensor]) -> DetectorOutput:
        feed = {n: inputs[n].detach().cpu().float().numpy() for n in self.names}
        # On the CPU, 16 pictures a call keep the activations in cache: 18% faster than 64 for
        # DINOv2-S at 224 (2 threads); a GPU takes the whole batch.
        rows = len(next(iter(feed.values()))) if "CUDAExecutionProvider" in self.providers else CPU_ROWS
        logit, embedding = run_batches(self.session, feed, rows, ["logit", "embedding"])
        logit_t = torch.from_numpy(logit)
        return DetectorOutput(logit_t, torch.from_numpy(embedding), logit_t[:, None])

    def to(self, device: str) -> "OnnxDetector":
        return self

    def eval(self) -> "OnnxDetector":
        return self


def load_detector(path: str | Path, device: str = "cpu", runtime: str = "torch") -> Any:
    """Any saved detector (plain, half precision, compiled or ONNX) ready for inference.

    Half-precision variants stay in half precision in memory; they run under autocast. With
    ``runtime`` ``onnx`` (or ``auto`` on the CPU, :func:`..backends.onnxrun.resolve_runtime`) a plain
    fp32 detector runs in ONNX Runtime; the variants keep the runtime they were made for.
    """
    path = detector_dir(path)
    inference = read_record(path).inference
    if inference.runtime == "onnx":
        return OnnxDetector(path, device)
    if inference.autocast == "fp16" and not device.startswith("cuda"):
        raise ConfigError(f"{path} is an fp16 detector: fp16 autocast needs --device cuda (bf16 runs on CPU)")
    model = Detector.from_pretrained(path).to(device).eval()
    plain = inference.autocast in ("auto", "off") and not inference.compile
    if resolve_runtime(runtime, device) == "onnx" and plain:
        return OnnxDetector.exported(model)
    if inference.compile:
        model.forward = torch.compile(model.forward)  # type: ignore[method-assign]
    return model


def inference_autocast(model: Any) -> str:
    """The autocast mode a loaded detector runs with (``auto`` unless its record says)."""
    return model.record.inference.autocast


def export_onnx(model: Detector, path: Path, example: dict[str, torch.Tensor]) -> None:
    mods = list(model.cfg.modalities)

    class Wrapper(torch.nn.Module):
        def __init__(self, inner: Detector):
            super().__init__()
            self.inner = inner

        def forward(self, *xs: torch.Tensor):
            out = self.inner(dict(zip(mods, xs)))
            return out.logit, out.embedding

    export_module(Wrapper(model), path, [example[m][:2] for m in mods], mods, ["logit", "embedding"])
