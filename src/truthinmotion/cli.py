"""``tim``: one subcommand per stage, each a thin shell over one library function.

Settings come from the stage's defaults, then ``--config FILE.yaml``, then command-line options;
unknown keys and out-of-range values are errors. Exit codes: 0 success, 1 some videos failed
(see ``errors.csv``), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import os
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import ConfigError, Settings, load_yaml

log = logging.getLogger("truthinmotion")


def _settings(cls: type[Settings], args: argparse.Namespace, keys: Sequence[str], base: Settings | None = None) -> Any:
    """Defaults (or ``base``) < YAML (``--config``) < the command-line options named in ``keys``."""
    cfg = base or cls()
    if getattr(args, "config", None):
        cfg = cfg.updated(load_yaml(args.config))
    return cfg.updated({k: getattr(args, k) for k in keys})


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of settings (overridden by command-line options)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")


def _methods(text: str) -> tuple[str, ...]:
    from .index import FFPP_METHODS

    return FFPP_METHODS if text == "all" else tuple(text.split(","))


def _device(text: str) -> str:
    from .runtime import check_device

    try:
        return check_device(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


SPLIT_CHOICES = ("train", "val", "test")
AGGREGATION_CHOICES = ("mean", "median", "max", "top25")
RUNTIME_CHOICES = ("auto", "torch", "onnx")  # onnxrun.RUNTIMES, without importing torch to parse


def _ratios(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected three numbers like 0.7,0.2,0.1, got {text!r}") from err


# ---------------------------------------------------------------- index


def _add_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="index a dataset into WORKDIR/manifest.csv")
    p.add_argument("root", help="dataset root (a CSV file for --format csv)")
    p.add_argument("-o", "--out", required=True, help="work directory")
    p.add_argument("--format", choices=["ffpp", "dfdc", "celebdf", "folder", "csv"])
    p.add_argument("--compression", help="FF++ compression: raw, c23 (default), c40")
    p.add_argument("--methods", type=_methods,
                   help="FF++ methods, comma-separated (Deepfakes,Face2Face,FaceSwap,NeuralTextures); all adds "
                        "FaceShifter and DeepFakeDetection")
    p.add_argument("--splits", dest="splits_dir", help="FF++: directory of official train/val/test.json")
    p.add_argument("--ratios", type=_ratios, help="train,val,test ratios where no official split (0.7,0.2,0.1)")
    p.add_argument("--seed", type=int)
    _common(p)
    p.set_defaults(func=_cmd_index)


def _cmd_index(args: argparse.Namespace) -> int:
    from .index import IndexConfig, index_dataset
    from .preflight import estimate

    cfg = _settings(IndexConfig, args, ["format", "compression", "methods", "splits_dir", "ratios", "seed"])
    result = index_dataset(args.root, args.out, cfg)
    print(result.summary())
    print("\n".join(estimate(len(result.records)).lines()))  # at the default settings of the stages
    return 1 if result.missing else 0


# ---------------------------------------------------------------- faces


def _add_faces(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("faces", help="detect, track and crop faces: WORKDIR/faces/<id>.npz")
    p.add_argument("workdir")
    p.add_argument("--points", dest="num_points", type=int, help="time points per video (32)")
    p.add_argument("--size", type=int, help="crop side in pixels (224)")
    p.add_argument("--box-scale", type=float, help="crop side / face box side (1.3)")
    p.add_argument("--detect-side", type=int, help="short side of detection frames (300)")
    p.add_argument("--detect-every", type=int, help="first-pass detection stride over time points (8)")
    p.add_argument("--max-faces", type=int, help="faces (tracks) kept per video, the main one first (4)")
    p.add_argument("--overwrite", action="store_true", help="recompute every video, also with other settings")
    _stage_options(p)
    _space_option(p)
    p.set_defaults(func=_cmd_faces)


def _engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local processes (default) or Ray Data actors (pip install 'truthinmotion[ray]')")
    p.add_argument("--ray-address", help="Ray: a running cluster (auto, HOST:6379); default: start one here")
    p.add_argument("--ray-gpus", type=float, default=1.0, help="Ray on CUDA: GPUs per actor, fractions allowed (1)")


def _engine(args: argparse.Namespace) -> Any:
    from .engine import Engine

    return Engine(args.engine, args.ray_address, args.ray_gpus)


def _stage_options(p: argparse.ArgumentParser) -> None:
    _engine_options(p)
    p.add_argument("--workers", type=_positive, default=1, help="parallel processes or Ray actors (1)")
    p.add_argument("--device", type=_device, default="cpu", help="cpu or cuda (cpu)")
    p.add_argument("--limit", type=_positive, help="process only the first N videos of the manifest")
    p.add_argument("--only", type=lambda s: s.split(","), help="comma-separated video ids")
    _common(p)


def _space_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-space-check", dest="space_check", action="store_false",
                   help="start even when free disk space is below the artifacts' estimate")


def _finish(report: Any, workdir: str) -> int:
    print(report.summary())
    if report.failed:
        print(f"failures are listed in {Path(workdir) / 'errors.csv'}")
    return 0 if report.ok else 1


def _cmd_faces(args: argparse.Namespace) -> int:
    from .faces import FacesConfig, run_faces

    cfg = _settings(FacesConfig, args, ["num_points", "size", "box_scale", "detect_side", "detect_every", "max_faces"])
    report = run_faces(
        args.workdir, cfg, workers=args.workers, device=args.device, limit=args.limit,
        only=args.only, overwrite=args.overwrite, progress=not args.quiet, space_check=args.space_check,
        engine=_engine(args),
    )
    return _finish(report, args.workdir)


# ---------------------------------------------------------------- features


def _add_features(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="optical flow and depth of every face pair")
    p.add_argument("workdir")
    p.add_argument("--flow", dest="flow_method", help="farneback (default), dis, raft-small, raft-large or none")
    p.add_argument("--flow-weights", dest="raft_weights", help="RAFT state dict file (default: torchvision cache)")
    p.add_argument("--depth", dest="depth_model", help="Depth Anything V2 size, hub id, local dir or none")
    p.add_argument("--depth-size", dest="input_size", type=int, help="depth input side, multiple of 14 (518)")
    p.add_argument("--depth-precision", dest="precision", choices=["fp32", "int8"],
                   help="int8: ONNX Runtime dynamic int8 on the CPU, ~1.6x faster, maps ~2%% off; written to "
                        "depth/<model>-int8 (fp32)")
    p.add_argument("--init", choices=["pretrained", "random"], help="random: tests and speed checks only")
    p.add_argument("--overwrite", action="store_true", help="recompute existing artifacts")
    _stage_options(p)
    _space_option(p)
    p.set_defaults(func=_cmd_features)


def _cmd_features(args: argparse.Namespace) -> int:
    from .features import feature_configs, run_features

    flow_cfg, depth_cfg = feature_configs(
        load_yaml(args.config) if args.config else {}, flow_method=args.flow_method,
        raft_weights=args.raft_weights, depth_model=args.depth_model, input_size=args.input_size, init=args.init,
        precision=args.precision,
    )
    report = run_features(
        args.workdir, flow_cfg, depth_cfg, workers=args.workers, device=args.device,
        limit=args.limit, only=args.only, overwrite=args.overwrite, progress=not args.quiet,
        space_check=args.space_check, engine=_engine(args),
    )
    return _finish(report, args.workdir)


# ---------------------------------------------------------------- train

TRAIN_OPTIONS = {
    "--modality": dict(help="flow, depth, rgb or a '+' of them (flow)"),
    "--backbone": dict(help="dinov2-small (default), dinov2-base, dinov2-large, dinov2-giant, dinov2-tiny"),
    "--backbone-path": dict(help="local DINOv2 directory instead of the hub id"),
    "--init": dict(choices=["pretrained", "random"], help="backbone weights (pretrained)"),
    "--fusion": dict(choices=["concat", "score"], help="concat embeddings (default) or average probabilities"),
    "--train-blocks": dict(type=lambda s: -1 if s == "all" else int(s), help="last N blocks trained; 0 head only; all (1)"),
    "--epochs": dict(type=int, help="(10)"),
    "--batch-size": dict(type=int, help="videos per step (8)"),
    "--lr": dict(type=float, help="AdamW learning rate (1e-4)"),
    "--train-points": dict(type=int, help="time points per video per step (8)"),
    "--flow": dict(help="flow artifacts to use: WORKDIR/flow/<name> (farneback)"),
    "--depth": dict(help="depth artifacts to use: WORKDIR/depth/<name> (depth-anything-v2-small)"),
    "--image-size": dict(type=int, help="backbone input side, multiple of 14 (224)"),
    "--train-faces": dict(choices=["main", "all"], help="faces trained on: each video's main face (default) or all"),
    "--seed": dict(type=int),
    "--workers": dict(type=int, help="DataLoader processes (2)"),
    "--device": dict(type=_device, help="cpu or cuda (cpu)"),
    "--autocast": dict(choices=["auto", "bf16", "fp16", "off"], help="mixed precision on GPU (auto: bf16)"),
    "--patience": dict(type=int, help="epochs without improvement before stopping (3)"),
}


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a detector: runs/NAME/{config.yaml,metrics.csv,best/,last/}")
    p.add_argument("workdir")
    p.add_argument("-o", "--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's last epoch")
    for flag, kw in TRAIN_OPTIONS.items():
        p.add_argument(flag, **kw)
    _common(p)
    p.set_defaults(func=_cmd_train)


def _option_keys(options: dict[str, dict]) -> list[str]:
    return [flag[2:].replace("-", "_") for flag in options]


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, saved_config, train

    # A resumed run starts from its own saved settings; options given now go on top (and are
    # checked: only what a resume may change is accepted).
    base = saved_config(args.out) if args.resume else None
    cfg = _settings(TrainConfig, args, _option_keys(TRAIN_OPTIONS), base)
    if args.quiet:
        cfg = cfg.updated({"progress": False})
    print(train(args.workdir, cfg, args.out, resume=args.resume).summary())
    return 0


# ---------------------------------------------------------------- evaluate


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics, report and plots of a trained detector")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test", choices=SPLIT_CHOICES, help="(test)")
    p.add_argument("--workdir", help="another indexed dataset (cross-dataset); default: the training one")
    p.add_argument("--aggregation", default="mean", choices=AGGREGATION_CHOICES, help="video score from frames (mean)")
    p.add_argument("--out", help="report directory (default: the run directory)")
    p.add_argument("--device", type=_device, default="cpu")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    result = evaluate(args.run_dir, args.split, args.workdir, args.aggregation, args.device, args.out,
                      progress=not args.quiet)
    print(result.summary())
    return 0


# ---------------------------------------------------------------- detect


def _add_detect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "detect", help="score videos with a trained detector (exit 1 if any video could not be scored)"
    )
    p.add_argument("videos", nargs="+", help="video files or directories")
    p.add_argument("--model", required=True, help="run directory (or its best/ directory)")
    p.add_argument("--json", dest="json_out", help="write every verdict as JSON here")
    p.add_argument("--csv", dest="csv_out", help="write one row per video here")
    p.add_argument("--plot", dest="plot_dir", help="write a score-over-time PNG per video into this directory")
    p.add_argument("--report", dest="report_dir", help="write an evidence page (HTML, one file) per video here")
    p.add_argument("--jsonl", dest="jsonl_out", help="append each verdict here as its video finishes; a re-run "
                   "skips the videos already in it")
    p.add_argument("--aggregation", default="mean", choices=AGGREGATION_CHOICES, help="(mean)")
    p.add_argument("--device", type=_device, default="cpu")
    p.add_argument("--workers", type=_positive, default=1,
                   help="CPU processes (Ray actors) decoding, finding faces and flow for the model stage (1)")
    p.add_argument("--batch-size", type=_positive, default=64, help="pictures per model pass, across videos (64)")
    p.add_argument("--runtime", default="auto", choices=RUNTIME_CHOICES,
                   help="depth and detector in ONNX Runtime or PyTorch; auto: ONNX Runtime on the CPU, same "
                        "scores within 1e-5, about 2x faster (auto)")
    p.add_argument("--early-stop", type=_fraction, default=None, metavar="ERROR",
                   help="score half of each face's points first and stop where the label is already decided, "
                        "wrong with probability at most ERROR (e.g. 0.01); the score is then the mean of the "
                        "points scored. Off by default; not with --report")
    p.add_argument("--depth-precision", choices=["fp32", "int8"],
                   help="depth in ONNX Runtime dynamic int8 (CPU): ~1.6x faster depth, scores slightly off "
                        "(benchmarks/detect.py); default: the precision the detector's depth was computed at")
    _engine_options(p)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_detect)


def _cmd_detect(args: argparse.Namespace) -> int:
    from .detect import detect

    verdicts = detect(args.videos, args.model, device=args.device, aggregation=args.aggregation,
                      json_out=args.json_out, csv_out=args.csv_out, jsonl_out=args.jsonl_out, plot_dir=args.plot_dir,
                      report_dir=args.report_dir, progress=not args.quiet, workers=args.workers,
                      batch_size=args.batch_size, engine=_engine(args), runtime=args.runtime,
                      early_stop=args.early_stop, depth_precision=args.depth_precision)
    for v in verdicts:
        if v.ok:
            print(f"{v.video}: {v.label} (p={v.probability:.3f}, threshold {v.threshold:.3f}, "
                  f"{v.faces['time_points_with_face']} time points, {v.timings['total']:.2f}s)")
        else:
            print(f"{v.video}: {v.status}: {v.reason}")
    return 0 if all(v.ok for v in verdicts) else 1


# ---------------------------------------------------------------- compress and benchmark


def _add_compress(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="fp16/bf16, compile, onnx, int8 or distilled copy of a detector")
    p.add_argument("run_dir", help="the trained run directory (the teacher for distill)")
    p.add_argument("--method", required=True, help="fp16, bf16, compile, onnx, int8 or distill")
    p.add_argument("-o", "--out", required=True, help="output run directory")
    p.add_argument("--teacher", help="distill: teacher run directory (default: RUN_DIR)")
    p.add_argument("--student", default="dinov2-small", help="distill: student backbone (dinov2-small)")
    p.add_argument("--alpha", dest="distill_alpha", type=float, help="distill: weight of the embedding KL (1.0)")
    p.add_argument("--logit-weight", dest="distill_logit", type=float, help="distill: logit distillation weight (1; the study: 0)")
    p.add_argument("--temperature", dest="distill_temperature", type=float, help="distill: temperature T (2)")
    p.add_argument("--epochs", type=int, help="distill: epochs (the teacher's)")
    p.add_argument("--init", choices=["pretrained", "random"], help="distill: student weights (the teacher's)")
    p.add_argument("--resume", action="store_true", help="distill: continue an interrupted run")
    p.add_argument("--device", type=_device, default="cpu")
    _common(p)
    p.set_defaults(func=_cmd_compress)


def _cmd_compress(args: argparse.Namespace) -> int:
    from .compress import compress
    from .distill import distill

    if args.method == "distill":
        options = {k: getattr(args, k) for k in ("distill_alpha", "distill_logit", "distill_temperature", "epochs",
                                                  "init")}
        options.update(device=args.device, progress=False if args.quiet else None)
        print(distill(args.teacher or args.run_dir, args.out, args.student, config_file=args.config,
                      overrides=options, resume=args.resume).summary())
    else:
        if args.config:
            raise ConfigError(f"--config applies to --method distill only; {args.method} has no settings")
        print(compress(args.run_dir, args.method, args.out, device=args.device).summary())
    return 0


def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="size, latency, throughput and accuracy of detector variants")
    p.add_argument("run_dirs", nargs="+", help="run directories; the first is the baseline of the speed-ups")
    p.add_argument("--device", type=_device, default="cpu")
    p.add_argument("--split", default="test", choices=SPLIT_CHOICES)
    p.add_argument("--repeats", type=_positive, default=10, help="timed calls at batch 1 (10)")
    p.add_argument("--out", help="where benchmark.md/json go (default: the first run directory)")
    p.set_defaults(func=_cmd_benchmark)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from .bench import benchmark_runs

    print(benchmark_runs(args.run_dirs, device=args.device, split=args.split, repeats=args.repeats,
                         out_dir=args.out).summary())
    return 0


# ---------------------------------------------------------------- run


def _experiment_options(p: argparse.ArgumentParser, out_help: str) -> None:
    """What tim run and tim study share: the dataset, the output, the stages' settings."""
    p.add_argument("root", help="dataset root (a CSV file for --format csv)")
    p.add_argument("-o", "--out", required=True, help=out_help)
    p.add_argument("--format", help="ffpp, dfdc, celebdf, folder or csv")
    p.add_argument("--splits", dest="splits_dir", help="FF++: directory of official train/val/test.json")
    p.add_argument("--epochs", type=int)
    p.add_argument("--workers", type=_positive, default=1, help="processes for faces and features (1)")
    p.add_argument("--device", type=_device, default="cpu")
    p.add_argument("--config", help="YAML with sections index, faces, flow, depth, train")
    p.add_argument("-q", "--quiet", action="store_true")
    _space_option(p)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="index, faces, features, train and evaluate: the whole study")
    _experiment_options(p, "output directory (work/ and runs/ inside)")
    p.add_argument("--modality", help="flow+depth (default), flow, depth, rgb, ...")
    p.add_argument("--backbone", help="dinov2-small (default), dinov2-base, ...")
    p.add_argument("--name", help="run name under OUT/runs (default: backbone-modality)")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import StudyConfig, run_study

    cfg = StudyConfig.from_sections(load_yaml(args.config) if args.config else {}).with_options(
        format=args.format, splits_dir=args.splits_dir, modality=args.modality, backbone=args.backbone,
        epochs=args.epochs,
    )
    result = run_study(args.root, args.out, cfg, workers=args.workers, device=args.device,
                       run_name=args.name, progress=not args.quiet, space_check=args.space_check)
    print(result.summary())
    return 0


# ---------------------------------------------------------------- study


def _add_study(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="the study's whole experiment: every backbone x modality, compressions, tables")
    _experiment_options(p, "output directory (work/, runs/, study.md inside)")
    p.add_argument("--backbones", type=lambda s: tuple(s.split(",")), default=("dinov2-small", "dinov2-base"),
                   help="comma-separated (dinov2-small,dinov2-base)")
    p.add_argument("--modalities", type=lambda s: tuple(s.split(",")), default=("flow", "depth", "flow+depth"),
                   help="comma-separated, each a '+' of flow, depth, rgb (flow,depth,flow+depth)")
    p.add_argument("--compress", type=lambda s: tuple(x for x in s.split(",") if x), default=(),
                   help="comma-separated: fp16, bf16, int8, onnx, compile, distill (none)")
    p.add_argument("--cross", nargs="+", default=[], help="other indexed work directories to test every cell on")
    p.add_argument("--bootstrap", type=_positive, default=1000, help="resamples for the 95%% intervals (1000)")
    p.set_defaults(func=_cmd_study)


def _cmd_study(args: argparse.Namespace) -> int:
    from .pipeline import StudyConfig
    from .study import StudyPlan, run_full_study

    cfg = StudyConfig.from_sections(load_yaml(args.config) if args.config else {}).with_options(
        format=args.format, splits_dir=args.splits_dir, epochs=args.epochs)
    plan = StudyPlan(backbones=args.backbones, modalities=args.modalities, compress=args.compress,
                     cross=tuple(args.cross), bootstrap=args.bootstrap)
    result = run_full_study(args.root, args.out, cfg, plan, workers=args.workers, device=args.device,
                            progress=not args.quiet, space_check=args.space_check)
    print(result.summary())
    return 0


# ---------------------------------------------------------------- demo


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the pipeline on a generated data set, offline")
    p.add_argument("-o", "--out", default="demo-out", help="output directory (demo-out)")
    p.add_argument("--clips", type=int, default=20, help="clips per class (20)")
    p.add_argument("--points", type=int, default=16, help="time points per clip (16)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (10)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(args.out, clips=args.clips, points=args.points, epochs=args.epochs, progress=not args.quiet)
    print(result.summary())
    return 0


# ---------------------------------------------------------------- serve


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="an HTTP service: JSON API, web page, evidence pages")
    p.add_argument("--model", required=True, help="run directory (or its best/ directory)")
    p.add_argument("--host", default="127.0.0.1", help="(127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="(8000)")
    p.add_argument("--workers", type=_positive, default=1, help="scoring threads, each with its own models (1)")
    p.add_argument("--queue", type=_positive, default=32, help="jobs queued or running at most; beyond: 503 (32)")
    p.add_argument("--max-upload-mb", type=float, default=200.0, help="(200)")
    p.add_argument("--max-seconds", type=float, default=600.0, help="longest video accepted, seconds (600)")
    p.add_argument("--data-dir", default="tim-serve-data", help="jobs database, uploads, pages (tim-serve-data)")
    p.add_argument("--token", default=os.environ.get("TIM_TOKEN"), help="require Authorization: Bearer TOKEN "
                   "(default: $TIM_TOKEN)")
    p.add_argument("--keep-uploads", action="store_true", help="keep uploaded videos after scoring")
    p.add_argument("--device", type=_device, default="cpu")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .serve import ServeConfig, serve
    except ImportError as err:
        raise ConfigError(f"tim serve needs the serve extra ({err.name} is missing): "
                          "pip install 'truthinmotion[serve]'") from None

    cfg = ServeConfig(model=args.model, data_dir=Path(args.data_dir), device=args.device, workers=args.workers,
                      queue=args.queue, max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds,
                      token=args.token or None, keep_uploads=args.keep_uploads)
    serve(cfg, args.host, args.port)
    return 0


# ---------------------------------------------------------------- main

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_index, _add_faces, _add_features, _add_train, _add_evaluate, _add_detect, _add_compress,
    _add_benchmark, _add_run, _add_study, _add_demo, _add_serve,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tim", description="truthinmotion: deepfake video detection from facial motion and depth"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    for p in sub.choices.values():
        p.add_argument("-v", "--verbose", action="store_true", help="other libraries' messages and progress bars "
                       "too (ONNX Runtime, transformers, Hugging Face downloads)")
    return parser


def set_up_logging(quiet: bool = False, verbose: bool = False) -> None:
    """The console shows truthinmotion's messages at INFO (WARNING with ``quiet``) and other
    libraries' at WARNING unless ``verbose``: ONNX Runtime's quantizer logs every tensor at INFO
    on the root logger, and transformers draws a bar for every model it loads."""
    ours = logging.WARNING if quiet else logging.INFO
    theirs = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(theirs)
    logging.getLogger("truthinmotion").setLevel(ours)
    for handler in logging.getLogger().handlers:  # a library raising its own loggers' level (a
        handler.setLevel(min(ours, theirs))  # run's log file) must not make the console louder than asked
    # transformers and huggingface_hub read these when first imported, here and in worker processes
    # (spawned pools, Ray); importing transformers only to call its switches costs seconds.
    os.environ["TRANSFORMERS_VERBOSITY"] = os.environ["HF_HUB_VERBOSITY"] = "info" if verbose else "warning"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "0" if verbose else "1"
    if "transformers" in sys.modules:  # imported already: main() called from Python
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(theirs)
        (hf_logging.enable_progress_bar if verbose else hf_logging.disable_progress_bar)()


def main(argv: Sequence[str] | None = None) -> int:
    from .stage import sigterm_as_interrupt

    args = build_parser().parse_args(argv)
    set_up_logging(getattr(args, "quiet", False), args.verbose)
    sigterm_as_interrupt()
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"tim {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tim {args.command}: interrupted; finished work is kept, re-run to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
