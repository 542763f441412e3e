"""The data stages: ``tim index``, ``tim faces``, ``tim synth``, ``tim features``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .options import Command, Section, bind, common, engine, ratios, sections, settings, stage_options, words


def _methods(text: str) -> tuple[str, ...]:
    from ...data.index import FFPP_METHODS

    return FFPP_METHODS if text == "all" else tuple(text.split(","))


def _finish(report: Any, workdir: str) -> int:
    print(report.summary())
    if report.failed:
        print(f"failures are listed in {Path(workdir) / 'errors.csv'}")
    return 0 if report.ok else 1


# ---------------------------------------------------------------- index


def _add_index(p: argparse.ArgumentParser) -> None:
    from ...data.index import FFPP_METHODS, FFPP_STANDARD, FORMATS, IndexConfig

    p.add_argument("root", help="dataset root (a CSV file for --format csv)")
    p.add_argument("-o", "--out", required=True, help="work directory")
    index = Section(p, "index", IndexConfig)
    index("--format", "format", choices=list(FORMATS))
    index("--compression", "compression", help="FF++ compression: raw, c23, c40")
    more = ", ".join(m for m in FFPP_METHODS if m not in FFPP_STANDARD)
    index("--methods", "methods", type=_methods, help=f"FF++ methods, comma-separated; all adds {more}")
    index("--splits", "splits_dir", help="FF++: directory of official train/val/test.json")
    index("--ratios", "ratios", type=ratios, help="train,val,test ratios where no official split")
    index("--seed", "seed", type=int, help="seed of the ratio split")
    common(p, ["index"])


def _index(args: argparse.Namespace) -> int:
    from ...data.index import IndexConfig, index_dataset
    from ...execution.preflight import estimate

    result = index_dataset(args.root, args.out, settings(args, IndexConfig(), "index", flat=True))
    print(result.summary())
    print("\n".join(estimate(len(result.records)).lines()))  # at the default settings of the stages
    return 1 if result.missing else 0


INDEX = Command("index", "index a dataset into WORKDIR/manifest.csv", _add_index, _index)


# ---------------------------------------------------------------- faces


def _add_faces(p: argparse.ArgumentParser) -> None:
    from ...faces.config import FacesConfig

    p.add_argument("workdir")
    faces = Section(p, "faces", FacesConfig)
    faces("--points", "num_points", type=int, help="time points per video")
    faces("--size", "size", type=int, help="crop side in pixels")
    faces("--box-scale", "box_scale", type=float, help="crop side / face box side")
    faces("--detect-side", "detect_side", type=int, help="short side of detection frames")
    faces("--detect-every", "detect_every", type=int, help="first-pass detection stride over time points")
    faces("--max-faces", "max_faces", type=int, help="faces (tracks) kept per video, the main one first")
    p.add_argument("--overwrite", action="store_true", help="recompute every video, also with other settings")
    stage_options(p, ["faces"])


def _faces(args: argparse.Namespace) -> int:
    from ...faces.config import FacesConfig
    from ...faces.stage import run_faces

    report = run_faces(
        args.workdir, settings(args, FacesConfig(), "faces", flat=True), workers=args.workers, device=args.device,
        limit=args.limit, only=args.only, overwrite=args.overwrite, progress=not args.quiet,
        space_check=args.space_check, engine=engine(args),
    )
    return _finish(report, args.workdir)


FACES = Command("faces", "detect, track and crop faces: WORKDIR/faces/<id>.npz", _add_faces, _faces)


# ---------------------------------------------------------------- synth


def _add_synth(p: argparse.ArgumentParser) -> None:
    from ...synth.config import KINDS, SynthConfig

    p.add_argument("workdir")
    synth = Section(p, "synth", SynthConfig)
    synth("--kinds", "kinds", type=words, help=f"comma-separated, of {', '.join(KINDS)}")
    synth("--per-video", "per_video", type=int, help="twins per real video, the kinds dealt in turn")
    synth("--seed", "seed", type=int, help="with each twin's id, seeds its draws")
    synth("--write-videos", "write_videos", action="store_true",
          help="also write each twin's sampled frames to WORKDIR/synth/<id>.mp4, to look at")
    p.add_argument("--overwrite", action="store_true", help="make every twin again")
    stage_options(p, ["synth", "faces"])


def _synth(args: argparse.Namespace) -> int:
    from ...faces.config import FacesConfig
    from ...synth.config import SynthConfig
    from ...synth.stage import run_synth

    found = sections(args, ["faces"])["faces"]  # none given: the work directory's own faces settings
    result = run_synth(
        args.workdir, settings(args, SynthConfig(), "synth"), FacesConfig().updated(found) if found else None,
        workers=args.workers, device=args.device, limit=args.limit, only=args.only, overwrite=args.overwrite,
        progress=not args.quiet, space_check=args.space_check, engine=engine(args),
    )
    return _finish(result, args.workdir)


SYNTH = Command("synth", "pseudo-fakes of every real video: manifest rows pseudo-<kind>, faces/<id>.npz",
                _add_synth, _synth)


# ---------------------------------------------------------------- features


def _add_features(p: argparse.ArgumentParser) -> None:
    from ...backends.runtime import PRECISIONS
    from ...backends.weights import INITS
    from ...features.depth import DepthConfig
    from ...features.flow import FLOW_METHODS, FlowConfig

    p.add_argument("workdir")
    # Plain destinations: feature_configs takes them, "none" switching a feature off.
    bind(p, "--flow", FlowConfig, "method", dest="flow_method", help=f"{', '.join(FLOW_METHODS)} or none")
    bind(p, "--flow-weights", FlowConfig, "raft_weights", dest="raft_weights",
         help="RAFT state dict file (default: torchvision cache)")
    bind(p, "--depth", DepthConfig, "model", dest="depth_model",
         help="Depth Anything V2 size, hub id, local dir or none")
    bind(p, "--depth-size", DepthConfig, "input_size", dest="input_size", type=int,
         help="depth input side, multiple of 14")
    bind(p, "--depth-precision", DepthConfig, "precision", dest="precision", choices=PRECISIONS,
         help="int8: ONNX Runtime dynamic int8 on the CPU, ~1.6x faster, maps ~2%% off; written to "
              "depth/<model>-int8")
    bind(p, "--init", FlowConfig, "init", choices=INITS, help="flow and depth weights; random: tests and speed "
         "checks only")
    p.add_argument("--overwrite", action="store_true", help="recompute existing artifacts")
    stage_options(p, ["flow", "depth"])


def _features(args: argparse.Namespace) -> int:
    from ...features.stage import feature_configs, run_features

    flow_cfg, depth_cfg = feature_configs(
        sections(args, ["flow", "depth"]), flow_method=args.flow_method, raft_weights=args.raft_weights,
        depth_model=args.depth_model, input_size=args.input_size, init=args.init, precision=args.precision,
    )
    report = run_features(
        args.workdir, flow_cfg, depth_cfg, workers=args.workers, device=args.device,
        limit=args.limit, only=args.only, overwrite=args.overwrite, progress=not args.quiet,
        space_check=args.space_check, engine=engine(args),
    )
    return _finish(report, args.workdir)


FEATURES = Command("features", "optical flow and depth of every face pair", _add_features, _features)
