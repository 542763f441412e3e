"""Every stage in one command: ``tim run``, ``tim study``, ``tim demo``."""

from __future__ import annotations

import argparse

from .options import (ALLOW_SPLIT_CHANGE, Command, Section, augment_options, bind, common, device, fakes_option,
                      positive, present, read_config, sections, space_option, words)


def _experiment_options(p: argparse.ArgumentParser, out_help: str) -> Section:
    """What tim run and tim study share: the dataset, the output, the stages' settings. Returns the
    options of the train section (whose defaults are tim run's: flow+depth)."""
    from ...data.index import FORMATS
    from ...experiments.pipeline import SECTIONS, StudyConfig

    base = StudyConfig()
    p.add_argument("root", help="dataset root (a CSV file for --format csv)")
    p.add_argument("-o", "--out", required=True, help=out_help)
    index = Section(p, "index", base.index)
    index("--format", "format", choices=list(FORMATS))
    index("--splits", "splits_dir", help="FF++: directory of official train/val/test.json")
    train = Section(p, "train", base.train)
    train("--epochs", "epochs", type=int)
    fakes_option(train)
    augment_options(train)
    synth = Section(p, "synth", base.synth)
    synth("--kinds", "kinds", type=words, help="pseudo-fake kinds, comma-separated (with --fakes pseudo or both)")
    synth("--per-video", "per_video", type=int, help="pseudo-fakes per real video (with --fakes pseudo or both)")
    p.add_argument("--workers", type=positive, default=1, help="processes for faces and features")
    p.add_argument("--device", type=device, default="cpu", help="cpu or cuda")
    common(p, SECTIONS)
    p.add_argument("--allow-split-change", **ALLOW_SPLIT_CHANGE)
    space_option(p)
    return train


def _study_config(args: argparse.Namespace):
    from ...experiments.pipeline import SECTIONS, StudyConfig

    return StudyConfig.from_sections(sections(args, SECTIONS))


# ---------------------------------------------------------------- run


def _add_run(p: argparse.ArgumentParser) -> None:
    from ...models.architecture import BACKBONES, MODALITIES

    train = _experiment_options(p, "output directory (work/ and runs/ inside)")
    train("--modality", "modality", help=f"{', '.join(MODALITIES)} or a '+' of them")
    train("--backbone", "backbone", help=f"one of {', '.join(BACKBONES)}")
    p.add_argument("--name", help="run name under OUT/runs (default: backbone-modality)")


def _run(args: argparse.Namespace) -> int:
    from ...experiments.pipeline import run_study

    result = run_study(args.root, args.out, _study_config(args), workers=args.workers, device=args.device,
                       run_name=args.name, progress=not args.quiet, space_check=args.space_check,
                       allow_split_change=args.allow_split_change)
    print(result.summary())
    return 0


RUN = Command("run", "index, faces, features, train and evaluate: the whole study", _add_run, _run)


# ---------------------------------------------------------------- study


def _add_study(p: argparse.ArgumentParser) -> None:
    from ...experiments.compress import COMPRESS_METHODS
    from ...experiments.study import StudyPlan
    from ...models.architecture import MODALITIES

    _experiment_options(p, "output directory (work/, runs/, study.md inside)")
    bind(p, "--backbones", StudyPlan, "backbones", type=words, help="comma-separated")
    bind(p, "--modalities", StudyPlan, "modalities", type=words,
         help=f"comma-separated, each a '+' of {', '.join(MODALITIES)}")
    bind(p, "--compress", StudyPlan, "compress", type=words,
         help=f"comma-separated, of {', '.join(COMPRESS_METHODS)}; none by default")
    bind(p, "--cross", StudyPlan, "cross", nargs="+", help="other indexed work directories to test every cell on")
    bind(p, "--bootstrap", StudyPlan, "bootstrap", type=positive, help="resamples for the 95%% intervals")
    from ...media.perturb import parse_levels, parse_perturbations

    bind(p, "--robustness", StudyPlan, "robustness", type=parse_perturbations,
         help="perturbations (all, or codes such as vc,gb) every cell's test videos are scored under (tim robustness)")
    bind(p, "--robustness-levels", StudyPlan, "robustness_levels", type=parse_levels, help="their levels")


def _study(args: argparse.Namespace) -> int:
    from ...experiments.study import StudyPlan, run_full_study

    plan = StudyPlan(**present(backbones=args.backbones, modalities=args.modalities, compress=args.compress,
                               cross=tuple(args.cross) if args.cross else None, bootstrap=args.bootstrap,
                               robustness=args.robustness, robustness_levels=args.robustness_levels))
    result = run_full_study(args.root, args.out, _study_config(args), plan, workers=args.workers,
                            device=args.device, progress=not args.quiet, space_check=args.space_check,
                            allow_split_change=args.allow_split_change)
    print(result.summary())
    return 0


STUDY = Command("study", "the study's whole experiment: every backbone x modality, compressions, tables", _add_study,
                _study)


# ---------------------------------------------------------------- demo


def _add_demo(p: argparse.ArgumentParser) -> None:
    from ...experiments.pipeline import SECTIONS
    from ..demo import run_demo

    bind(p, ("-o", "--out"), run_demo, "out", help="output directory")
    bind(p, "--clips", run_demo, "clips", type=int, help="clips per class")
    bind(p, "--points", run_demo, "points", type=int, help="time points per clip")
    bind(p, "--epochs", run_demo, "epochs", type=int, help="training epochs")
    p.add_argument("--fakes", choices=("dataset", "pseudo", "both"), default=None,
                   help="the fakes it learns from: the generated fake clips (dataset, the default), pseudo-fakes "
                        "made from the real clips alone (pseudo: the generated fakes are then never shown to it; "
                        "runs/demo-pseudo), or both")
    p.add_argument("--study", action="store_true",
                   help="then a small study of the clips: every modality by two tiny backbones (or the cached "
                        "DINOv2-small), fp32 and int8")
    common(p, SECTIONS)


def _demo(args: argparse.Namespace) -> int:
    from ...experiments.pipeline import SECTIONS
    from ..demo import run_demo

    found = read_config(args)
    settings = {name: found[name] for name in SECTIONS if name in found}
    # --points and --epochs go over the file's faces and train sections
    if settings.get("faces") and args.points is not None:
        settings["faces"]["num_points"] = args.points
    if settings.get("train") and args.epochs is not None:
        settings["train"]["epochs"] = args.epochs
    result = run_demo(**present(out=args.out, clips=args.clips, points=args.points, epochs=args.epochs),
                      progress=not args.quiet, study=args.study, settings=settings, fakes=args.fakes)
    print(result.summary())
    return 0


DEMO = Command("demo", "the pipeline on a generated data set, offline", _add_demo, _demo)
