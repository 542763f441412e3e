"""``tim demo``: the pipeline on a generated data set, offline, in a few minutes on a CPU.

Real-style and fake-style face clips are generated from a public-domain portrait shipped with
scikit-image (see :mod:`truthinmotion.synth`), indexed as a ``folder`` data set, and run through
the stages. It shows the pipeline working end to end; it says nothing about accuracy on real
deepfakes (run the study on FaceForensics++ for that: see the README).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .faces import FacesConfig, run_faces
from .index import IndexConfig, index_dataset
from .synth import synth_clip, write_video

__all__ = ["DemoResult", "make_demo_data", "run_demo"]

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    out: Path
    lines: list[str]

    def summary(self) -> str:
        return "\n".join(self.lines)


def make_demo_data(root: Path, clips: int = 12, frames: int = 40, size: int = 256) -> Path:
    """Write ``clips`` real and ``clips`` fake clips under ``root/real`` and ``root/fake``."""
    for i in range(clips):
        for kind, fake in (("real", False), ("fake", True)):
            path = root / kind / f"{kind}{i:03d}.mp4"
            if not path.exists():
                write_video(path, synth_clip(fake, frames=frames, size=size, seed=1000 * fake + i))
    return root


def run_demo(out: str | Path = "demo-out", clips: int = 12, progress: bool = True) -> DemoResult:
    out = Path(out)
    data = make_demo_data(out / "data", clips=clips)
    work = out / "work"
    lines = [index_dataset(data, work, IndexConfig(format="folder")).summary()]
    report = run_faces(work, FacesConfig(num_points=16), progress=progress)
    lines.append(report.summary())
    lines.append(f"face crops are in {work / 'faces'}")
    return DemoResult(out, lines)
