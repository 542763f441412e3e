"""Perturbed training copies in the manifest (``--augment``): which rows they are, which a run
draws, and which a run trains on.

A copy is a manifest row derived from one *training* video, as a pseudo-fake is from a real one
(:mod:`.pseudo`): ``source=<video id>``, its source's ``path``, ``label``, ``dataset``,
``method``, ``group`` and split (always ``train``), and ``augment=<type>-<level>``, a perturbation
of :mod:`..media.perturb` (the DeeperForensics-1.0 set of Jiang et al., CVPR 2020, resizing, a
bitrate cap). Validation and test videos never get copies, and a copy stays in its source's
group, so no split separates them. Each copy's type and level are drawn from the run's types and
levels by a generator seeded with the settings' seed, the source's id and the copy's number:
the same settings plan the same copies, and a training run takes exactly the copies it plans.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from ..core.config import Settings, require
from ..core.io import check_video_id
from ..media.perturb import LEVELS, PERTURBATIONS
from .pseudo import is_pseudo

__all__ = ["AUGMENTED", "AugmentConfig", "copy_seed", "is_copy", "is_derived", "parse_copy", "plan_copies",
           "select_copies"]

log = logging.getLogger(__name__)

AUGMENTED = "aug-"  # the id prefix of a copy: aug-<type><level>-<n>-<source id>


@dataclass(frozen=True)
class AugmentConfig(Settings):
    """``--augment``: perturbed copies of every training video, as extra training rows (a part of
    ``TrainConfig``, so a run's ``config.yaml`` records them)."""

    augment: tuple[str, ...] = ()  # perturbation codes of media.perturb.PERTURBATIONS drawn from; () none
    augment_levels: tuple[int, ...] = LEVELS  # levels drawn from (1 mildest to 5; resize has 1 to 3)
    augment_copies: int = 1  # copies per training video, each of one drawn type and level
    augment_seed: int = 0  # with a source's id and a copy's number, seeds its type, level and draws

    def check(self) -> None:
        bad = sorted(set(self.augment) - set(PERTURBATIONS))
        require(not bad, f"augment: {bad} not known; choose from {', '.join(PERTURBATIONS)}")
        require(bool(self.augment_levels) and set(self.augment_levels) <= set(LEVELS),
                f"augment_levels: each one of {LEVELS}")
        none = [c for c in self.augment if not self.levels_of(c)]
        require(not none, f"augment: {none} has none of the levels {list(self.augment_levels)} (resize: 1 to 3)")
        require(self.augment_copies >= 1, "augment_copies: at least 1")

    def levels_of(self, code: str) -> list[int]:
        return [lv for lv in self.augment_levels if lv <= len(PERTURBATIONS[code].params)]

    def record(self) -> dict | None:
        """What a detector's provenance says of its training copies; None without ``--augment``."""
        if not self.augment:
            return None
        return {"perturbations": list(self.augment), "levels": list(self.augment_levels),
                "copies": self.augment_copies, "seed": self.augment_seed}


def copy_seed(seed: int, video_id: str) -> int:
    """The seed of one copy's draws (its type and level, then blocks or noise)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{video_id}".encode()).digest()[:8], "big") >> 1


def is_copy(row: Mapping[str, object]) -> bool:
    """Whether a manifest row is a perturbed training copy (``--augment``)."""
    return bool(row.get("augment"))


def is_derived(row: Mapping[str, object]) -> bool:
    """Whether a manifest row is made from another's video (a pseudo-fake or a perturbed copy):
    its path is its source's, so no stage may treat that file as the row's own."""
    return is_pseudo(row) or is_copy(row)


def plan_copies(rows: Iterable[Mapping[str, object]], cfg: AugmentConfig) -> list[dict]:
    """Manifest rows of the copies of the training videos among ``rows`` (pseudo-fakes and copies
    themselves are no sources: they are no files of their own)."""
    out: list[dict] = []
    if not cfg.augment:
        return out
    for r in rows:
        if r["split"] != "train" or is_derived(r):
            continue
        for n in range(cfg.augment_copies):
            rng = np.random.default_rng(copy_seed(cfg.augment_seed, f"{r['video_id']}:{n}"))
            code = cfg.augment[int(rng.integers(len(cfg.augment)))]
            levels = cfg.levels_of(code)
            level = levels[int(rng.integers(len(levels)))]
            vid = check_video_id(f"{AUGMENTED}{code}{level}-{n}-{r['video_id']}"[:200])
            out.append({**r, "video_id": vid, "source": r["video_id"], "augment": f"{code}-{level}"})
    return out


def select_copies(rows: list[dict], cfg: AugmentConfig) -> list[dict]:
    """``rows`` without the copies a run with ``cfg`` does not plan (all of them without
    ``--augment``): copies made for another run's settings never slip into this one's data."""
    planned = {c["video_id"] for c in plan_copies(rows, cfg)}
    return [r for r in rows if not is_copy(r) or r["video_id"] in planned]


def parse_copy(row: Mapping[str, object]) -> tuple[str, int]:
    """(type, level) of a copy's row."""
    code, _, level = str(row["augment"]).rpartition("-")
    return code, int(level)
