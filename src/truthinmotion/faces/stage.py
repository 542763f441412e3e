"""The faces stage over a work directory: every video of the manifest, resumable and parallel,
failures in ``errors.csv``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence


from ..core.io import WorkDir, check_settings, clean_temporaries, load_npz, source_identity
from .mtcnn import FaceDetector
from ..execution.engine import LOCAL, Engine
from ..execution.preflight import estimate, preflight
from .config import FacesConfig
from .extract import extract_faces

__all__ = ["current", "run_faces"]

log = logging.getLogger(__name__)


def _init(cfg: FacesConfig, device: str) -> tuple[FacesConfig, FaceDetector]:
    return cfg, FaceDetector.from_config(cfg, device)


def _one(state: tuple[FacesConfig, FaceDetector], job: tuple[str, str, str]) -> dict:
    cfg, detector = state
    video_id, path, out = job
    faces = extract_faces(path, cfg, detector)
    faces.save(Path(out), cfg.compress, cfg.crop_format, cfg.crop_quality)
    return {"coverage": faces.meta["coverage"], "tracks": faces.meta["tracks"]}


def run_faces(
    workdir: str | Path,
    cfg: FacesConfig = FacesConfig(),
    *,
    workers: int = 1,
    device: str = "cpu",
    limit: int | None = None,
    only: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    space_check: bool = True,
    engine: Engine = LOCAL,
):
    """Crop faces for every video of ``WORKDIR/manifest.csv`` not already done.

    Before any video: the output directory must be writable and, unless not ``space_check``, its
    disk must hold the estimated crops (:mod:`..execution.preflight`).

    ``faces/settings.json`` records the settings: other settings are refused unless
    ``overwrite``. A video whose file changed since its crops were made (another path, size or
    modification time, e.g. after a re-index) is done again.
    """
    from ..data.index import read_manifest, select_rows
    from ..data.augment import is_derived
    from ..execution.stage import run_stage

    work = WorkDir(Path(workdir))
    rows = select_rows(read_manifest(workdir), only, limit)
    twins = [r for r in rows if is_derived(r)]
    if twins:  # their path is their source's: cropping it here would give a twin its source's faces
        log.info("%d pseudo-fakes or perturbed copies left to tim synth or --augment, which make their faces from "
                 "their sources' frames", len(twins))
        rows = [r for r in rows if not is_derived(r)]
    folder = work.root / "faces"
    jobs = [(r["video_id"], r["path"], str(work.faces(r["video_id"]))) for r in rows]
    todo = [j for j in jobs if overwrite or not current(Path(j[2]), j[1])]
    need = estimate(len(todo), cfg.num_points, cfg.size, ("faces",)).total_bytes
    preflight(outputs=[folder], space=(folder, need, "the face crops") if space_check and todo else None)
    check_settings(folder, cfg.to_dict(), overwrite)
    removed = clean_temporaries(folder)
    if removed:
        log.info("removed %d unfinished temporary files of an interrupted run", removed)
    return run_stage(
        "faces", todo, _one, init=_init, init_args=(cfg, device), workers=workers,
        errors=work.errors, skipped=len(jobs) - len(todo), progress=progress,
        engine=engine, gpus=engine.gpus if device.startswith("cuda") else 0.0,
    )


def current(artifact: Path, video: str, synth: dict | None = None) -> bool:
    """Whether ``artifact`` exists and was made from ``video`` as it is now (and, for a pseudo-fake,
    by the twin ``synth``: its kind, seed and settings)."""
    if not artifact.is_file():
        return False
    try:
        meta = load_npz(artifact, ())[1]
        now = source_identity(video)
    except (OSError, ValueError):
        return False
    if meta.get("source") != now:
        log.info("%s: its video changed since the crops were made (%s); recomputing", artifact.name, now["path"])
        return False
    if synth is not None and (meta.get("synth") or {}).get("spec") != synth:
        log.info("%s: made as another twin (other kind, seed or settings); recomputing", artifact.name)
        return False
    return True
