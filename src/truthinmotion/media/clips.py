"""Generated face videos, for the offline demo and the tests (no data set, no network).

Faces come from public-domain portraits that ship with scikit-image (the astronaut Eileen
Collins, NASA). A "real" clip moves the whole picture smoothly, as a head and a hand-held camera
do; a "fake" clip moves it the same way but re-renders the face region in every frame on its
own, with a small random warp, colour shift and blending seam, as frame-wise face swaps do. The
flow of a real clip is smooth inside the face; the flow of a fake one carries the per-frame
jitter of the re-rendered region.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..core.io import atomic_path

__all__ = ["FACE_BOX", "portrait", "synth_clip", "write_video"]

# Face box of the astronaut portrait at 512x512 (x1, y1, x2, y2), found with MTCNN once.
FACE_BOX = (181, 62, 268, 172)


def portrait(size: int = 512) -> np.ndarray:
    """The astronaut portrait, RGB uint8 ``[size, size, 3]``."""
    from skimage import data

    img = data.astronaut()
    return img if size == img.shape[0] else cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def write_video(path: str | Path, frames: np.ndarray, fps: float = 25.0) -> Path:
    """Write RGB frames ``[T, H, W, 3]`` as an MPEG-4 ``.mp4`` (atomically)."""
    path = Path(path)
    t, h, w, _ = frames.shape
    with atomic_path(path, suffix=".mp4") as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise RuntimeError("OpenCV cannot write mp4v video on this machine")
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        writer.release()
    return path


def synth_clip(
    fake: bool, frames: int = 40, size: int = 256, seed: int = 0, strength: float = 2.0
) -> np.ndarray:
    """A clip ``[frames, size, size, 3]`` uint8 of the portrait with smooth motion.

    ``fake=True`` re-renders the face region per frame (warp of ~``strength`` pixels, colour
    shift, feathered seam). Motion, zoom and noise are random but seeded by ``seed``.
    """
    rng = np.random.default_rng(seed)
    src = portrait(512)
    # Smooth trajectory: sum of two slow sinusoids per parameter.
    t = np.arange(frames) / 25.0
    def wave(amp: float) -> np.ndarray:
        f, ph = rng.uniform(0.2, 0.6, 2), rng.uniform(0, 2 * np.pi, 2)
        return amp * (np.sin(2 * np.pi * f[0] * t + ph[0]) + 0.5 * np.sin(2 * np.pi * f[1] * t + ph[1]))
    dx, dy, rot, zoom = wave(12.0), wave(8.0), wave(3.0), 1.0 + wave(0.04)
    x1, y1, x2, y2 = FACE_BOX
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    mask = np.zeros((512, 512), np.float32)
    cv2.ellipse(mask, (int(cx), int(cy + 5)), (int((x2 - x1) * 0.45), int((y2 - y1) * 0.5)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 3)[..., None]
    out = np.empty((frames, size, size, 3), np.uint8)
    brightness = rng.uniform(-10, 10)
    for i in range(frames):
        img = src.astype(np.float32)
        if fake:
            # A frame-wise face swap: the face is re-synthesised on its own in every frame.
            jitter = rng.normal(0, strength, 2)
            a = rng.normal(0, 0.01 * strength)
            warp = cv2.getRotationMatrix2D((cx, cy), np.degrees(a), 1.0 + rng.normal(0, 0.01 * strength))
            warp[:, 2] += jitter
            face = cv2.warpAffine(img, warp, (512, 512), borderMode=cv2.BORDER_REFLECT)
            face = face * rng.normal(1.0, 0.03 * strength, 3) + rng.normal(0, 3 * strength, 3)
            img = mask * face + (1 - mask) * img
        m = cv2.getRotationMatrix2D((256, 200), rot[i], zoom[i])
        m[:, 2] += (dx[i], dy[i])
        img = cv2.warpAffine(img, m, (512, 512), borderMode=cv2.BORDER_REFLECT)
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA) + brightness
        img += rng.normal(0, 0.8, img.shape)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out
