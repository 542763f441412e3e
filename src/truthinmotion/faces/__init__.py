"""Layer 4: faces: MTCNN, tracks over time, square crops, and the faces stage over a work directory.
Re-exports each module's public names.
"""

from .artifact import SCHEMA, Faces, Track, load_crops, with_track_axis
from .config import FacesConfig
from .extract import extract_faces
from .mtcnn import FaceDetector, box_iou, crop_square
from .stage import run_faces

__all__ = ["SCHEMA", "FaceDetector", "Faces", "FacesConfig", "Track", "box_iou", "crop_square", "extract_faces",
           "load_crops", "run_faces", "with_track_axis"]
