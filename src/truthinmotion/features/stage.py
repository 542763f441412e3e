"""Features stage: optical flow and relative depth for every face pair of the work directory.

Reads ``faces/<video_id>.npz`` and writes ``flow/<method>/<video_id>.npz`` (flow ``[T,K,S,S,2]`` in
pixels) and ``depth/<model>/<video_id>.npz`` (depth ``[T,K,S,S]`` of frame t's crop) for each of the
video's T faces, each with ``valid (T,K)`` and a ``meta`` record of the settings and weights that
made it. Schema 3 stores each picture compactly (:mod:`..data.compact`: flow in 1/16 px steps, depth in
12 bits of its range); schema 2 held float16 arrays and still reads; schema 1 had no track axis
and reads as T = 1.
A directory of artifacts also holds ``settings.json``: running again with other settings into the
same directory is an error, so artifacts of different settings are never mixed silently.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.compact import unpack_depth, unpack_flow, pack_depth, pack_flow
from ..core.errors import ConfigError
from ..faces.artifact import SCHEMA, Faces, with_track_axis
from ..data.index import read_manifest, select_rows
from ..core.io import WorkDir, check_settings, clean_temporaries, load_npz, save_npz
from ..execution.engine import LOCAL, Engine
from ..execution.preflight import estimate, preflight
from .depth import DepthConfig, DepthEstimator, check_depth
from .flow import FlowConfig, FlowEstimator, check_flow

__all__ = ["compute_features", "feature_configs", "load_feature", "run_features"]

log = logging.getLogger(__name__)


def compute_features(
    faces: Faces, flow: FlowEstimator | None, depth: DepthEstimator | None
) -> dict[str, np.ndarray]:
    """Flow ``[T, K, S, S, 2]`` and depth ``[T, K, S, S]`` (float32) of every face's valid time
    points (T tracks, the main face first), each estimator called once for all of them.

    Points without a face get zeros (and ``valid`` False in the artifacts).
    """
    tracks = faces.tracks
    t, (k, _, s) = len(tracks), faces.crops.shape[:3]
    valid = np.stack([tr.valid for tr in tracks])
    crops = np.stack([tr.crops for tr in tracks])[valid]  # [N, 2, S, S, 3] of the valid points
    out: dict[str, np.ndarray] = {}
    if flow is not None:
        out["flow"] = np.zeros((t, k, s, s, 2), np.float32)
        out["flow"][valid] = flow(crops)
    if depth is not None:
        out["depth"] = np.zeros((t, k, s, s), np.float32)
        out["depth"][valid] = depth(crops[:, 0])
    out["valid"] = valid
    return out


def _records(flow_cfg: FlowConfig | None, depth_cfg: DepthConfig | None, state: Any = None) -> dict:
    rec: dict[str, Any] = {}
    if flow_cfg is not None:
        rec["flow"] = flow_cfg.record()
    if depth_cfg is not None:
        # A local model is recorded by its absolute path, so the run directories trained on these
        # artifacts rebuild it from any working directory.
        local = Path(depth_cfg.model).expanduser()
        model = str(local.resolve()) if local.is_dir() else depth_cfg.model
        rec["depth"] = {"model": model, "init": depth_cfg.init, "input_size": depth_cfg.input_size}
        if depth_cfg.precision != "fp32":  # fp32 unrecorded: the artifacts made before precision existed
            rec["depth"]["precision"] = depth_cfg.precision
    return rec


def _init(flow_cfg: FlowConfig | None, depth_cfg: DepthConfig | None, device: str) -> tuple:
    flow = FlowEstimator(flow_cfg, device) if flow_cfg else None
    depth = DepthEstimator(depth_cfg, device) if depth_cfg else None
    return flow, depth


def _one(state: tuple, job: tuple) -> dict:
    flow, depth = state
    video_id, faces_path, flow_out, depth_out, records = job
    faces = Faces.load(Path(faces_path))
    feats = compute_features(faces, flow if flow_out else None, depth if depth_out else None)
    base = {"video_id": video_id, "faces": faces.meta.get("config", {}), "schema": SCHEMA}
    if flow_out:
        meta = {**base, "stage": "flow", **records["flow"], "weights": flow.weights}
        save_npz(Path(flow_out), meta, compress=False, valid=feats["valid"], **pack_flow(feats["flow"], feats["valid"]))
    if depth_out:
        meta = {**base, "stage": "depth", **records["depth"], "weights": depth.weights}
        save_npz(Path(depth_out), meta, compress=False, valid=feats["valid"],
                 **pack_depth(feats["depth"], feats["valid"]))
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
    space_check: bool = True,
    engine: Engine = LOCAL,
):
    """Compute flow and/or depth for every video with face crops and no artifact yet.

    Before any video: the models must resolve, the output directories be writable and, unless
    not ``space_check``, the disk hold the estimated artifacts (:mod:`..execution.preflight`)."""
    from ..execution.stage import run_stage

    if flow_cfg is None and depth_cfg is None:
        raise ConfigError("nothing to do: both --flow and --depth are none")
    work = WorkDir(Path(workdir))
    records = _records(flow_cfg, depth_cfg)
    folders = {kind: work.root / kind / (cfg.method if kind == "flow" else cfg.key)
               for cfg, kind in ((flow_cfg, "flow"), (depth_cfg, "depth")) if cfg is not None}
    rows = select_rows(read_manifest(workdir), only, limit)
    if rows and not any(work.faces(r["video_id"]).exists() for r in rows):
        raise ConfigError(f"no face crops in {work.root / 'faces'} for these videos: run `tim faces {work.root}` first")
    jobs, skipped, no_faces = [], 0, 0
    for r in rows:
        vid = r["video_id"]
        faces_path = work.faces(vid)
        if not faces_path.exists():
            no_faces += 1
            continue
        f_out = str(work.flow(flow_cfg.method, vid)) if flow_cfg else ""
        d_out = str(work.depth(depth_cfg.key, vid)) if depth_cfg else ""
        if not overwrite:  # done, unless its faces were made again since
            f_out = "" if f_out and _newer(Path(f_out), faces_path) else f_out
            d_out = "" if d_out and _newer(Path(d_out), faces_path) else d_out
        if f_out or d_out:
            jobs.append((vid, str(work.faces(vid)), f_out, d_out, records))
        else:
            skipped += 1
    if no_faces:
        log.info("%d videos have no face crops (see errors.csv of the faces stage); skipped", no_faces)
    faces_settings = _faces_settings(work)
    need = estimate(len(jobs), faces_settings.get("num_points", 32), faces_settings.get("size", 224), tuple(folders),
                    depth_cfg.input_size if depth_cfg else 518).total_bytes
    models = {"flow": lambda: check_flow(flow_cfg), "depth": lambda: check_depth(depth_cfg)}
    preflight(
        models=[models[kind] for kind in folders],
        outputs=folders.values(),
        space=(work.root, need, "the flow and depth artifacts") if space_check and jobs else None,
    )
    for kind, folder in folders.items():
        check_settings(folder, records[kind], overwrite)
        clean_temporaries(folder)
    return run_stage(
        "features", jobs, _one, init=_init, init_args=(flow_cfg, depth_cfg, device),
        workers=workers, errors=work.errors, skipped=skipped, progress=progress,
        engine=engine, gpus=engine.gpus if device.startswith("cuda") else 0.0,
    )


def feature_configs(
    sections: dict[str, Any] | None = None, *, flow_method: str | None = None, raft_weights: str | None = None,
    depth_model: str | None = None, input_size: int | None = None, init: str | None = None,
    precision: str | None = None,
) -> tuple[FlowConfig | None, DepthConfig | None]:
    """(FlowConfig | None, DepthConfig | None): defaults < YAML sections ``flow:``/``depth:`` <
    options (``None``: not given). ``flow_method``/``depth_model`` ``"none"`` switch one off."""
    sections = sections or {}
    unknown = set(sections) - {"flow", "depth"}
    if unknown:
        raise ConfigError(f"unknown section(s) {sorted(unknown)} for features; allowed: flow, depth")
    flow_cfg = depth_cfg = None
    if flow_method != "none":
        flow_cfg = FlowConfig().updated(sections.get("flow")).updated(
            {"method": flow_method, "raft_weights": raft_weights, "init": init})
    if depth_model != "none":
        depth_cfg = DepthConfig().updated(sections.get("depth")).updated(
            {"model": depth_model, "input_size": input_size, "init": init, "precision": precision})
    return flow_cfg, depth_cfg


def _faces_settings(work: WorkDir) -> dict[str, Any]:
    path = work.root / "faces" / "settings.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _newer(artifact: Path, source: Path) -> bool:
    return artifact.exists() and artifact.stat().st_mtime_ns >= source.stat().st_mtime_ns


def load_feature(
    path: Path, expect: dict | None = None, values: bool = True, track: int | None = None,
    points: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray, dict]:
    """(values, valid, meta) of a flow or depth artifact; ``expect`` keys must match its meta.

    Values are float32 ``[T, K, ...]`` and valid ``[T, K]``, one row per face, the main face first
    (artifacts of schema 1 held the main face alone: T = 1); with ``track`` and ``points`` only
    those pictures ``[n, ...]`` are decoded. ``values=False`` reads only ``valid`` and the
    metadata (values come back as None).
    """
    arrays, meta = load_npz(path, None if values else ("valid",))
    if expect:
        diff = {k: (meta.get(k), v) for k, v in expect.items() if meta.get(k) != v}
        if diff:
            raise ConfigError(f"{path} was made with other settings: {diff} (artifact, expected)")
    arrays = with_track_axis(arrays, meta)
    valid = arrays["valid"]
    index = None if track is None else track * valid.shape[1] + np.asarray(points, np.int64)
    if not values:
        data = None
    elif "flow_data" in arrays:
        data = unpack_flow(arrays, index)
    elif "depth_data" in arrays:
        data = unpack_depth(arrays, index)
    else:  # schema 1 and 2: float16 arrays
        data = arrays.get("flow", arrays.get("depth"))
        data = (data if index is None else data.reshape(-1, *data.shape[2:])[index]).astype(np.float32)
    return data, valid, meta
