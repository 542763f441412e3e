"""Dataset adapters: a dataset root becomes ``WORKDIR/manifest.csv``, one row a video.

Columns: ``video_id, path, label (0 real, 1 fake), dataset, method, group, split``. ``group`` is a
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
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..core.errors import ConfigError
from ..core.config import Settings, require
from ..core.errors import StageError
from ..core.io import WorkDir, atomic_path, check_video_id
from .splits import SPLITS, assign_splits, group_split

__all__ = [
    "FORMATS",
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
]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
FFPP_STANDARD = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")  # the four of FF++ papers
FFPP_METHODS = (*FFPP_STANDARD, "FaceShifter", "DeepFakeDetection")  # --methods all
FIELDS = ("video_id", "path", "label", "dataset", "method", "group", "split")


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
class VideoRecord:
    video_id: str
    path: str
    label: int
    dataset: str
    method: str
    identities: tuple[str, ...]  # source identities; videos sharing one share a group
    split: str = ""
    group: str = ""


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
                           f"{'tim train needs both classes in train and val' if split != 'test' else 'test metrics need both classes'}")
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


def _videos(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


# ---------------------------------------------------------------- adapters


def _ffpp(root: Path, cfg: IndexConfig) -> tuple[list[VideoRecord], list[str], dict[str, str]]:
    records: list[VideoRecord] = []
    for source in ("youtube", "actors"):
        for p in _videos(root / "original_sequences" / source / cfg.compression / "videos"):
            if source == "youtube":
                ids: tuple[str, ...] = (f"yt:{p.stem}",)
            else:  # DeepFakeDetection originals: "01__exit_phone_room"
                ids = (f"actor:{p.stem.split('__')[0]}",)
            method = "original" if source == "youtube" else "original_actors"
            records.append(VideoRecord(f"{method}-{p.stem}", str(p), 0, "ffpp", method, ids))
    for method in cfg.methods:
        for p in _videos(root / "manipulated_sequences" / method / cfg.compression / "videos"):
            if method == "DeepFakeDetection":  # "01_02__exit_phone_room__YVGY8LOK"
                ids = tuple(f"actor:{a}" for a in p.stem.split("__")[0].split("_"))
            else:  # "519_515": target 519 with the face of 515
                ids = tuple(f"yt:{a}" for a in p.stem.split("_")[:2])
            records.append(VideoRecord(f"{method}-{p.stem}", str(p), 1, "ffpp", method, ids))
    if not records:
        raise ConfigError(
            f"no FaceForensics++ videos under {root} for compression {cfg.compression}: expected "
            "original_sequences/youtube/<c>/videos and manipulated_sequences/<Method>/<c>/videos"
        )
    official: dict[str, str] = {}
    if cfg.splits_dir:
        for split in SPLITS:
            path = Path(cfg.splits_dir) / f"{split}.json"
            if not path.is_file():
                raise ConfigError(f"official split file missing: {path}")
            pairs = _read_json(path, "an FF++ split file")
            if not isinstance(pairs, list) or not all(isinstance(p, list) and all(isinstance(v, str) for v in p)
                                                      for p in pairs):
                raise ConfigError(f"{path}: expected a list of id pairs like [[\"953\", \"974\"], ...]")
            for pair in pairs:
                for vid in pair:
                    official[f"yt:{vid}"] = split
    return records, [], official


def _dfdc(root: Path, cfg: IndexConfig) -> tuple[list[VideoRecord], list[str], dict[str, str]]:
    metas = sorted(root.glob("**/metadata.json"))
    if not metas:
        raise ConfigError(f"no DFDC metadata.json under {root} (expected dfdc_train_part_*/metadata.json)")
    records, missing = [], []
    for meta in metas:
        part = meta.parent
        listing = _read_json(meta, "DFDC metadata")
        if not isinstance(listing, dict) or not all(isinstance(v, dict) for v in listing.values()):
            raise ConfigError(f"{meta}: expected {{\"name.mp4\": {{\"label\": \"FAKE\", ...}}, ...}}")
        for name, info in sorted(listing.items()):
            path = part / name
            if not path.is_file():
                missing.append(str(path))
                log.warning("DFDC: %s is listed in %s but missing on disk; skipped", name, meta)
                continue
            fake = str(info.get("label", "")).upper() == "FAKE"
            ids = (f"dfdc:{Path(name).stem}",)
            if fake and info.get("original"):
                ids += (f"dfdc:{Path(info['original']).stem}",)
            method = "dfdc" if fake else "real"
            records.append(VideoRecord(Path(name).stem, str(path), int(fake), "dfdc", method, ids))
    originals = {r.identities[0] for r in records if not r.label}
    alone = sum(1 for r in records if r.label and (len(r.identities) == 1 or r.identities[1] not in originals))
    log.warning("DFDC: a fake joins the group of its original, but the metadata names no actor: the originals "
                "of one actor (DFDC filmed each in several clips) and their fakes cannot be joined, so one "
                "person can be in train and test. For an identity-clean split give a CSV with a group column")
    if alone:
        log.warning("DFDC: %d of %d fakes have no original among the indexed videos (none listed, or not on disk); "
                    "they are grouped only with fakes of the same original", alone, sum(r.label for r in records))
    return records, missing, {}


_CELEB_ID = re.compile(r"id\d+")


def _celebdf(root: Path, cfg: IndexConfig) -> tuple[list[VideoRecord], list[str], dict[str, str]]:
    records = []
    for sub, label in (("Celeb-real", 0), ("YouTube-real", 0), ("Celeb-synthesis", 1)):
        for p in _videos(root / sub):
            ids = tuple(f"celeb:{i}" for i in _CELEB_ID.findall(p.stem)) or (f"yt:{p.stem}",)
            records.append(VideoRecord(f"{sub}-{p.stem}", str(p), label, "celebdf", sub, ids))
    if not records:
        raise ConfigError(f"no Celeb-DF videos under {root} (expected Celeb-real/, Celeb-synthesis/)")
    official: dict[str, str] = {}
    listing = root / "List_of_testing_videos.txt"
    if listing.is_file():
        test_ids = set()
        for line in listing.read_text().splitlines():
            if line.strip():
                sub, _, name = line.split()[-1].partition("/")
                test_ids.add(f"{sub}-{Path(name).stem}")
        official = {f"video:{vid}": "test" for vid in test_ids}  # video by video, as listed
    return records, [], official


def _folder(root: Path, cfg: IndexConfig) -> tuple[list[VideoRecord], list[str], dict[str, str]]:
    records = []
    for sub, label in (("real", 0), ("fake", 1)):
        for p in _videos(root / sub):
            rel = p.relative_to(root / sub)
            method = rel.parts[0] if len(rel.parts) > 1 else sub
            vid = f"{sub}-" + "__".join(rel.with_suffix("").parts)
            records.append(VideoRecord(vid, str(p), label, root.name, method, (f"video:{vid}",)))
    if not records:
        raise ConfigError(f"no videos under {root}/real or {root}/fake")
    log.warning("folder format: every video is its own group (a folder says nothing of who is in it), so "
                "videos of one person can be in train and test; for an identity-clean split give a CSV with a "
                "group column (--format csv)")
    return records, [], {}


_LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1}


def _csv(path: Path, cfg: IndexConfig) -> tuple[list[VideoRecord], list[str], dict[str, str]]:
    if not path.is_file():
        raise ConfigError(f"csv format expects a CSV file, got {path}")
    records, missing, official = [], [], {}
    listed = ungrouped = 0
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's BOM is no header
        reader = csv.DictReader(f)
        need = {"path", "label"} - set(reader.fieldnames or ())
        if need:
            raise ConfigError(f"{path}: missing column(s) {sorted(need)}; required: path,label")
        for n, row in enumerate(reader, start=2):
            listed += 1
            video = Path(row["path"])
            video = video if video.is_absolute() else path.parent / video
            label = _LABELS.get(str(row["label"]).strip().lower())
            if label is None:
                raise ConfigError(f"{path}:{n}: label {row['label']!r} is not one of 0, 1, real, fake")
            if not video.is_file():
                missing.append(str(video))
                log.warning("%s:%d: %s is missing on disk; skipped", path, n, video)
                continue
            vid = row.get("video_id") or video.stem
            ungrouped += not row.get("group")
            group = row.get("group") or f"video:{vid}"
            method = row.get("method") or ("fake" if label else "real")
            records.append(VideoRecord(vid, str(video), label, path.stem, method, (f"group:{group}",)))
            if row.get("split"):
                require(row["split"] in SPLITS, f"{path}:{n}: split must be one of {SPLITS}")
                before = official.setdefault(f"group:{group}", row["split"])
                require(before == row["split"], f"{path}:{n}: group {group!r} is in split {before!r} on an "
                                                f"earlier row and {row['split']!r} here; a group has one split")
    if not listed:
        raise ConfigError(f"{path} lists no videos (only a header)")
    if ungrouped:
        log.warning("%s: %d of %d videos have no group (%s), so each is its own group and videos of one person "
                    "can be in train and test; name the person (or source) of every video in a group column",
                    path, ungrouped, len(records),
                    "no group column" if "group" not in (reader.fieldnames or ()) else "empty group cells")
    return records, missing, official


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON ({what}): {err}") from None


FORMATS = {"ffpp": _ffpp, "dfdc": _dfdc, "celebdf": _celebdf, "folder": _folder, "csv": _csv}


# ---------------------------------------------------------------- entry points


def index_dataset(root: str | Path, workdir: str | Path, cfg: IndexConfig = IndexConfig()) -> IndexResult:
    """Index ``root`` (a dataset directory, or a CSV file for ``format='csv'``) into a manifest."""
    root = Path(root).resolve()
    if not root.exists():
        raise ConfigError(f"dataset root not found: {root}")
    work = WorkDir(Path(workdir))
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
    with atomic_path(work.manifest) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            for r in records:
                writer.writerow({k: getattr(r, k) for k in FIELDS})
    work.errors.update(
        "index",
        {Path(m).stem for m in missing},
        {Path(m).stem: StageError("missing", f"listed but not on disk: {m}") for m in missing},
    )
    result = IndexResult(work.manifest, records, missing, shared)
    for w in result.warnings:
        log.warning("%s", w)
    return result


def split_hash(rows: Iterable[tuple[str, str, str]]) -> str:
    """A short hash of a split assignment: ``(video_id, group, split)`` of every video, in any order."""
    text = json.dumps(sorted(list(row) for row in rows))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def manifest_hash(workdir: str | Path) -> str:
    """:func:`split_hash` of ``WORKDIR/manifest.csv``: what runs and evaluations record."""
    return split_hash((r["video_id"], r["group"], r["split"]) for r in read_manifest(workdir))


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
