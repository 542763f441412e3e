"""``tim synth``: pseudo-fakes of every real video of a work directory, resumable and parallel.

Each real video gets ``per_video`` twins (:mod:`.kinds`, the kinds dealt in turn). A twin is a
manifest row (``method=pseudo-<kind>``, ``source=<real id>``, its source's path, group and split:
:mod:`..data.pseudo`) and a faces artifact of its own, made on the frames the pipeline samples:
its source's sampled frames (both of each pair) are decoded, altered around the source's face
boxes (its faces artifact, made first), and go through the same detection, tracking and cropping
as any video (:func:`..faces.extract.faces_from_frames`). Flow and depth then follow from the
crops exactly as for a real fake; no copy of the video is written unless ``write_videos``.

A twin is seeded by the settings' seed and its own id, so a re-run makes the same twin; a twin
whose artifact was made from its source as it is now, with the same kind, seed and settings, is
skipped. A twin that cannot be made (a source without faces) is a row of ``errors.csv`` (stage
``synth``) and the batch goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ..core.errors import ConfigError, StageError
from ..core.io import WorkDir, check_video_id, load_npz, source_identity
from ..data.index import read_manifest, select_rows, write_manifest
from ..data.augment import is_derived
from ..data.pseudo import PSEUDO
from ..execution.engine import LOCAL, Engine
from ..execution.stage import StageReport, run_stage
from ..faces.config import FacesConfig
from ..faces.extract import check_memory, faces_from_frames
from ..faces.mtcnn import FaceDetector
from ..faces.stage import current, run_faces
from ..media.clips import write_video
from ..media.video import probe, read_frames, sample_points
from .config import SynthConfig
from .kinds import frames_needed, make_twin

__all__ = ["SynthResult", "plan_twins", "run_synth", "twin_seed"]

log = logging.getLogger(__name__)


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def twin_seed(cfg: SynthConfig, twin_id: str) -> int:
    """The seed of every draw of one twin: its settings' seed and its id, nothing else."""
    return _hash(f"{cfg.seed}:{twin_id}")


def plan_twins(reals: Sequence[dict], cfg: SynthConfig) -> list[dict]:
    """Manifest rows of the twins of ``reals``: ``per_video`` each, the kinds dealt in turn from a
    start fixed by the source's id (so adding videos never changes another's twins)."""
    rows = []
    for r in reals:
        start = _hash(r["video_id"]) % len(cfg.kinds)
        for n in range(cfg.per_video):
            kind = cfg.kinds[(start + n) % len(cfg.kinds)]
            vid = check_video_id(f"{PSEUDO}{kind}-{n}-{r['video_id']}"[:200])
            rows.append({"video_id": vid, "path": r["path"], "label": 1, "dataset": r["dataset"],
                         "method": f"{PSEUDO}{kind}", "group": r["group"], "split": r["split"],
                         "source": r["video_id"]})
    return rows


@dataclass
class SynthResult:
    """What ``tim synth`` did: the faces of the sources, then the twins."""

    faces: StageReport
    twins: StageReport
    manifest_rows: int  # twin rows the manifest gained

    @property
    def ok(self) -> bool:
        return self.twins.ok

    @property
    def failed(self) -> dict[str, str]:
        return self.twins.failed

    def summary(self) -> str:
        return "\n".join([self.faces.summary(), f"synth: {self.manifest_rows} twins added to the manifest",
                          self.twins.summary()])


def _spec(kind: str, seed: int, source: str, cfg: SynthConfig) -> dict[str, Any]:
    return {"kind": kind, "seed": seed, "source": source, "recipe": cfg.recipe()}


def _init(cfg: FacesConfig, device: str) -> tuple[FacesConfig, FaceDetector]:
    return cfg, FaceDetector.from_config(cfg, device)


def _one(state: tuple[FacesConfig, FaceDetector], job: tuple) -> dict:
    cfg, detector = state
    twin_id, source_path, source_faces, out, spec_json, synth_json, video_out = job
    spec, scfg = json.loads(spec_json), SynthConfig.from_dict(json.loads(synth_json))
    if not Path(source_faces).is_file():
        raise StageError("no_source_faces", f"its source {spec['source']} has no faces artifact (see errors.csv, "
                                            "stage faces): a twin is blended around its source's faces")
    arrays, meta = load_npz(Path(source_faces), ("frame_index", "boxes"))
    info = probe(source_path)
    points = sample_points(info.frames, cfg.num_points)
    if meta.get("source") != source_identity(source_path) or not np.array_equal(arrays["frame_index"], points):
        raise StageError("stale_source", f"the faces of {spec['source']} were made from another file or other "
                                         "time points: run tim faces on it again")
    boxes = arrays["boxes"]
    boxes = boxes[0] if boxes.ndim == 3 else boxes  # the main face (schema 1 had no track axis)
    need = frames_needed(spec["kind"], points, info.frames, scfg)
    check_memory(info, len(need), cfg)
    frames = dict(read_frames(source_path, need, max_side=cfg.max_frame_side, rgb=False))  # BGR, as faces keeps them
    keep_scale = frames[int(points[0])].shape[1] / info.width
    twin, _, drawn = make_twin(spec["kind"], frames, points, boxes * keep_scale, scfg,
                               np.random.default_rng(spec["seed"]), last=info.frames - 1)
    pairs = {f: twin[f] for f in np.unique(np.concatenate([points, points + 1])).tolist()}
    faces = faces_from_frames(pairs, points, info, cfg, detector)
    faces.meta["synth"] = {"spec": spec, "drawn": drawn}
    if video_out:
        seq = np.stack([cv2.cvtColor(pairs[f], cv2.COLOR_BGR2RGB) for f in sorted(pairs)])
        faces.meta["synth"]["video"] = str(write_video(Path(video_out), seq))
    faces.save(Path(out), cfg.compress, cfg.crop_format, cfg.crop_quality)
    return {"coverage": faces.meta["coverage"]}


def run_synth(
    workdir: str | Path,
    cfg: SynthConfig = SynthConfig(),
    faces_cfg: FacesConfig | None = None,
    *,
    workers: int = 1,
    device: str = "cpu",
    limit: int | None = None,
    only: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    space_check: bool = True,
    engine: Engine = LOCAL,
) -> SynthResult:
    """Twins of the real videos of ``WORKDIR/manifest.csv`` (``only``/``limit`` select real videos)
    not already made; first the faces of those real videos (:func:`..faces.stage.run_faces`,
    which skips what is done).

    ``faces_cfg`` None takes the settings of the work directory's faces (``faces/settings.json``),
    or the defaults where there are none yet: the twins' crops must be made as their sources' are.
    """
    work = WorkDir(Path(workdir))
    if faces_cfg is None:
        saved = work.root / "faces" / "settings.json"
        faces_cfg = FacesConfig.from_dict(json.loads(saved.read_text())) if saved.is_file() else FacesConfig()
    rows = read_manifest(workdir)
    reals = select_rows([r for r in rows if r["label"] == 0 and not is_derived(r)], only, limit)
    if not reals:
        raise ConfigError(f"no real videos in {work.manifest}{' among --only' if only else ''}: pseudo-fakes are "
                          "made from real videos")
    faces = run_faces(workdir, faces_cfg, workers=workers, device=device, only=[r["video_id"] for r in reals],
                      progress=progress, space_check=space_check, engine=engine)
    twins = plan_twins(reals, cfg)
    known = {r["video_id"] for r in rows}
    added = [t for t in twins if t["video_id"] not in known]
    if added:
        write_manifest(work.root, [*rows, *added])
    jobs, skipped = [], 0
    videos = work.root / "synth"
    for t in twins:
        spec = _spec(t["method"][len(PSEUDO):], twin_seed(cfg, t["video_id"]), t["source"], cfg)
        spec["faces"] = faces_cfg.to_dict()  # re-cropped sources (tim faces --overwrite) remake their twins
        out = work.faces(t["video_id"])
        if not overwrite and current(out, t["path"], spec):
            skipped += 1
            continue
        jobs.append((t["video_id"], t["path"], str(work.faces(t["source"])), str(out), json.dumps(spec),
                     json.dumps(cfg.to_dict()), str(videos / f"{t['video_id']}.mp4") if cfg.write_videos else ""))
    report = run_stage("synth", jobs, _one, init=_init, init_args=(faces_cfg, device),
                       workers=workers, errors=work.errors, skipped=skipped, progress=progress, engine=engine,
                       gpus=engine.gpus if device.startswith("cuda") else 0.0)
    return SynthResult(faces, report, len(added))
