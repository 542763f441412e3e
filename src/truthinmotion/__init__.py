"""truthinmotion: deepfake video detection from facial motion (optical flow) and depth.

The public API, one function or class per stage (see DESIGN.md): ``index_dataset``,
``run_faces``/``extract_faces``, ``run_features``, ``train``, ``evaluate``, ``detect``/``Scorer``,
``compress``/``distill``, ``benchmark_runs``, and ``run_study`` / ``run_demo`` chaining them.
"""

import importlib
from typing import Any

# Name -> submodule. Imported on first use (PEP 562), so `tim --help` and light uses of the
# package do not pay for importing torch and transformers.
_EXPORTS = {
    "BACKBONES": "models",
    "BenchmarkResult": "bench",
    "ConfigError": "config",
    "DepthConfig": "features",
    "DepthEstimator": "features",
    "Detector": "models",
    "DetectorConfig": "models",
    "EvalResult": "evaluate",
    "FaceDetector": "faces",
    "Faces": "faces",
    "FacesConfig": "faces",
    "FlowConfig": "features",
    "FlowEstimator": "features",
    "IndexConfig": "index",
    "Scorer": "detect",
    "StageError": "io",
    "StageReport": "stage",
    "StudyConfig": "pipeline",
    "TrainConfig": "train",
    "TrainResult": "train",
    "Verdict": "detect",
    "WeightsNotFound": "weights",
    "WorkDir": "io",
    "benchmark_runs": "bench",
    "compress": "compress",
    "depth_to_rgb": "features",
    "detect": "detect",
    "distill": "distill",
    "evaluate": "evaluate",
    "extract_faces": "faces",
    "flow_to_rgb": "features",
    "index_dataset": "index",
    "load_detector": "compress",
    "read_manifest": "index",
    "run_demo": "demo",
    "run_faces": "faces",
    "run_features": "features",
    "run_study": "pipeline",
    "train": "train",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'truthinmotion' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [  # noqa: F822 - resolved lazily by __getattr__
    "BACKBONES",
    "BenchmarkResult",
    "ConfigError",
    "DepthConfig",
    "DepthEstimator",
    "Detector",
    "DetectorConfig",
    "EvalResult",
    "FaceDetector",
    "Faces",
    "FacesConfig",
    "FlowConfig",
    "FlowEstimator",
    "IndexConfig",
    "Scorer",
    "StageError",
    "StageReport",
    "StudyConfig",
    "TrainConfig",
    "TrainResult",
    "Verdict",
    "WeightsNotFound",
    "WorkDir",
    "benchmark_runs",
    "compress",
    "depth_to_rgb",
    "detect",
    "distill",
    "evaluate",
    "extract_faces",
    "flow_to_rgb",
    "index_dataset",
    "load_detector",
    "read_manifest",
    "run_demo",
    "run_faces",
    "run_features",
    "run_study",
    "train",
]
