"""fp32 models through ONNX Runtime on the CPU: the same numbers as PyTorch, about twice as fast.

On this project's 2-core CPU (``benchmarks/detect.py``), DINOv2-S and Depth Anything V2-S at 224
run about 2x faster in ONNX Runtime than in PyTorch eager mode, with outputs equal within
float rounding (probabilities within 1e-5): ONNX Runtime fuses attention and layer norms and
runs its own tuned kernels. Unlike ``tim compress --method int8`` nothing is approximated, so
:func:`resolve_runtime` picks it by default on the CPU.

A model is exported once (PyTorch's TorchScript exporter, opset 17, a dynamic batch axis) into a
cache keyed by a hash of its weights and configuration, so a later run loads the file instead of
exporting again: ``$TIM_CACHE_DIR``, else ``$XDG_CACHE_HOME/truthinmotion``, else
``~/.cache/truthinmotion``. Where that cannot be written the export goes to a temporary folder
for this process, with a warning, removed when the process exits. The cache keeps the most
recently used exports up to ``$TIM_ONNX_CACHE_GB`` (10 GB; a DINOv2-S flow+depth detector is
about 180 MB).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ..core.errors import ConfigError
from ..core.io import atomic_path
from .runtime import RUNTIMES

__all__ = [
    "CPU_ROWS", "RUNTIMES", "cache_root", "cpu_session", "export_cached", "export_module", "fingerprint",
    "prune", "quantize_int8", "resolve_runtime", "run_batches",
]

log = logging.getLogger(__name__)

# Rows per ONNX Runtime call on the CPU: measured on DINOv2-S at 224 with 2 threads, 8 to 16
# pictures a call run 18% faster than 64 (the activations stay in cache).
CPU_ROWS = 16
# Part of every export's cache key: 2 since position grids are exported as constants, so that
# exports cached before are made again.
EXPORT_VERSION = 2


def resolve_runtime(runtime: str, device: str) -> str:
    """``torch`` or ``onnx`` for a model run on ``device``: ``auto`` is ONNX Runtime on the CPU
    (same results, faster) and PyTorch on a GPU (autocast and CUDA kernels)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime: {runtime!r} not one of {', '.join(RUNTIMES)}")
    if runtime == "auto":
        return "onnx" if device == "cpu" else "torch"
    if runtime == "onnx" and device != "cpu":
        raise ConfigError(f"runtime onnx runs fp32 models on the CPU; with --device {device} use --runtime torch "
                          "(or `tim compress --method onnx` for ONNX Runtime's CUDA provider)")
    return runtime


def cache_root() -> Path:
    if os.environ.get("TIM_CACHE_DIR"):
        return Path(os.environ["TIM_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "truthinmotion"


def fingerprint(module: torch.nn.Module, *parts: object) -> str:
    """A hash of a module's weights (every tensor of its state), its class and ``parts`` (its
    configuration, the input layout), and the exporter's version: the cache key of its export."""
    h = hashlib.sha256()
    for part in (type(module).__qualname__, torch.__version__, EXPORT_VERSION, *parts):
        h.update(repr(part).encode())
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


_fallback_dir: Path | None = None


def export_cached(name: str, key: str, export: Callable[[Path], None]) -> Path:
    """The ONNX file ``<cache>/onnx/<name>-<key>.onnx``, written by ``export(path)`` when absent
    (under a temporary name, then renamed: a killed export leaves nothing half-written)."""
    global _fallback_dir
    path = cache_root() / "onnx" / f"{name}-{key}.onnx"
    if path.is_file():
        try:
            os.utime(path)  # last used: what pruning keeps
        except OSError:
            pass  # a read-only cache is still a cache
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            export(tmp)
        prune(path.parent, keep=path)
        return path
    except OSError as err:
        if _fallback_dir is None:
            _fallback_dir = Path(tempfile.mkdtemp(prefix="tim-onnx-"))
            atexit.register(_remove_fallback, _fallback_dir, os.getpid())
        log.warning("cannot write the ONNX cache %s (%s): exporting to %s for this run only (set TIM_CACHE_DIR "
                    "to a writable folder to keep it)", path.parent, err.strerror or err, _fallback_dir)
        path = _fallback_dir / path.name
        if not path.is_file():
            export(path)
        return path


def _remove_fallback(folder: Path, owner: int) -> None:
    if os.getpid() == owner:  # a forked worker that exits normally must not remove its parent's exports
        shutil.rmtree(folder, ignore_errors=True)


def prune(folder: Path, keep: Path, limit_gb: float | None = None) -> list[Path]:
    """Remove the least recently used exports until ``folder`` holds at most ``limit_gb``
    (``$TIM_ONNX_CACHE_GB``, 10 by default; every trained detector adds one), never ``keep``."""
    if limit_gb is None:
        limit_gb = float(os.environ.get("TIM_ONNX_CACHE_GB", 10))
    files = sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    removed = []
    for old in files:
        if total <= limit_gb * 1e9:
            break
        if old == keep:
            continue
        total -= old.stat().st_size
        old.unlink(missing_ok=True)
        removed.append(old)
    if removed:
        log.info("ONNX cache over %.1f GB: removed %d least recently used export(s) from %s", limit_gb, len(removed),
                 folder)
    return removed


def quantize_int8(fp32: Path, out: Path, op_types: Sequence[str] | None = ("MatMul",)) -> None:
    """ONNX Runtime dynamic int8 of ``fp32``'s ``op_types`` (None: every kind ONNX Runtime
    quantizes) with constant weights. Shape inference and graph optimisation come first, as ONNX
    Runtime recommends (more operations are recognised); 7-bit weights (``reduce_range``) avoid the
    saturation of non-VNNI int8 kernels and, measured on a detector, halved the probability error.
    Attention's activation-by-activation products stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = fp32.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32), str(prepared))
    quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, reduce_range=True,
                     op_types_to_quantize=list(op_types) if op_types else None,
                     extra_options={"MatMulConstBOnly": True})
    prepared.unlink()


def cpu_session(path: Path, what: str):
    """An ONNX Runtime CPU session for ``path`` with PyTorch's thread count (one setting for both
    runtimes) and no spinning between calls: idle ONNX threads must not take the cores that the
    decoder, MTCNN and flow are using in the same process."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ConfigError(f"{what}: the ONNX export {path} cannot be loaded ({str(err).splitlines()[0]}); "
                          "delete it to export again, or use --runtime torch") from None


@contextmanager
def _constant_position_grids(module: torch.nn.Module, example: Sequence[torch.Tensor]) -> Iterator[int]:
    """Within this context every ``interpolate_pos_encoding`` of ``module`` (DINOv2's, also Depth
    Anything's backbone) returns the grid it gave for ``example``, a constant; yields how many.

    DINOv2 resamples its position grid (37 x 37 in the published checkpoints) to the picture's
    patch grid on every call, and always when traced: a bicubic Resize that ONNX Runtime computed
    anew on every call, a fifth of int8 DINOv2-S's CPU time at batch 1 (78 -> 61 ms a picture on
    one thread without it). An export's pictures have one size (only the batch axis is dynamic),
    so the grid is a constant, computed here once by PyTorch. A module that resamples to several
    sizes in one call keeps its own method.
    """
    owners = [m for m in module.modules() if callable(getattr(type(m), "interpolate_pos_encoding", None))]
    grids: dict[int, list[torch.Tensor]] = {id(m): [] for m in owners}

    def recording(m: torch.nn.Module) -> Callable[..., torch.Tensor]:
        def record(*args, **kwargs) -> torch.Tensor:
            grid = type(m).interpolate_pos_encoding(m, *args, **kwargs)
            grids[id(m)].append(grid.detach().clone())
            return grid
        return record

    try:
        for m in owners:
            m.interpolate_pos_encoding = recording(m)
        with torch.no_grad():
            module(*example)
        frozen = 0
        for m in owners:
            del m.interpolate_pos_encoding
            seen = grids[id(m)]
            if seen and all(g.shape == seen[0].shape and torch.equal(g, seen[0]) for g in seen):
                m.interpolate_pos_encoding = lambda *args, _grid=seen[0], **kwargs: _grid
                frozen += 1
        yield frozen
    finally:
        for m in owners:
            m.__dict__.pop("interpolate_pos_encoding", None)


def export_module(module: torch.nn.Module, path: Path, example: Sequence[torch.Tensor], inputs: Sequence[str],
                  outputs: Sequence[str]) -> None:
    """Export ``module(*example)`` with a dynamic batch axis on every input and output, position
    grids as constants (:func:`_constant_position_grids`).

    The tracer's warnings (shapes read as Python numbers, the legacy exporter) are silenced: the
    exported graphs are checked against PyTorch's outputs in the tests, which is what they warn of.
    """
    axes = {n: {0: "batch"} for n in (*inputs, *outputs)}
    module.eval()
    with warnings.catch_warnings(), _constant_position_grids(module, example):
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, tuple(example), str(path), input_names=list(inputs),
                          output_names=list(outputs), dynamic_axes=axes, opset_version=17, dynamo=False)


def run_batches(session, feed: dict[str, np.ndarray], rows: int, outputs: Sequence[str] | None = None
                ) -> list[np.ndarray]:
    """``outputs`` (all when None) of ``session`` over ``feed``'s rows, ``rows`` rows per call,
    concatenated."""
    n = len(next(iter(feed.values())))
    starts = range(0, max(n, 1), max(rows, 1))
    parts = [session.run(outputs, {k: v[i:i + rows] for k, v in feed.items()}) for i in starts]
    return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]
