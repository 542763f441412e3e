"""Pseudo-fakes in the manifest: which rows are twins synthesised from real videos
(:mod:`truthinmotion.synth`), and which fakes a training run uses (``--fakes``).

A twin is a manifest row ``method=pseudo-<kind>``, ``label=1``, ``source=<real video id>``, with
its source's ``path``, ``group`` and ``split``: whatever splits the real videos also splits their
twins, so no split ever separates a twin from its source.
"""

from __future__ import annotations

import logging
from typing import Iterable, Mapping

from ..core.errors import ConfigError

__all__ = ["FAKES", "PSEUDO", "dataset_fakes", "is_pseudo", "pseudo_fakes", "resolve_fakes", "select_fakes"]

log = logging.getLogger(__name__)

PSEUDO = "pseudo-"  # the method prefix of a twin: pseudo-<kind>
# auto: what the work directory has (both where it has both); dataset: the dataset's own fakes;
# pseudo: twins only (a work directory of real videos is enough); both: the two together.
FAKES = ("auto", "dataset", "pseudo", "both")


def is_pseudo(row: Mapping[str, object]) -> bool:
    """Whether a manifest row is a twin made by ``tim synth``."""
    return str(row.get("method", "")).startswith(PSEUDO)


def pseudo_fakes(rows: Iterable[Mapping[str, object]]) -> list[Mapping[str, object]]:
    return [r for r in rows if is_pseudo(r)]


def dataset_fakes(rows: Iterable[Mapping[str, object]]) -> list[Mapping[str, object]]:
    return [r for r in rows if int(r["label"]) == 1 and not is_pseudo(r)]  # type: ignore[call-overload]


def resolve_fakes(rows: list[Mapping[str, object]], fakes: str) -> str:
    """``fakes`` with ``auto`` resolved to what ``rows`` hold (dataset, pseudo or both); asking for
    fakes the manifest does not hold is an error that says how to get them."""
    if fakes not in FAKES:
        raise ConfigError(f"fakes: {fakes!r} not one of {', '.join(FAKES)}")
    have_pseudo, have_dataset = bool(pseudo_fakes(rows)), bool(dataset_fakes(rows))
    if fakes == "auto":
        return "both" if have_pseudo and have_dataset else "pseudo" if have_pseudo else "dataset"
    if fakes in ("pseudo", "both") and not have_pseudo:
        raise ConfigError(f"--fakes {fakes}: the manifest has no pseudo-fakes; make them with `tim synth WORKDIR` "
                          "(tim run and tim study make them themselves with --fakes pseudo or both)")
    if fakes in ("dataset", "both") and not have_dataset:
        raise ConfigError(f"--fakes {fakes}: the manifest has no fakes of the dataset (only real videos"
                          f"{' and pseudo-fakes' if have_pseudo else ''}); use --fakes pseudo")
    return fakes


def select_fakes(rows: list[dict], fakes: str) -> list[dict]:
    """The rows a run with ``fakes`` (resolved: dataset, pseudo or both) uses: every real video and
    the chosen fakes."""
    if fakes == "both":
        return list(rows)
    keep_pseudo = fakes == "pseudo"
    return [r for r in rows if r["label"] == 0 and not is_pseudo(r) or (r["label"] == 1 and is_pseudo(r) == keep_pseudo)]
