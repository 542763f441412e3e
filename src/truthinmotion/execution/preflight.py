"""Checks made before any video is touched: every model resolves, every output is writable, and
the disk can hold the artifacts; and the estimate of their size and time that ``tim index`` prints.

A long run that would fail at its third stage fails here, in seconds, with every problem listed
at once. Models are checked without loading them (:func:`..weights.check_hf_model`: local
directory, hub cache, or a hub that answers; ``HF_HUB_OFFLINE`` is respected).

The estimates come from measured figures (``python benchmarks/artifacts.py`` on the shared FF++
and DFDC videos, 480p to 1080p, at K=32 and 224-px crops, on a 2-core CPU): bytes per stored
picture scale with the crop's area; seconds per time point are one CPU process's, so more
workers or a GPU divide them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..core.errors import ConfigError

__all__ = ["Estimate", "check_space", "check_writable", "estimate", "human_bytes", "preflight"]

# Measured (see the module docstring; 2026-11-27, 9 videos x 32 points), per time point of one
# face at 224-px crops. Depth bytes are those of random-weights maps (spatially uncorrelated
# noise, the worst case for compression); faces seconds include decoding; depth seconds are
# Depth Anything V2 small at input 518 on 2 CPU cores.
BYTES_PER_POINT = {"faces": 26_600, "flow": 23_200, "depth": 23_700}
SECONDS_PER_POINT = {"faces": 0.029, "flow": 0.0065, "depth": 0.72}
FACES_PER_VIDEO = 1.0  # the shared videos hold one face each; MARGIN covers a few with more
MARGIN = 1.2  # the space check asks for this much more than the estimate


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""  # pragma: no cover


@dataclass
class Estimate:
    """Artifact bytes and single-process CPU seconds per stage for ``videos`` videos."""

    videos: int
    settings: str = ""  # what the figures assume
    bytes: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total_bytes(self) -> float:
        return sum(self.bytes.values())

    def lines(self) -> list[str]:
        out = [f"estimate for {self.videos} videos at {self.settings} (from measured per-point figures; time for "
               "1 CPU process, which a GPU or --workers divide):"]
        for stage in self.bytes:
            out.append(f"  {stage:6s} {human_bytes(self.bytes[stage]):>9s}  ~{_duration(self.seconds.get(stage, 0))}")
        out.append(f"  total  {human_bytes(self.total_bytes):>9s}  ~{_duration(sum(self.seconds.values()))}")
        return out


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def estimate(videos: int, num_points: int = 32, size: int = 224, stages: Iterable[str] = ("faces", "flow", "depth"),
             depth_input: int = 518) -> Estimate:
    """Bytes and seconds of ``stages`` for ``videos`` videos at ``num_points`` points of ``size``-px
    crops (depth time scales with its input's area)."""
    points = videos * num_points * FACES_PER_VIDEO
    area = (size / 224) ** 2
    stages = tuple(stages)
    depth = f", depth input {depth_input}" if "depth" in stages else ""
    est = Estimate(videos, f"{num_points} points, {size}-px crops{depth}")
    for stage in stages:
        est.bytes[stage] = points * BYTES_PER_POINT[stage] * area
        scale = (depth_input / 518) ** 2 if stage == "depth" else area if stage == "flow" else 1.0
        est.seconds[stage] = points * SECONDS_PER_POINT[stage] * scale
    return est


def _existing(path: Path) -> Path:
    path = Path(path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: str | Path) -> None:
    """``path`` (a directory, made if missing) can be written: a file is created in it, or in
    the nearest directory above it that exists, and removed."""
    base = _existing(Path(path))
    if not base.is_dir():
        where = "" if base == Path(path).expanduser().absolute() else f" (in the way of {path})"
        raise ConfigError(f"{base} is a file, not a directory{where}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tim-write-check-", dir=base)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise ConfigError(f"cannot write to {path} ({base}: {err.strerror or err})") from None


def check_space(path: str | Path, need: float, what: str = "the artifacts") -> None:
    """Free space where ``path`` lives covers ``need`` bytes with the margin, else a ConfigError."""
    free = shutil.disk_usage(_existing(Path(path))).free
    if need * MARGIN > free:
        raise ConfigError(f"{what} need about {human_bytes(need)} (x{MARGIN} margin), and {path} has "
                          f"{human_bytes(free)} free: free space, choose another directory, or "
                          "pass --no-space-check")


def preflight(*, models: Iterable[Callable[[], object]] = (), outputs: Iterable[str | Path] = (),
              space: tuple[str | Path, float, str] | None = None) -> None:
    """Run every check and report every failure at once (a ConfigError listing them): ``models``
    are callables that raise when a model cannot be had, ``outputs`` directories to write,
    ``space`` (directory, bytes needed, what) the disk space check."""
    problems = []
    checks = [*models, *(lambda p=p: check_writable(p) for p in outputs)]
    if space is not None:
        checks.append(lambda: check_space(*space))
    for check in checks:
        try:
            check()
        except ConfigError as err:
            problems.append(str(err))
    if problems:
        raise ConfigError("before touching any video:\n  " + "\n  ".join(problems))
