"""truthinmotion: deepfake video detection from facial motion (optical flow) and depth."""

from .config import ConfigError
from .faces import FaceDetector, Faces, FacesConfig, extract_faces, run_faces
from .index import IndexConfig, index_dataset, read_manifest
from .io import StageError, WorkDir
from .stage import StageReport

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "FaceDetector",
    "Faces",
    "FacesConfig",
    "IndexConfig",
    "StageError",
    "StageReport",
    "WorkDir",
    "extract_faces",
    "index_dataset",
    "read_manifest",
    "run_faces",
]
