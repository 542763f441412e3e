"""Indexing: a dataset root becomes ``WORKDIR/manifest.csv``, one row a video (the formats
themselves: :mod:`.formats`).

Columns: ``video_id, path, label (0 real, 1 fake), dataset, method, group, split`` (and ``source``
where the manifest holds pseudo-fakes, :mod:`.pseudo`; a re-index keeps them with their source). ``group`` is a
connected component of shared source identities (FF++ ``A_B`` joins ``A`` and ``B``; a DFDC fake
joins its original; Celeb-DF ``idX``), and no split ever cuts a group: sharing identities between
train and test is the leakage that FaceForensics++ (Rössler et al., ICCV 2019) warns about.

Where pairs chain identities together (Celeb-DF v2 ``idA_idB_xxxx``, FF++ DeepFakeDetection
``A_B__scene``: A with B, B with C, ...), the components would swallow most of a dataset and one
split would get it all. A component of more than ``max(10, 2%)`` of the videos is therefore cut
back to target identities (a fake joins only the person it was made from); the identities that
then appear in more than one split are counted and reported, not hidden.

Official split lists are used where a dataset has them (FF++ ``splits/*.json`` by identity,
Celeb-DF's test list video by video); the rest follow a seeded, group-aware split stratified by
label and the ratios (default 0.7/0.2/0.1, as in the original study). Where a format cannot say
who is in a video (folder, a CSV without ``group``, DFDC's actors), indexing warns: those splits
can put one person on both sides.

:func:`manifest_hash` names a split assignment (``video_id, group, split``); runs and evaluations
record it, so a re-index that moves videos between splits is noticed, not silently mixed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..core.errors import ConfigError
from ..core.config import Settings, require
from ..core.errors import StageError
from ..core.io import WorkDir, atomic_path, check_video_id
from .augment import is_copy, is_derived
from .pseudo import is_pseudo
from .formats import FFPP_METHODS, FFPP_STANDARD, FORMATS, VIDEO_SUFFIXES, VideoRecord, real_videos_alone
from .splits import SPLITS, assign_splits, group_split

__all__ = [
    "FORMATS",
    "VIDEO_SUFFIXES",
    "FFPP_METHODS",
    "FFPP_STANDARD",
    "IndexConfig",
    "IndexResult",
    "VideoRecord",
    "check_video_id",
    "group_split",
    "index_dataset",
    "manifest_hash",
    "read_manifest",
    "select_rows",
    "split_hash",
    "write_manifest",
]

log = logging.getLogger(__name__)

FIELDS = ("video_id", "path", "label", "dataset", "method", "group", "split")
PSEUDO_FIELDS = (*FIELDS, "source")  # a manifest with pseudo-fakes: the real video each twin was made from
COPY_FIELDS = (*PSEUDO_FIELDS, "augment")  # with perturbed training copies (--augment): type-level


@dataclass(frozen=True)
class IndexConfig(Settings):
    format: str = "folder"  # ffpp | dfdc | celebdf | folder | csv
    compression: str = "c23"  # FF++ compression level: raw (c0) | c23 | c40
    methods: tuple[str, ...] = FFPP_STANDARD  # FF++ manipulation methods (all: FFPP_METHODS)
    splits_dir: str | None = None  # FF++: directory holding the official train/val/test.json
    ratios: tuple[float, float, float] = (0.7, 0.2, 0.1)  # train/val/test where no official list
    seed: int = 0  # seed of the ratio split

    def check(self) -> None:
        require(self.format in FORMATS, f"format: {self.format!r} not one of {', '.join(FORMATS)}")
        require(self.compression in ("raw", "c23", "c40"), "compression: one of raw, c23, c40")
        bad = sorted(set(self.methods) - set(FFPP_METHODS))
        require(not bad, f"methods: unknown {bad}; allowed: {', '.join(FFPP_METHODS)}")
        require(
            len(self.ratios) == 3 and all(isinstance(r, (int, float)) and math.isfinite(r) and r >= 0
                                          for r in self.ratios) and sum(self.ratios) > 0,
            f"ratios: {self.ratios}; give three finite non-negative numbers (train, val, test) with a positive sum",
        )


@dataclass
class IndexResult:
    manifest: Path
    records: list[VideoRecord]
    missing: list[str]  # listed in metadata but absent on disk
    shared_identities: int = 0  # identities with videos in more than one split (cut chains, official lists)

    @property
    def warnings(self) -> list[str]:
        """Splits that training cannot use: empty, or holding one class."""
        counts = Counter((r.split, r.label) for r in self.records)
        out = []
        for split in SPLITS:
            real, fake = counts[split, 0], counts[split, 1]
            if not real or not fake:
                out.append(f"the {split} split has {real} real and {fake} fake videos: "
                           f"{'tim train needs both classes in train and val (or pseudo-fakes: tim synth)' if split != 'test' else 'test metrics need both classes'}")
        return out

    def summary(self) -> str:
        counts = Counter((r.split, r.label) for r in self.records)
        lines = [f"indexed {len(self.records)} videos into {self.manifest}"]
        for split in sorted({r.split for r in self.records}, key=_split_order):
            lines.append(
                f"  {split:<9} {counts[split, 0] + counts[split, 1]:>6} videos "
                f"({counts[split, 0]} real, {counts[split, 1]} fake)"
            )
        methods = Counter(r.method for r in self.records)
        lines.append("  methods: " + ", ".join(f"{m} ({n})" for m, n in sorted(methods.items())))
        if self.shared_identities:
            lines.append(f"  {self.shared_identities} identities appear in more than one split "
                         "(chained pairs cut back to target identities, or the official lists)")
        if self.missing:
            lines.append(f"  {len(self.missing)} listed but missing on disk (see errors.csv)")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _split_order(split: str) -> int:
    return SPLITS.index(split) if split in SPLITS else len(SPLITS)




# ---------------------------------------------------------------- entry points


def index_dataset(root: str | Path, workdir: str | Path, cfg: IndexConfig = IndexConfig()) -> IndexResult:
    """Index ``root`` (a dataset directory, or a CSV file for ``format='csv'``) into a manifest."""
    root = Path(root).resolve()
    if not root.exists():
        raise ConfigError(f"dataset root not found: {root}")
    work = WorkDir(Path(workdir))
    if cfg.format == "folder" and real_videos_alone(root) and work.root.resolve().is_relative_to(root):
        raise ConfigError(f"the work directory {work.root} is inside {root}, a folder of real videos alone: the "
                          "videos made there (pseudo-fakes, perturbed copies) would be indexed as real ones; "
                          "put the output elsewhere")
    records, missing, official = FORMATS[cfg.format](root, cfg)
    if not records:
        raise ConfigError(f"no videos found under {root} that exist on disk ({len(missing)} listed but missing)")
    for r in records:
        check_video_id(r.video_id)
    dupes = [vid for vid, n in Counter(r.video_id for r in records).items() if n > 1]
    if dupes:
        raise ConfigError(f"duplicate video ids {dupes[:5]}: give each video a unique id")
    shared = assign_splits(records, official, cfg.ratios, cfg.seed)
    records.sort(key=lambda r: (_split_order(r.split), r.video_id))
    twins = _kept_twins(work, records)
    write_manifest(work.root, [{k: getattr(r, k) for k in FIELDS} for r in records] + twins)
    work.errors.update(
        "index",
        {Path(m).stem for m in missing},
        {Path(m).stem: StageError("missing", f"listed but not on disk: {m}") for m in missing},
    )
    result = IndexResult(work.manifest, records, missing, shared)
    for w in result.warnings:
        log.warning("%s", w)
    return result


def _kept_twins(work: WorkDir, records: list[VideoRecord]) -> list[dict]:
    """The pseudo-fakes and perturbed copies of the manifest being replaced whose source is still
    indexed, moved to their source's group and split (a re-index must neither drop them nor split
    them off); a copy whose source left the train split goes (no copy of a val or test video)."""
    if not work.manifest.is_file():
        return []
    by_id = {r.video_id: r for r in records}
    kept, dropped = [], 0
    for row in read_manifest(work.root):
        if not is_derived(row):
            continue
        src = by_id.get(row.get("source", ""))
        if src is None or (src.label != 0 if is_pseudo(row) else src.split != "train"):
            dropped += 1
            continue
        kept.append({**row, "path": src.path, "dataset": src.dataset, "group": src.group, "split": src.split,
                     **({"label": src.label, "method": src.method} if is_copy(row) else {})})
    if dropped:
        log.warning("%d pseudo-fakes or copies dropped from the manifest: their source videos are no longer indexed "
                    "as real (twins) or for training (copies)", dropped)
    return kept


def write_manifest(workdir: str | Path, rows: list[dict]) -> Path:
    """Write ``WORKDIR/manifest.csv`` atomically; the ``source`` and ``augment`` columns only where
    pseudo-fakes or copies need them."""
    path = WorkDir(Path(workdir)).manifest
    fields = COPY_FIELDS if any(is_copy(r) for r in rows) else PSEUDO_FIELDS if any(is_pseudo(r) for r in rows) \
        else FIELDS
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in fields} for r in rows)
    return path


def split_hash(rows: Iterable[tuple[str, str, str]]) -> str:
    """A short hash of a split assignment: ``(video_id, group, split)`` of every video, in any order."""
    text = json.dumps(sorted(list(row) for row in rows))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def manifest_hash(workdir: str | Path) -> str:
    """:func:`split_hash` of ``WORKDIR/manifest.csv``: what runs and evaluations record. Pseudo-fakes
    are left out, and so are perturbed copies: they follow their source's split, so the videos' split fixes
    theirs, and adding twins (``tim synth``) or copies (``--augment``) does not make a detector's split
    look changed."""
    return split_hash((r["video_id"], r["group"], r["split"]) for r in read_manifest(workdir) if not is_derived(r))


def read_manifest(workdir: str | Path) -> list[dict[str, str]]:
    """Rows of ``WORKDIR/manifest.csv`` (``label`` as int); a clear error when it is absent."""
    path = WorkDir(Path(workdir)).manifest
    if not path.is_file():
        raise ConfigError(f"no manifest at {path}: run `tim index DATASET_ROOT -o {workdir}` first")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["label"] = int(row["label"])
    return rows


def select_rows(rows: list[dict], only: Sequence[str] | None = None, limit: int | None = None) -> list[dict]:
    """Manifest rows named by ``only`` (ids), then the first ``limit`` of them."""
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: give a number of videos, 1 or more")
    if only:
        wanted = set(only)
        unknown = wanted - {r["video_id"] for r in rows}
        if unknown:
            raise ConfigError(f"--only names videos not in the manifest: {sorted(unknown)[:5]}")
        rows = [r for r in rows if r["video_id"] in wanted]
    return rows[:limit] if limit is not None else rows
