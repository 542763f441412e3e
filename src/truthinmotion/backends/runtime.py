"""Where and how models run: the device (checked once, up front), mixed precision, the environment.

Device and dtype are decided here, at the edge, and passed in; nothing deeper guesses them.
Autocast follows nanoGPT's habit: ``nullcontext()`` where it is off, ``torch.autocast`` elsewhere.
"""

from __future__ import annotations

import platform
import re
import subprocess
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError

__all__ = ["AUTOCAST_MODES", "PRECISIONS", "RUNTIMES", "autocast_context", "check_device", "env_info", "grad_scaler"]

# What runs a model (onnxrun.resolve_runtime): auto is ONNX Runtime on the CPU, PyTorch on a GPU.
# Here, not in onnxrun, so that `tim` parses its options without importing torch.
RUNTIMES = ("auto", "torch", "onnx")
# A model's precision in ONNX Runtime on the CPU: int8 is dynamic quantization of its matrix products.
PRECISIONS = ("fp32", "int8")
# Mixed precision (autocast_context): auto is bf16 on a GPU and off on the CPU.
AUTOCAST_MODES = ("auto", "bf16", "fp16", "off")

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def check_device(device: str) -> str:
    """``device`` if this machine has it; a :class:`ConfigError` naming what is available if not."""
    import torch

    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ConfigError(f"device: {device!r} is not cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device}: no CUDA device is available here (torch {torch.__version__}); "
                              "use --device cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def autocast_context(device: str, mode: str = "auto"):
    """Mixed precision: ``auto`` is bf16 autocast on GPU and off on CPU; ``bf16``/``fp16`` ask for
    it on any device (CPU autocast supports both); ``off`` is ``nullcontext()``."""
    import torch

    kind = "cuda" if device.startswith("cuda") else "cpu"
    if mode == "off" or (mode == "auto" and kind == "cpu"):
        return nullcontext()
    dtype = torch.float16 if mode == "fp16" else torch.bfloat16
    return torch.autocast(kind, dtype=dtype)


def grad_scaler(device: str, mode: str) -> Any:
    """A gradient scaler, enabled for fp16 autocast only: fp16's narrow exponent range lets small
    gradients underflow to zero unless the loss is scaled; bf16 has fp32's range and needs none."""
    import torch

    kind = "cuda" if device.startswith("cuda") else "cpu"
    return torch.amp.GradScaler(kind, enabled=mode == "fp16")


def env_info(device: str) -> dict[str, Any]:
    """Versions, device and git revision: written into every run directory."""
    import numpy as np
    import torch
    import transformers

    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        ).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        rev = "unknown"
    from ..core import __version__

    return {
        "truthinmotion": __version__,
        "git_revision": rev,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
