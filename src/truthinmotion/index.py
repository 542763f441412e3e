"""Dataset adapters: a dataset root becomes ``WORKDIR/manifest.csv``, one row a video.

Columns: ``video_id, path, label (0 real, 1 fake), dataset, method, group, split``. ``group`` is a
connected component of shared source identities (FF++ ``A_B`` joins ``A`` and ``B``; a DFDC fake
joins its original; Celeb-DF ``idX``), and no split ever cuts a group: sharing identities between
train and test is the leakage that FaceForensics++ (Rössler et al., ICCV 2019) warns about.
Official split lists are used where a dataset has them; otherwise a seeded, group-aware split
stratified by label follows the ratios (default 0.7/0.2/0.1, as in the original study).
"""

from __future__ import annotations

import csv
import json
import logging
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .config import ConfigError, Settings, require
from .io import StageError, WorkDir, atomic_path

__all__ = [
    "FORMATS",
    "FFPP_METHODS",
    "IndexConfig",
    "IndexResult",
    "VideoRecord",
    "group_split",
    "index_dataset",
    "read_manifest",
    "select_rows",
]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
FFPP_METHODS = (
    "Deepfakes",
    "Face2Face",
    "FaceSwap",
    "NeuralTextures",
    "FaceShifter",
    "DeepFakeDetection",
)
SPLITS = ("train", "val", "test")
FIELDS = ("video_id", "path", "label", "dataset", "method", "group", "split")


@dataclass(frozen=True)
class IndexConfig(Settings):
    format: str = "folder"  # ffpp | dfdc | celebdf | folder | csv
    compression: str = "c23"  # FF++ compression level: raw (c0) | c23 | c40
    methods: tuple[str, ...] = FFPP_METHODS  # FF++ manipulation methods to include when present
    splits_dir: str | None = None  # FF++: directory holding the official train/val/test.json
    ratios: tuple[float, float, float] = (0.7, 0.2, 0.1)  # train/val/test where no official list
    seed: int = 0  # seed of the ratio split

    def check(self) -> None:
        require(self.format in FORMATS, f"format: {self.format!r} not one of {', '.join(FORMATS)}")
        require(self.compression in ("raw", "c23", "c40"), "compression: one of raw, c23, c40")
        bad = sorted(set(self.methods) - set(FFPP_METHODS))
        require(not bad, f"methods: unknown {bad}; allowed: {', '.join(FFPP_METHODS)}")
        require(
            len(self.ratios) == 3 and all(r >= 0 for r in self.ratios) and sum(self.ratios) > 0,
            "ratios: three non-negative numbers (train, val, test) with a positive sum",
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

    def summary(self) -> str:
        counts = Counter((r.split, r.label) for r in self.records)
        lines = [f"indexed {len(self.records)} videos into {self.manifest}"]
        for split in sorted({r.split for r in self.records}, key=_split_order):
            lines.append(
                f"  {split:<9} {counts[split, 0] + counts[split, 1]:>6} videos "
                f"({counts[split, 0]} real, {counts[split, 1]} fake)"
            )
        if self.missing:
            lines.append(f"  {len(self.missing)} listed but missing on disk (see errors.csv)")
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
            for pair in json.loads(path.read_text()):
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
        for name, info in sorted(json.loads(meta.read_text()).items()):
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
        official = {f"video:{vid}": "test" for vid in test_ids}
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
    return records, [], {}


_LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1}


def _csv(path: Path, cfg: IndexConfig) -> tuple[list[VideoRecord], list[str], dict[str, str]]:
    if not path.is_file():
        raise ConfigError(f"csv format expects a CSV file, got {path}")
    records, missing, official = [], [], {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"path", "label"} - set(reader.fieldnames or ())
        if need:
            raise ConfigError(f"{path}: missing column(s) {sorted(need)}; required: path,label")
        for n, row in enumerate(reader, start=2):
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
            group = row.get("group") or f"video:{vid}"
            method = row.get("method") or ("fake" if label else "real")
            records.append(VideoRecord(vid, str(video), label, path.stem, method, (f"group:{group}",)))
            if row.get("split"):
                require(row["split"] in SPLITS, f"{path}:{n}: split must be one of {SPLITS}")
                official[f"group:{group}"] = row["split"]
    return records, missing, official


FORMATS = {"ffpp": _ffpp, "dfdc": _dfdc, "celebdf": _celebdf, "folder": _folder, "csv": _csv}


# ---------------------------------------------------------------- groups and splits


def _components(records: list[VideoRecord]) -> dict[str, str]:
    """Union-find over identities: identity -> name of its group (smallest identity)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for r in records:
        for other in r.identities[1:]:
            a, b = find(r.identities[0]), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {x: find(x) for r in records for x in r.identities}


def group_split(
    groups: dict[str, tuple[int, int]], ratios: Iterable[float], seed: int
) -> dict[str, str]:
    """Assign whole groups to train/val/test, stratified by label.

    ``groups`` maps a group to its (real, fake) video counts. Groups are shuffled with ``seed``
    within strata (all-real, all-fake, mixed) and each goes to the split furthest below its
    target share of that stratum's videos, so sizes follow the ratios as closely as whole groups
    allow.
    """
    ratios = list(ratios)
    total = sum(ratios)
    shares = [r / total for r in ratios]
    rng = random.Random(seed)
    strata: dict[str, list[str]] = defaultdict(list)
    for g, (real, fake) in sorted(groups.items()):
        strata["mixed" if real and fake else ("fake" if fake else "real")].append(g)
    out: dict[str, str] = {}
    for name in sorted(strata):
        members = strata[name]
        rng.shuffle(members)
        # Larger groups first, so small ones fill the remaining gaps (stable after the shuffle).
        members.sort(key=lambda g: -sum(groups[g]))
        size = [0.0, 0.0, 0.0]
        stratum_total = sum(sum(groups[g]) for g in members)
        for g in members:
            n = sum(groups[g])
            deficits = [shares[i] * stratum_total - size[i] for i in range(3)]
            best = max((i for i in range(3) if shares[i] > 0), key=lambda i: deficits[i])
            out[g] = SPLITS[best]
            size[best] += n
    return out


def _assign(records: list[VideoRecord], official: dict[str, str], cfg: IndexConfig) -> None:
    comp = _components(records)
    for r in records:
        r.group = comp[r.identities[0]]
    members: dict[str, list[VideoRecord]] = defaultdict(list)
    for r in records:
        members[r.group].append(r)

    fixed: dict[str, str] = {}
    conflicts = 0
    for group, videos in members.items():
        keys = {x for v in videos for x in v.identities} | {f"video:{v.video_id}" for v in videos}
        found = {official[k] for k in keys if k in official}
        if len(found) == 1:
            fixed[group] = found.pop()
        elif len(found) > 1:
            # The official lists put identities of one group in different splits (Celeb-DF's
            # test list shares identities with its training videos): keep the group out of
            # training rather than leak it.
            fixed[group] = "test" if "test" in found else "val"
            conflicts += 1
    if conflicts:
        log.warning("%d groups span several official splits; assigned to test/val to avoid leakage", conflicts)
    free = {
        g: (sum(1 - v.label for v in vs), sum(v.label for v in vs))
        for g, vs in members.items()
        if g not in fixed
    }
    ratios = cfg.ratios
    if official and free:
        # Only train/val remain to fill where an official test list exists (Celeb-DF).
        official_splits = set(official.values())
        if official_splits == {"test"}:
            ratios = (cfg.ratios[0], cfg.ratios[1], 0.0)
        log.info("%d groups are not in the official lists; split by ratios %s", len(free), ratios)
    fixed.update(group_split(free, ratios, cfg.seed))
    for r in records:
        r.split = fixed[r.group]


# ---------------------------------------------------------------- entry points


def index_dataset(root: str | Path, workdir: str | Path, cfg: IndexConfig = IndexConfig()) -> IndexResult:
    """Index ``root`` (a dataset directory, or a CSV file for ``format='csv'``) into a manifest."""
    root = Path(root).resolve()
    if not root.exists():
        raise ConfigError(f"dataset root not found: {root}")
    work = WorkDir(Path(workdir))
    records, missing, official = FORMATS[cfg.format](root, cfg)
    dupes = [vid for vid, n in Counter(r.video_id for r in records).items() if n > 1]
    if dupes:
        raise ConfigError(f"duplicate video ids {dupes[:5]}: give each video a unique id")
    _assign(records, official, cfg)
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
    return IndexResult(work.manifest, records, missing)


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
