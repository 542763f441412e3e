"""How ``tim`` reads its command line: value types, options bound to the setting they set (their
help shows that setting's own default, never one written here), and ``--config`` files.

A settings file has one shape for every command: sections named as in :data:`SECTIONS`, each the
keys of one settings dataclass. A command takes the sections it uses; every section of the file
is checked all the same, so one file serves every command. Precedence: defaults < the file's
section < the options given on the command line (an option not given is ``None`` and set nothing).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
from typing import Any, Callable, Sequence, TypeVar

from ...core.config import Settings, read_sections
from ...core.errors import ConfigError

S = TypeVar("S", bound=Settings)

# Every section a settings file may hold: the settings dataclass it sets. Imported when a file
# names it, so that parsing options stays free of torch.
SECTIONS = {
    "index": ("truthinmotion.data.index", "IndexConfig"),
    "faces": ("truthinmotion.faces.config", "FacesConfig"),
    "flow": ("truthinmotion.features.flow", "FlowConfig"),
    "depth": ("truthinmotion.features.depth", "DepthConfig"),
    "train": ("truthinmotion.training.runs", "TrainConfig"),
    # tim compress --method distill: the student's training settings, over the teacher's own
    "distill": ("truthinmotion.training.runs", "TrainConfig"),
    "evaluate": ("truthinmotion.experiments.evaluate", "EvaluateConfig"),
    "benchmark": ("truthinmotion.experiments.bench", "BenchmarkConfig"),
    "export": ("truthinmotion.experiments.export", "ExportConfig"),
    "robustness": ("truthinmotion.experiments.robustness", "RobustnessConfig"),
    "detect": ("truthinmotion.inference.config", "DetectConfig"),
    "serve": ("truthinmotion.apps.serve.config", "ServeConfig"),
    "synth": ("truthinmotion.synth.config", "SynthConfig"),  # tim synth; tim run and tim study with --fakes
}


@dataclasses.dataclass(frozen=True)
class Command:
    """One ``tim`` subcommand: ``add`` declares its options (importing what their defaults and
    choices come from, so only for the command being run); ``run`` calls the library, prints the
    result and returns the exit code."""

    name: str
    help: str
    add: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class HelpFormatter(argparse.HelpFormatter):
    """Shows the default of an option that has one of its own (``--workers 1``); an option bound
    to a setting (:func:`bind`) says its setting's default already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        value = _shown(action.default)
        if value is None or not action.option_strings or "(default" in text:
            return text
        return f"{text} (default: {value.replace('%', '%%')})".lstrip()


def _shown(value: Any) -> str | None:
    """A default as it is typed on the command line; None where there is nothing to show."""
    if value is None or isinstance(value, bool) or value in ((), []) or value is argparse.SUPPRESS:
        return None
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def default_of(owner: Any, name: str) -> Any:
    """The default that ``owner`` gives ``name``: a dataclass's field, an instance's value (the
    settings a command starts from), or a function's keyword."""
    if dataclasses.is_dataclass(owner):
        if not isinstance(owner, type):
            return getattr(owner, name)
        field = {f.name: f for f in dataclasses.fields(owner)}[name]
        return field.default_factory() if field.default is dataclasses.MISSING else field.default
    return inspect.signature(owner).parameters[name].default


def bind(p: argparse.ArgumentParser, flag: str | tuple[str, ...], owner: Any, name: str, *, dest: str | None = None,
         default_text: str | None = None, help: str = "", **kw: Any) -> argparse.Action:
    """An option that sets ``name`` of ``owner`` (see :func:`default_of`). Its help ends with the
    default read from ``owner`` (or ``default_text`` where the default is another run's); given
    nowhere else, it is ``None`` when the option is not, so settings files and ``owner`` decide."""
    shown = default_text or _shown(default_of(owner, name))
    text = f"{help} (default: {shown.replace('%', '%%')})".lstrip() if shown else help
    if "." in (dest or "") and "choices" not in kw and kw.get("action") not in ("store_true", "store_false"):
        kw.setdefault("metavar", name.upper())  # not SECTION.FIELD
    flags = (flag,) if isinstance(flag, str) else flag
    action = p.add_argument(*flags, dest=dest or name, default=None, help=text, **kw)
    action.default_from = (owner, name)  # type: ignore[attr-defined] - tests/test_cli.py reads it
    action.default_text = default_text  # type: ignore[attr-defined]
    return action


@dataclasses.dataclass(frozen=True)
class Section:
    """Options of one command that set the fields of the settings section ``name``; their values
    land in ``args`` as ``name.field`` (:func:`sections` collects them)."""

    parser: argparse.ArgumentParser
    name: str
    owner: Any  # the section's dataclass, or the instance the command starts from (tim run's train)

    def __call__(self, flag: str, field: str, **kw: Any) -> argparse.Action:
        return bind(self.parser, flag, self.owner, field, dest=f"{self.name}.{field}", **kw)


def section_class(name: str) -> type[Settings]:
    module, cls = SECTIONS[name]
    return getattr(importlib.import_module(module), cls)


def read_config(args: argparse.Namespace, flat: str | None = None) -> dict[str, dict[str, Any]]:
    """The sections of ``--config`` (none without it), each checked against its dataclass: a key
    it does not have or a value of the wrong type is an error naming the file and the section.
    ``flat``: the section a file without sections (the earlier form) is read as."""
    if not getattr(args, "config", None):
        return {}
    found = read_sections(args.config, list(SECTIONS), flat)
    checked = {}
    for name, keys in found.items():
        try:
            checked[name] = section_class(name).validate(keys)
        except ConfigError as err:
            raise ConfigError(f"{args.config}, section {name}: {err}") from None
    return checked


def given(args: argparse.Namespace, section: str) -> dict[str, Any]:
    """The options given on the command line for ``section``'s fields."""
    prefix = f"{section}."
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def sections(args: argparse.Namespace, names: Sequence[str], flat: str | None = None) -> dict[str, dict[str, Any]]:
    """The sections ``names`` of ``--config``, each with the options given for it on top."""
    found = read_config(args, flat)
    return {name: {**found.get(name, {}), **given(args, name)} for name in names}


def settings(args: argparse.Namespace, base: S, name: str, *, flat: bool = False) -> S:
    """``base`` with the section ``name`` of ``--config`` and then its options applied; ``flat``:
    a file without sections is this section (with a warning)."""
    return base.updated(sections(args, [name], name if flat else None)[name])


def present(**kw: Any) -> dict[str, Any]:
    """The keyword arguments given (not ``None``): the called function's own defaults stand for
    the others, so the command line never repeats them."""
    return {k: v for k, v in kw.items() if v is not None}


# ---------------------------------------------------------------- value types


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def ratios(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected three numbers like 0.7,0.2,0.1, got {text!r}") from err


def words(text: str) -> tuple[str, ...]:
    """A comma-separated list (empty items dropped)."""
    return tuple(x for x in text.split(",") if x)


def device(text: str) -> str:
    from ...backends.runtime import check_device

    try:
        return check_device(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# ---------------------------------------------------------------- options several commands share


def common(p: argparse.ArgumentParser, reads: Sequence[str]) -> None:
    """``--config`` (see :func:`config_option`) and ``-q``."""
    config_option(p, reads)
    quiet(p)


def config_option(p: argparse.ArgumentParser, reads: Sequence[str]) -> None:
    """``--config``: a settings file, of which this command reads the sections ``reads``."""
    p.add_argument("--config", help=f"YAML settings file of sections ({', '.join(SECTIONS)}); this command reads "
                                    f"{', '.join(reads)}, command-line options go on top")


def quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")


def engine_options(p: argparse.ArgumentParser) -> None:
    from ...execution.engine import ENGINES, Engine

    bind(p, "--engine", Engine, "kind", dest="engine", choices=ENGINES,
         help="local processes or Ray Data actors (pip install 'truthinmotion[ray]')")
    bind(p, "--ray-address", Engine, "address", dest="ray_address",
         help="Ray: a running cluster (auto, HOST:6379); default: start one here")
    bind(p, "--ray-gpus", Engine, "gpus", dest="ray_gpus", type=float,
         help="Ray on CUDA: GPUs per actor, fractions allowed")


def engine(args: argparse.Namespace) -> Any:
    from ...execution.engine import Engine

    return Engine(**present(kind=args.engine, address=args.ray_address, gpus=args.ray_gpus))


def stage_options(p: argparse.ArgumentParser, reads: Sequence[str]) -> None:
    """What the per-video stages (faces, features) share."""
    engine_options(p)
    p.add_argument("--workers", type=positive, default=1, help="parallel processes or Ray actors")
    p.add_argument("--device", type=device, default="cpu", help="cpu or cuda")
    p.add_argument("--limit", type=positive, help="process only the first N videos of the manifest")
    p.add_argument("--only", type=lambda s: s.split(","), help="comma-separated video ids")
    common(p, reads)
    space_option(p)


def fakes_option(train: Section) -> None:
    """``--fakes`` of the train section (tim train, tim run, tim study)."""
    from ...data.pseudo import FAKES

    train("--fakes", "fakes", choices=FAKES, help="fakes to train on: the dataset's, pseudo-fakes of its real "
          "videos (tim synth; real videos are enough), both, or auto: what the work directory has")


def augment_options(train: Section) -> None:
    """``--augment`` and its levels, of the train section (tim train, tim run, tim study)."""
    from ...media.perturb import parse_levels, parse_perturbations

    train("--augment", "augment", type=parse_perturbations, help="perturbed copies of every training video as extra "
          "training rows, their types drawn from these (all, or codes such as vc,gb,gnc: tim robustness's)")
    train("--augment-levels", "augment_levels", type=parse_levels, help="--augment: levels drawn from (1-5, 1,3)")


def space_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-space-check", dest="space_check", action="store_false",
                   help="start even when free disk space is below the artifacts' estimate")


ALLOW_SPLIT_CHANGE = dict(action="store_true",
                          help="go on although the work directory was re-indexed into another split than the "
                               "detector was trained on")
