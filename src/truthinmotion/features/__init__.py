"""Features stage: optical flow and relative depth for every face pair of the work directory.

Reads ``faces/<video_id>.npz`` and writes ``flow/<method>/<video_id>.npz`` (``flow (K,S,S,2)``
float16 pixels) and ``depth/<model>/<video_id>.npz`` (``depth (K,S,S)`` float16, of frame t's
crop), each with ``valid (K,)`` and a ``meta`` record of the settings and weights that made it.
A directory of artifacts also holds ``settings.json``: running again with other settings into the
same directory is an error, so artifacts of different settings are never mixed silently.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import ConfigError
from ..faces import Faces
from ..index import read_manifest, select_rows
from ..io import WorkDir, atomic_write_text, load_npz, save_npz
from .depth import DEPTH_MODELS, DepthConfig, DepthEstimator, depth_anything_config, depth_to_rgb
from .flow import FLOW_METHODS, FlowConfig, FlowEstimator, flow_to_rgb

__all__ = [
    "DEPTH_MODELS",
    "FLOW_METHODS",
    "DepthConfig",
    "DepthEstimator",
    "FlowConfig",
    "FlowEstimator",
    "compute_features",
    "depth_anything_config",
    "depth_to_rgb",
    "flow_to_rgb",
    "load_feature",
    "run_features",
]

log = logging.getLogger(__name__)


def compute_features(
    faces: Faces, flow: FlowEstimator | None, depth: DepthEstimator | None
) -> dict[str, np.ndarray]:
    """Flow ``[K, S, S, 2]`` and depth ``[K, S, S]`` (float32) of a video's valid time points.

    Points without a face get zeros (and ``valid`` False in the artifacts).
    """
    k, s = faces.crops.shape[0], faces.crops.shape[2]
    valid = faces.valid
    out: dict[str, np.ndarray] = {}
    if flow is not None:
        out["flow"] = np.zeros((k, s, s, 2), np.float32)
        out["flow"][valid] = flow(faces.crops[valid])
    if depth is not None:
        out["depth"] = np.zeros((k, s, s), np.float32)
        out["depth"][valid] = depth(faces.crops[valid, 0])
    return out


def _records(flow_cfg: FlowConfig | None, depth_cfg: DepthConfig | None, state: Any = None) -> dict:
    rec: dict[str, Any] = {}
    if flow_cfg is not None:
        rec["flow"] = flow_cfg.record()
    if depth_cfg is not None:
        rec["depth"] = {"model": depth_cfg.model, "init": depth_cfg.init, "input_size": depth_cfg.input_size}
    return rec


def _check_settings(folder: Path, record: dict, overwrite: bool) -> None:
    """One settings record per artifact directory: another is an error unless ``overwrite``."""
    path = folder / "settings.json"
    if path.is_file() and not overwrite:
        old = json.loads(path.read_text())
        if old != record:
            raise ConfigError(
                f"{folder} holds artifacts made with other settings ({old}); now asked for {record}. "
                "Use another --flow/--depth name or directory, or --overwrite to recompute them all."
            )
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True))


def _init(flow_cfg: FlowConfig | None, depth_cfg: DepthConfig | None, device: str) -> tuple:
    flow = FlowEstimator(flow_cfg, device) if flow_cfg else None
    depth = DepthEstimator(depth_cfg, device) if depth_cfg else None
    return flow, depth


def _one(state: tuple, job: tuple) -> dict:
    flow, depth = state
    video_id, faces_path, flow_out, depth_out, records = job
    faces = Faces.load(Path(faces_path))
    feats = compute_features(faces, flow if flow_out else None, depth if depth_out else None)
    base = {"video_id": video_id, "faces": faces.meta.get("config", {})}
    if flow_out:
        meta = {**base, "stage": "flow", **records["flow"], "weights": flow.weights}
        save_npz(Path(flow_out), meta, flow=feats["flow"].astype(np.float16), valid=faces.valid)
    if depth_out:
        meta = {**base, "stage": "depth", **records["depth"], "weights": depth.weights}
        save_npz(Path(depth_out), meta, depth=feats["depth"].astype(np.float16), valid=faces.valid)
    return {}


def run_features(
    workdir: str | Path,
    flow_cfg: FlowConfig | None = FlowConfig(),
    depth_cfg: DepthConfig | None = DepthConfig(),
    *,
    workers: int = 1,
    device: str = "cpu",
    limit: int | None = None,
    only: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
):
    """Compute flow and/or depth for every video with face crops and no artifact yet."""
    from ..stage import run_stage

    if flow_cfg is None and depth_cfg is None:
        raise ConfigError("nothing to do: both --flow and --depth are none")
    work = WorkDir(Path(workdir))
    records = _records(flow_cfg, depth_cfg)
    if flow_cfg:
        _check_settings(work.root / "flow" / flow_cfg.method, records["flow"], overwrite)
    if depth_cfg:
        _check_settings(work.root / "depth" / depth_cfg.key, records["depth"], overwrite)
    rows = select_rows(read_manifest(workdir), only, limit)
    jobs, skipped, no_faces = [], 0, 0
    for r in rows:
        vid = r["video_id"]
        if not work.faces(vid).exists():
            no_faces += 1
            continue
        f_out = str(work.flow(flow_cfg.method, vid)) if flow_cfg else ""
        d_out = str(work.depth(depth_cfg.key, vid)) if depth_cfg else ""
        if not overwrite:
            f_out = "" if f_out and Path(f_out).exists() else f_out
            d_out = "" if d_out and Path(d_out).exists() else d_out
        if f_out or d_out:
            jobs.append((vid, str(work.faces(vid)), f_out, d_out, records))
        else:
            skipped += 1
    if no_faces:
        log.info("%d videos have no face crops (see errors.csv of the faces stage); skipped", no_faces)
    return run_stage(
        "features", jobs, _one, init=_init, init_args=(flow_cfg, depth_cfg, device),
        workers=workers, errors=work.errors, skipped=skipped, progress=progress,
    )


def load_feature(
    path: Path, expect: dict | None = None, values: bool = True
) -> tuple[np.ndarray | None, np.ndarray, dict]:
    """(values, valid, meta) of a flow or depth artifact; ``expect`` keys must match its meta.

    ``values=False`` reads only ``valid`` and the metadata (values come back as None).
    """
    arrays, meta = load_npz(path, None if values else ("valid",))
    if expect:
        diff = {k: (meta.get(k), v) for k, v in expect.items() if meta.get(k) != v}
        if diff:
            raise ConfigError(f"{path} was made with other settings: {diff} (artifact, expected)")
    data = arrays.get("flow", arrays.get("depth"))
    return data, arrays["valid"], meta
