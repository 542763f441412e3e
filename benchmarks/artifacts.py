"""Compact artifacts (schema 3) against the arrays they replace (schema 2), in one run.

On the shared videos (FF++ and DFDC; a generated clip where ../shared is absent) at the default
faces settings (K=32, 224-px crops):

- bytes per video of the faces, flow and depth artifacts, old (zlib'd uint8 crops, float16
  flow and depth) and new (JPEG crops, flow in 1/16 px, depth in 12 bits: :mod:`truthinmotion.data.compact`);
- the flow's end-point error (EPE) of the stored flow against the float32 flow, and of the flow
  computed from the stored (JPEG) crops against the flow from the raw crops;
- decode speed: pictures per second reading whole artifacts back, old and new;
- training data loading: pictures per second of ``VideoDataset`` (flow+depth, 8 points per video,
  as training draws them) over work directories of the two formats;
- the detector's scores on the same points from old and new inputs (DINOv2-small architecture
  with random weights: how far the inputs move a network, not a trained detector's accuracy);
- per-point seconds of each stage, the figures ``tim index`` estimates from;
- the crop formats weighed (JPEG at 90 and 95, WebP at 90 and 95, PNG): bytes per video, encode
  and decode milliseconds per crop, and the flow's change when computed from them.

The depth model is Depth Anything V2 small's architecture with random weights (no network here):
its maps are noisier than a trained model's, so their bytes are an upper bound. Prints JSON.

    python benchmarks/artifacts.py [--data ../shared/data] [--points 32] [--epochs 3]
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from truthinmotion.data.compact import pack_depth, pack_flow, stored_crops, stored_depth, stored_flow
from truthinmotion.models.inputs import DataConfig, encode_pictures, to_backbone
from truthinmotion.training.dataset import VideoDataset, collate
from truthinmotion.faces.mtcnn import FaceDetector
from truthinmotion.faces.artifact import Faces
from truthinmotion.faces.config import FacesConfig
from truthinmotion.faces.extract import extract_faces
from truthinmotion.features import DepthConfig, DepthEstimator, FlowConfig, FlowEstimator, load_feature
from truthinmotion.core.io import WorkDir, save_npz
from truthinmotion.models.detector import Detector
from truthinmotion.models.architecture import DetectorConfig

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def videos(root: Path) -> list[Path]:
    found = sorted(Path(p) for p in glob.glob(str(root / "**" / "*.mp4"), recursive=True))
    if found:
        return found
    from truthinmotion.media.clips import synth_clip, write_video

    return [write_video(Path(tempfile.mkdtemp()) / "clip.mp4", synth_clip(False, frames=70, size=256))]


def epe(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """End-point error ``[N, pixels]`` of two flows ``[N, S, S, 2]``."""
    return np.hypot(a[..., 0] - b[..., 0], a[..., 1] - b[..., 1]).reshape(len(a), -1)


def save_old(work: WorkDir, vid: str, faces, flow: np.ndarray, depth: np.ndarray, valid: np.ndarray) -> None:
    """The schema-2 layout: zlib'd uint8 crops, float16 flow and depth."""
    tracks = faces.tracks
    save_npz(work.faces(vid), {**faces.meta, "schema": 2}, frame_index=faces.frame_index,
             boxes=np.stack([t.boxes for t in tracks]), scores=np.stack([t.scores for t in tracks]),
             detected=np.stack([t.detected for t in tracks]), crops=np.stack([t.crops for t in tracks]))
    meta = {"schema": 2, "faces": faces.meta["config"]}
    save_npz(work.flow("farneback", vid), {**meta, "stage": "flow", "method": "farneback"},
             flow=flow.astype(np.float16), valid=valid)
    save_npz(work.depth("small", vid), {**meta, "stage": "depth", "model": "small"}, depth=depth.astype(np.float16),
             valid=valid)


CROP_FORMATS = {"jpeg-95": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]), "jpeg-90": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]),
                "webp-95": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 95]), "webp-90": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 90]),
                "png": (".png", [cv2.IMWRITE_PNG_COMPRESSION, 3])}


def weigh_formats(raw: np.ndarray, flow: np.ndarray, flow_est, tally: dict) -> None:
    """Add one video's crops ``[N, 2, S, S, 3]`` to each format's tally."""
    for name, (ext, params) in CROP_FORMATS.items():
        t = tally.setdefault(name, {"bytes": 0, "encode_s": 0.0, "decode_s": 0.0, "crops": 0, "epe": []})
        back = np.empty_like(raw)
        for i in range(len(raw)):
            for j in (0, 1):
                start = time.perf_counter()
                buf = cv2.imencode(ext, np.ascontiguousarray(raw[i, j, ..., ::-1]), params)[1]  # OpenCV wants BGR
                mid = time.perf_counter()
                back[i, j] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
                t["encode_s"] += mid - start
                t["decode_s"] += time.perf_counter() - mid
                t["bytes"] += len(buf)
                t["crops"] += 1
        t["epe"].append(epe(flow_est(back), flow).mean(1))


def loading_rate(root: Path, epochs: int) -> float:
    ds = VideoDataset(root, "train", "flow+depth", DataConfig(flow="farneback", depth="small"), train=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate, num_workers=0)
    pictures, t = 0, time.perf_counter()
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for batch in loader:
            pictures += len(batch["label"])
    return pictures / (time.perf_counter() - t)


def read_rate(files: list[Path], read) -> float:
    t, n = time.perf_counter(), 0
    for f in files:
        n += read(f)
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--points", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3, help="passes of the data-loading measurement")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = FacesConfig(num_points=args.points)
    detector = FaceDetector.from_config(cfg)
    flow_est = FlowEstimator(FlowConfig())
    depth_est = DepthEstimator(DepthConfig(init="random"))
    tmp = Path(tempfile.mkdtemp())
    old, new = WorkDir(tmp / "old"), WorkDir(tmp / "new")
    seconds = {"faces": 0.0, "flow": 0.0, "depth": 0.0}
    points = 0
    stored_epe, crop_epe, depth_err, ids = [], [], [], []
    formats: dict[str, dict] = {}
    for path in videos(args.data):
        vid = path.stem
        t = time.perf_counter()
        faces = extract_faces(path, cfg, detector)
        seconds["faces"] += time.perf_counter() - t
        tracks = faces.tracks
        valid = np.stack([tr.valid for tr in tracks])
        raw = np.stack([tr.crops for tr in tracks])[valid]
        t = time.perf_counter()
        flow = flow_est(raw)
        seconds["flow"] += time.perf_counter() - t
        t = time.perf_counter()
        depth = depth_est(raw[:, 0])
        seconds["depth"] += time.perf_counter() - t
        points += len(raw)
        full_flow = np.zeros((*valid.shape, *flow.shape[1:]), np.float32)
        full_flow[valid] = flow
        full_depth = np.zeros((*valid.shape, *depth.shape[1:]), np.float32)
        full_depth[valid] = depth
        save_old(old, vid, faces, full_flow, full_depth, valid)
        # The new layout, as the stages write it: flow from the stored (JPEG) crops.
        faces.save(new.faces(vid), crop_format=cfg.crop_format, crop_quality=cfg.crop_quality)
        jpeg = stored_crops(raw, cfg.crop_format, cfg.crop_quality)
        flow_j, depth_j = flow_est(jpeg), depth_est(jpeg[:, 0])
        fj = np.zeros_like(full_flow)
        fj[valid] = flow_j
        dj = np.zeros_like(full_depth)
        dj[valid] = depth_j
        meta = {"schema": 3, "faces": faces.meta["config"]}
        save_npz(new.flow("farneback", vid), {**meta, "stage": "flow", "method": "farneback"}, compress=False,
                 valid=valid, **pack_flow(fj, valid))
        save_npz(new.depth("small", vid), {**meta, "stage": "depth", "model": "small"}, compress=False,
                 valid=valid, **pack_depth(dj, valid))
        weigh_formats(raw, flow, flow_est, formats)
        stored_epe.append(epe(stored_flow(flow), flow))
        crop_epe.append(epe(flow_j, flow))
        span = depth.max((1, 2)) - depth.min((1, 2))
        depth_err.append(np.abs(stored_depth(depth) - depth).reshape(len(depth), -1).max(1) / np.where(span > 0, span, 1))
        ids.append(vid)
        print(f"{vid}: {len(raw)} points", flush=True)

    def sizes(work: WorkDir) -> dict[str, float]:
        out = {}
        for kind, folder in (("faces", work.root / "faces"), ("flow", work.root / "flow" / "farneback"),
                             ("depth", work.root / "depth" / "small")):
            out[kind] = sum(p.stat().st_size for p in folder.glob("*.npz")) / len(ids)
        out["total"] = sum(out.values())
        return out

    size_old, size_new = sizes(old), sizes(new)
    for work in (old, new):
        with open(work.manifest, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["video_id", "path", "label", "dataset", "method", "group", "split"])
            w.writeheader()
            for i, vid in enumerate(ids):
                w.writerow({"video_id": vid, "path": vid, "label": i % 2, "dataset": "shared", "method": "x",
                            "group": vid, "split": "train"})
    decode = {}
    for name, work in (("old", old), ("new", new)):
        flows = sorted((work.root / "flow" / "farneback").glob("*.npz"))
        faces_files = sorted((work.root / "faces").glob("*.npz"))
        decode[name] = {
            "flow_pictures_per_s": round(read_rate(flows, lambda f: int(load_feature(f)[1].sum())), 1),
            "crops_per_s": round(read_rate(faces_files, lambda f: 2 * int(np.isfinite(Faces.load(f).boxes[:, 0]).sum())), 1),
        }
    loading = {name: round(loading_rate(work.root, args.epochs), 1) for name, work in (("old", old), ("new", new))}

    # The same points through a detector from both formats' inputs.
    model = Detector.build(DetectorConfig(backbone="dinov2-small", modality="flow+depth"), init="random").eval()
    dcfg = DataConfig()
    diffs = []
    for vid in ids:
        probs = []
        for work in (old, new):
            f, v, _ = load_feature(work.flow("farneback", vid))
            d, _, _ = load_feature(work.depth("small", vid))
            pics = encode_pictures({"flow": f[v][:8], "depth": d[v][:8]}, ("flow", "depth"), dcfg, cfg.box_scale)
            with torch.no_grad():
                probs.append(torch.sigmoid(model(to_backbone(pics, model.preprocess)).logit).numpy())
        diffs.append(np.abs(probs[0] - probs[1]))
    diffs = np.concatenate(diffs)
    stored_epe, crop_epe, depth_err = (np.concatenate(x) for x in (stored_epe, crop_epe, depth_err))
    print(json.dumps({
        "videos": len(ids), "time_points": points, "points_per_video": args.points,
        "bytes_per_video": {"old": {k: round(v) for k, v in size_old.items()},
                            "new": {k: round(v) for k, v in size_new.items()},
                            "ratio": {k: round(size_old[k] / size_new[k], 2) for k in size_old}},
        "flow_epe_px": {"stored_vs_float32": {"mean": round(float(stored_epe.mean()), 4),
                                              "max_pixel": round(float(stored_epe.max()), 4)},
                        "from_jpeg_crops_vs_raw_crops": {"mean": round(float(crop_epe.mean()), 4),
                                                         "worst_picture_mean": round(float(crop_epe.mean(1).max()), 4)}},
        "depth_max_error_of_range": float(depth_err.max()),
        "decode": decode,
        "training_loading_pictures_per_s": {**loading, "ratio_new_old": round(loading["new"] / loading["old"], 2)},
        "detector_prob_diff_random_weights": {"mean": float(diffs.mean()), "max": float(diffs.max()),
                                              "points": int(len(diffs))},
        "crop_formats": {name: {"bytes_per_video": round(t["bytes"] / len(ids)),
                                "encode_ms": round(t["encode_s"] / t["crops"] * 1e3, 2),
                                "decode_ms": round(t["decode_s"] / t["crops"] * 1e3, 2),
                                "flow_epe_px_mean": round(float(np.concatenate(t["epe"]).mean()), 4)}
                         for name, t in formats.items()},
        "seconds_per_point_2core_cpu": {k: round(v / points, 4) for k, v in seconds.items()},
        "bytes_per_point_new": {k: round(size_new[k] * len(ids) / points) for k in ("faces", "flow", "depth")},
    }, indent=2))


if __name__ == "__main__":
    main()
