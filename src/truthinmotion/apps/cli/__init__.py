"""``tim``: one subcommand per stage, each a thin shell over one library function.

Settings come from the stage's defaults, then the sections of ``--config FILE.yaml`` the command
uses (one file shape for every command: :mod:`.options`), then command-line options; unknown
sections, unknown keys and out-of-range values are errors. Exit codes: 0 success, 1 some videos
failed (see ``errors.csv``), 2 bad usage or configuration.

Modules: :mod:`.options` (reading options and settings files), :mod:`.stages` (index, faces,
synth, features), :mod:`.detectors` (train, evaluate, compress, benchmark, robustness,
export), :mod:`.scoring` (detect,
serve), :mod:`.pipelines` (run, study, demo).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from typing import Collection, Sequence

from ...core.errors import ConfigError
from . import detectors, pipelines, scoring, stages
from .options import Command, HelpFormatter

__all__ = ["COMMANDS", "build_parser", "main", "set_up_logging"]

COMMANDS: list[Command] = [
    stages.INDEX, stages.FACES, stages.SYNTH, stages.FEATURES, detectors.TRAIN, detectors.EVALUATE, scoring.DETECT,
    detectors.COMPRESS, detectors.BENCHMARK, detectors.ROBUSTNESS, detectors.EXPORT, pipelines.RUN, pipelines.STUDY, pipelines.DEMO, scoring.SERVE,
]


def build_parser(only: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``tim`` parser; the options of the commands in ``only`` (all by default). A command's
    options import what their defaults and choices come from, so ``tim --help`` declares none."""
    parser = argparse.ArgumentParser(
        prog="tim", description="truthinmotion: deepfake video detection from facial motion and depth"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, formatter_class=HelpFormatter)
        p.set_defaults(func=command.run)
        if only is None or command.name in only:
            command.add(p)
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
        with warnings.catch_warnings():  # huggingface_hub's own bars keep the environment it was imported
            warnings.simplefilter("ignore", UserWarning)  # with, and it warns so; transformers' bars follow
            (hf_logging.enable_progress_bar if verbose else hf_logging.disable_progress_bar)()


def main(argv: Sequence[str] | None = None) -> int:
    from ...execution.workers import sigterm_as_interrupt

    argv = sys.argv[1:] if argv is None else list(argv)
    named = next((a for a in argv if not a.startswith("-")), None)  # the command: the first word
    args = build_parser({named} if named else set()).parse_args(argv)
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
