"""Artifacts on disk: atomic writes, ``.npz`` with metadata, the error log, the work directory.

Every artifact is written to a temporary name in the same directory and renamed into place, so
an interrupted run never leaves a half-written file and a re-run can trust what exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import csv
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .errors import ConfigError
from .errors import StageError

__all__ = [
    "without_paths",
    "ErrorLog",
    "WorkDir",
    "atomic_path",
    "atomic_write_text",
    "check_settings",
    "check_video_id",
    "clean_temporaries",
    "source_identity",
    "dir_size",
    "path_key",
    "load_npz",
    "publish",
    "save_npz",
    "umask",
]


def umask() -> int:
    """The process's file-creation mask, read without changing it where Linux says it
    (``/proc/self/status``, kernel 4.7+); elsewhere set and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish(path: Path) -> None:
    """Give a file (or directory) the permissions a plain ``open`` (``mkdir``) would have under the
    process umask: temporary files and directories are created private (``0600``/``0700``), and
    artifacts on shared storage must be readable by the workers and users the umask allows."""
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask())


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.
    The file gets the permissions of the process umask (see :func:`publish`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            publish(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def clean_temporaries(folder: Path) -> int:
    """Remove what an earlier run killed mid-write left behind (``.NAME.*.tmp*`` files of
    :func:`atomic_path`): a SIGKILL or power loss gives no chance to clean up. One run of a stage
    per work directory at a time is assumed. Returns how many files were removed."""
    folder = Path(folder)
    removed = 0
    if folder.is_dir():
        for p in folder.glob(".*.tmp*"):
            if p.is_file():
                p.unlink(missing_ok=True)
                removed += 1
    return removed


def check_settings(folder: Path, record: dict[str, Any], overwrite: bool) -> None:
    """One settings record per artifact directory (``settings.json``): artifacts made with other
    settings are refused unless ``overwrite`` (then everything in it is recomputed)."""
    path = Path(folder) / "settings.json"
    if path.is_file() and not overwrite:
        old = json.loads(path.read_text())
        if old != record:
            changed = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
            raise ConfigError(
                f"{folder} holds artifacts made with other settings ({', '.join(f'{k}: {old.get(k)!r}' for k in changed)}); "
                f"now asked for {', '.join(f'{k}: {record.get(k)!r}' for k in changed)}. Use another work or "
                "artifact directory, or --overwrite to recompute them all."
            )
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True))


def source_identity(path: str | Path) -> dict[str, Any]:
    """What identifies a source file cheaply: its resolved path, size and modification time."""
    p = Path(path)
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def path_key(path: str | Path) -> str:
    """A readable name unique to a folder: its last two path parts and a short hash of its resolved
    path (``celebdf-work-1a2b3c``), since work directories are often all called ``work``."""
    path = Path(path).resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:6]
    return "-".join([*(part for part in path.parts[-2:] if part != path.anchor), digest])


def dir_size(path: Path) -> int:
    """Bytes of every file below ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def save_npz(path: Path, meta: dict[str, Any], compress: bool = True, **arrays: np.ndarray) -> None:
    """Write arrays plus a JSON ``meta`` record atomically (``.npz`` suffix required)."""
    saver = np.savez_compressed if compress else np.savez
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            saver(f, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)


def load_npz(path: Path, keys: Iterable[str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read an artifact written by :func:`save_npz`: (arrays, meta); only ``keys`` if given
    (each array of an ``.npz`` is read and decompressed on its own)."""
    with np.load(path, allow_pickle=False) as data:
        wanted = [k for k in data.files if k != "meta" and (keys is None or k in keys)]
        arrays = {k: data[k] for k in wanted}
        meta = json.loads(str(data["meta"])) if "meta" in data.files else {}
    return arrays, meta


class ErrorLog:
    """``WORKDIR/errors.csv``: one row per (video, stage) that failed, replaced on each attempt."""

    FIELDS = ("video_id", "stage", "status", "reason", "time")

    def __init__(self, path: Path):
        self.path = Path(path)

    def rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def update(self, stage: str, attempted: set[str], failures: dict[str, StageError]) -> None:
        """Drop this stage's rows for ``attempted`` videos, then add ``failures``; atomic."""
        keep = [r for r in self.rows() if not (r["stage"] == stage and r["video_id"] in attempted)]
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        for vid, err in sorted(failures.items()):
            keep.append(
                {"video_id": vid, "stage": stage, "status": err.status, "reason": err.reason, "time": now}
            )
        if not keep and not self.path.exists():
            return
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.FIELDS)
                writer.writeheader()
                writer.writerows(keep)


_SAFE_ID = re.compile(r"^[^/\\\x00-\x1f.][^/\\\x00-\x1f]{0,199}$")


def check_video_id(video_id: str) -> str:
    """A video id that names files only inside their directory: no path separators, no control
    characters, not starting with a dot (``..``, hidden files), at most 200 characters."""
    if not isinstance(video_id, str) or not _SAFE_ID.match(video_id):
        raise ConfigError(f"video id {video_id!r} cannot name a file inside the work directory: use letters, "
                          "digits and - _ . (no '/', '\\', leading '.', or control characters; at most 200)")
    return video_id


@dataclass(frozen=True)
class WorkDir:
    """The layout of a work directory (docs/architecture.md, "Artifacts")."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.csv"

    @property
    def errors(self) -> ErrorLog:
        return ErrorLog(self.root / "errors.csv")

    def faces(self, video_id: str) -> Path:
        return self.root / "faces" / f"{check_video_id(video_id)}.npz"

    def flow(self, method: str, video_id: str) -> Path:
        return self.root / "flow" / method / f"{check_video_id(video_id)}.npz"

    def depth(self, model: str, video_id: str) -> Path:
        return self.root / "depth" / model / f"{check_video_id(video_id)}.npz"


def without_paths(info: Any) -> Any:
    """``info`` (JSON-like data) with every absolute path replaced by its last part: what a
    client or a reader of a published file may learn of a model, not where a machine keeps it."""
    if isinstance(info, dict):
        return {k: without_paths(v) for k, v in info.items()}
    if isinstance(info, (list, tuple)):
        return [without_paths(v) for v in info]
    if isinstance(info, str) and os.path.isabs(info):
        return Path(info).name
    return info
