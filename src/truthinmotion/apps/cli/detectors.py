"""Making and measuring detectors: ``tim train``, ``tim evaluate``, ``tim compress``, ``tim benchmark``,
``tim robustness``."""

from __future__ import annotations

import argparse

from ...core.errors import ConfigError
from .options import (ALLOW_SPLIT_CHANGE, Command, Section, augment_options, bind, common, config_option, device,
                      fakes_option, positive, present, read_config, sections, settings)

# ---------------------------------------------------------------- train


def _add_train(p: argparse.ArgumentParser) -> None:
    from ...backends.runtime import AUTOCAST_MODES
    from ...backends.weights import INITS
    from ...models.architecture import BACKBONES, FUSIONS, MODALITIES
    from ...models.inputs import TRAIN_FACES
    from ...training.runs import TrainConfig

    p.add_argument("workdir")
    p.add_argument("-o", "--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's last epoch")
    p.add_argument("--allow-split-change", **ALLOW_SPLIT_CHANGE)
    train = Section(p, "train", TrainConfig)
    train("--modality", "modality", help=f"{', '.join(MODALITIES)} or a '+' of them")
    train("--backbone", "backbone", help=f"one of {', '.join(BACKBONES)}")
    train("--backbone-path", "backbone_path", help="local DINOv2 directory instead of the hub id")
    train("--init", "init", choices=INITS, help="backbone weights")
    train("--fusion", "fusion", choices=FUSIONS, help="concat embeddings or average probabilities")
    train("--train-blocks", "train_blocks", type=lambda s: -1 if s == "all" else int(s),
          help="last N blocks trained; 0 head only; all")
    train("--epochs", "epochs", type=int)
    train("--batch-size", "batch_size", type=int, help="videos per step")
    train("--lr", "lr", type=float, help="AdamW learning rate")
    train("--train-points", "train_points", type=int, help="time points per video per step")
    train("--flow", "flow", help="flow artifacts to use: WORKDIR/flow/<name>")
    train("--depth", "depth", help="depth artifacts to use: WORKDIR/depth/<name>")
    train("--image-size", "image_size", type=int, help="backbone input side, multiple of 14")
    train("--train-faces", "train_faces", choices=TRAIN_FACES, help="faces trained on: each video's main face or all")
    train("--seed", "seed", type=int)
    train("--workers", "workers", type=int, help="DataLoader processes")
    train("--device", "device", type=device, help="cpu or cuda")
    train("--autocast", "autocast", choices=AUTOCAST_MODES, help="mixed precision on GPU (auto: bf16)")
    train("--patience", "patience", type=int, help="epochs without improvement before stopping")
    fakes_option(train)
    augment_options(train)
    train("--augment-copies", "augment_copies", type=int, help="--augment: copies per training video")
    common(p, ["train"])


def _train(args: argparse.Namespace) -> int:
    from ...experiments.pipeline import augment_work
    from ...training.train import TrainConfig, saved_config, train

    # A resumed run starts from its own saved settings; options given now go on top (and are
    # checked: only what a resume may change is accepted).
    cfg = settings(args, saved_config(args.out) if args.resume else TrainConfig(), "train", flat=True)
    if args.quiet:
        cfg = cfg.updated({"progress": False})
    for line in augment_work(args.workdir, cfg, device=cfg.device, progress=cfg.progress):
        print(line)
    print(train(args.workdir, cfg, args.out, resume=args.resume, allow_split_change=args.allow_split_change).summary())
    return 0


TRAIN = Command("train", "train a detector: runs/NAME/{config.yaml,metrics.csv,best/,last/}", _add_train, _train)


# ---------------------------------------------------------------- evaluate


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    from ...core.metrics import AGGREGATIONS
    from ...data.splits import SPLITS
    from ...experiments.evaluate import EvaluateConfig

    p.add_argument("run_dir", help="run directory, exported folder or hub id org/name[@revision]")
    section = Section(p, "evaluate", EvaluateConfig)
    section("--split", "split", choices=SPLITS)
    p.add_argument("--workdir", help="another indexed dataset (cross-dataset); default: the training one")
    section("--aggregation", "aggregation", choices=list(AGGREGATIONS), help="video score from frames")
    p.add_argument("--out", help="report directory (default: the run directory; needed for a hub id)")
    p.add_argument("--device", type=device, default="cpu", help="cpu or cuda")
    p.add_argument("--allow-split-change", **ALLOW_SPLIT_CHANGE)
    common(p, ["evaluate"])


def _evaluate(args: argparse.Namespace) -> int:
    from ...experiments.evaluate import EvaluateConfig, evaluate

    cfg = settings(args, EvaluateConfig(), "evaluate")
    result = evaluate(args.run_dir, **cfg.to_dict(), workdir=args.workdir, device=args.device, out_dir=args.out,
                      progress=not args.quiet, allow_split_change=args.allow_split_change)
    print(result.summary())
    return 0


EVALUATE = Command("evaluate", "metrics, report and plots of a trained detector", _add_evaluate, _evaluate)


# ---------------------------------------------------------------- compress


def _add_compress(p: argparse.ArgumentParser) -> None:
    from ...backends.weights import INITS
    from ...experiments.compress import COMPRESS_METHODS
    from ...training.distill import distill
    from ...training.runs import TrainConfig

    p.add_argument("run_dir", help="the trained run directory, exported folder or hub id (the teacher for distill)")
    p.add_argument("--method", required=True, choices=COMPRESS_METHODS)
    p.add_argument("-o", "--out", required=True, help="output run directory")
    p.add_argument("--teacher", help="distill: teacher run directory (default: RUN_DIR)")
    bind(p, "--student", distill, "student", help="distill: student backbone")
    student = Section(p, "distill", TrainConfig)  # the student's settings, over the teacher's
    student("--alpha", "distill_alpha", type=float, help="distill: weight of the embedding KL")
    student("--logit-weight", "distill_logit", type=float, help="distill: logit distillation weight (the study: 0)")
    student("--temperature", "distill_temperature", type=float, help="distill: temperature T")
    student("--epochs", "epochs", type=int, default_text="the teacher's", help="distill: epochs")
    student("--init", "init", choices=INITS, default_text="the teacher's", help="distill: student weights")
    p.add_argument("--resume", action="store_true", help="distill: continue an interrupted run")
    p.add_argument("--allow-split-change", **ALLOW_SPLIT_CHANGE)
    p.add_argument("--device", type=device, default="cpu", help="cpu or cuda")
    common(p, ["distill"])


def _compress(args: argparse.Namespace) -> int:
    from ...experiments.compress import compress
    from ...training.distill import distill

    if args.method == "distill":
        options = sections(args, ["distill"], flat="distill")["distill"]
        options.update(device=args.device, progress=False if args.quiet else None)
        print(distill(args.teacher or args.run_dir, args.out, **present(student=args.student), overrides=options,
                      resume=args.resume, allow_split_change=args.allow_split_change).summary())
    else:
        if "distill" in read_config(args, flat="distill"):
            raise ConfigError(f"--config {args.config}: the distill section applies to --method distill only; "
                              f"{args.method} has no settings")
        print(compress(args.run_dir, args.method, args.out, device=args.device).summary())
    return 0


COMPRESS = Command("compress", "fp16/bf16, compile, onnx, int8 or distilled copy of a detector", _add_compress,
                   _compress)


# ---------------------------------------------------------------- benchmark


def _add_benchmark(p: argparse.ArgumentParser) -> None:
    from ...data.splits import SPLITS
    from ...experiments.bench import BenchmarkConfig

    p.add_argument("run_dirs", nargs="+", help="run directories, exported folders or hub ids; the first is the baseline of the speed-ups")
    p.add_argument("--device", type=device, default="cpu", help="cpu or cuda")
    section = Section(p, "benchmark", BenchmarkConfig)
    section("--split", "split", choices=SPLITS)
    section("--repeats", "repeats", type=positive, help="timed calls at batch 1")
    section("--batches", "batches", type=lambda s: tuple(positive(b) for b in s.split(",")),
            help="batch sizes tried for throughput, comma-separated")
    p.add_argument("--out", help="where benchmark.md/json go (default: the first run directory)")
    config_option(p, ["benchmark"])


def _benchmark(args: argparse.Namespace) -> int:
    from ...experiments.bench import BenchmarkConfig, benchmark_runs

    cfg = settings(args, BenchmarkConfig(), "benchmark")
    print(benchmark_runs(args.run_dirs, device=args.device, split=cfg.split, batches=cfg.batches,
                         repeats=cfg.repeats, out_dir=args.out).summary())
    return 0


BENCHMARK = Command("benchmark", "size, latency, throughput and accuracy of detector variants", _add_benchmark,
                    _benchmark)


# ---------------------------------------------------------------- robustness


def _add_robustness(p: argparse.ArgumentParser) -> None:
    from ...core.metrics import AGGREGATIONS
    from ...data.splits import SPLITS
    from ...experiments.robustness import RobustnessConfig
    from ...media.perturb import PERTURBATIONS, parse_levels, parse_perturbations

    p.add_argument("run_dir")
    p.add_argument("--workdir", help="the work directory whose videos are perturbed (default: the training one)")
    section = Section(p, "robustness", RobustnessConfig)
    section("--perturbations", "perturbations", type=parse_perturbations,
            help="all, or comma-separated: " + ", ".join(f"{c} ({q.name})" for c, q in PERTURBATIONS.items()))
    section("--levels", "levels", type=parse_levels, help="levels, 1 (mild) to 5: 1-5, 1,3,5 or 2")
    section("--seed", "seed", type=int, help="seeds each copy's draws with its video, type and level")
    section("--split", "split", choices=SPLITS)
    section("--aggregation", "aggregation", choices=list(AGGREGATIONS), help="video score from frames")
    p.add_argument("--keep-videos", metavar="DIR", help="keep the perturbed copies in DIR/<type>-<level>/ "
                   "(outside the work directory; by default each is deleted once scored)")
    p.add_argument("--out", help="where robustness.md/json/png and verdicts.jsonl go "
                   "(default: RUN_DIR/robustness-<workdir>)")
    p.add_argument("--device", type=device, default="cpu", help="cpu or cuda")
    p.add_argument("--allow-split-change", **ALLOW_SPLIT_CHANGE)
    common(p, ["robustness"])


def _robustness(args: argparse.Namespace) -> int:
    from ...experiments.robustness import RobustnessConfig, run_robustness

    cfg = settings(args, RobustnessConfig(), "robustness")
    result = run_robustness(args.run_dir, args.workdir, cfg, out_dir=args.out, keep_videos=args.keep_videos,
                            device=args.device, progress=not args.quiet, allow_split_change=args.allow_split_change)
    print(result.summary())
    return 0


ROBUSTNESS = Command("robustness", "verdicts of perturbed test videos (DeeperForensics-1.0 set, resize, bitrate): "
                     "robustness.md/json/png", _add_robustness, _robustness)


# ---------------------------------------------------------------- export


def _add_export(p: argparse.ArgumentParser) -> None:
    from ...experiments.export import ExportConfig

    p.add_argument("run_dir", help="an evaluated run directory (metrics.json and predictions.csv)")
    p.add_argument("out", help="the folder to write (new or empty): weights, config.json, README.md (the card)")
    section = Section(p, "export", ExportConfig)
    section("--variants", "variants", type=lambda s: tuple(v for v in s.split(",") if v),
            help="compressed copies put beside it, comma-separated: int8,bf16 (see tim compress)")
    section("--bootstrap", "bootstrap", type=positive, help="resamples for the card's 95%% intervals")
    p.add_argument("--device", type=device, default="cpu", help="cpu or cuda (checking the variants)")
    config_option(p, ["export"])


def _export(args: argparse.Namespace) -> int:
    from ...experiments.export import ExportConfig, export_detector

    cfg = settings(args, ExportConfig(), "export")
    print(export_detector(args.run_dir, args.out, variants=cfg.variants, device=args.device,
                          bootstrap=cfg.bootstrap).summary())
    return 0


EXPORT = Command("export", "a detector as a folder to publish on the Hugging Face hub, with its model card",
                 _add_export, _export)
