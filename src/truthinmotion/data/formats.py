"""Dataset formats: each adapter turns a dataset root into video records with their labels,
methods and source identities (FF++, DFDC, Celeb-DF, a folder of real/ and fake/ or of real videos
alone, a CSV). The groups and splits are made from those identities by :mod:`.index` and :mod:`.splits`.

To add a format: a function ``(root, cfg) -> (records, missing, official splits)`` and its name
in :data:`FORMATS` (``cfg`` is the :class:`~.index.IndexConfig`).
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.config import require
from .splits import SPLITS

__all__ = ["FFPP_METHODS", "FFPP_STANDARD", "FORMATS", "VIDEO_SUFFIXES", "VideoRecord"]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
FFPP_STANDARD = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")  # the four of FF++ papers
FFPP_METHODS = (*FFPP_STANDARD, "FaceShifter", "DeepFakeDetection")  # --methods all

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


def _videos(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


# ---------------------------------------------------------------- adapters


def _ffpp(root: Path, cfg: Any) -> tuple[list[VideoRecord], list[str], dict[str, str]]:
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


def _dfdc(root: Path, cfg: Any) -> tuple[list[VideoRecord], list[str], dict[str, str]]:
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


def _celebdf(root: Path, cfg: Any) -> tuple[list[VideoRecord], list[str], dict[str, str]]:
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


# Folders whose name says what their videos are: a folder of real videos alone holds none of them.
_LABELLED_FOLDERS = {"real", "reals", "fake", "fakes", "original_sequences", "manipulated_sequences",
                     "celeb-real", "celeb-synthesis", "youtube-real"}


def real_videos_alone(root: Path) -> bool:
    """Whether the folder format reads ``root`` as a folder of real videos (no real/ or fake/ in it)."""
    return not ((root / "real").is_dir() or (root / "fake").is_dir())


def _labelled_inside(root: Path, videos: list[Path]) -> str | None:
    """Why ``root``'s videos cannot all be real: a folder on their path named for a class or a
    dataset's layout, or a DFDC ``metadata.json`` anywhere below; None when nothing says so."""
    for p in videos:
        for folder in p.relative_to(root).parts[:-1]:
            if folder.lower() in _LABELLED_FOLDERS:
                return f"it holds a folder {folder!r} ({p.parent})"
    meta = next(root.rglob("metadata.json"), None)
    return f"it holds a DFDC-style {meta}" if meta else None


def _folder(root: Path, cfg: Any) -> tuple[list[VideoRecord], list[str], dict[str, str]]:
    records = []
    if real_videos_alone(root):
        videos = _videos(root)
        if not videos:
            raise ConfigError(f"no videos under {root} (a folder of real/ and fake/, or of real videos alone)")
        why = _labelled_inside(root, videos)
        if why:
            raise ConfigError(f"{root} has no real/ or fake/ folder, so the folder format would index every video "
                              f"under it as REAL, but {why}: put its videos in real/ and fake/, or give the "
                              f"dataset's --format (ffpp, dfdc, celebdf) or a CSV (--format csv)")
        for p in videos:
            vid = "real-" + "__".join(p.relative_to(root).with_suffix("").parts)
            records.append(VideoRecord(vid, str(p), 0, root.name, "real", (f"video:{vid}",)))
        log.warning("folder format: %s has no real/ or fake/ folder, so its %d videos are indexed as REAL; train "
                    "on them with --fakes pseudo (pseudo-fakes made from them), or put fakes in fake/",
                    root, len(records))
    else:
        for sub, label in (("real", 0), ("fake", 1)):
            for p in _videos(root / sub):
                rel = p.relative_to(root / sub)
                method = rel.parts[0] if len(rel.parts) > 1 else sub
                vid = f"{sub}-" + "__".join(rel.with_suffix("").parts)
                records.append(VideoRecord(vid, str(p), label, root.name, method, (f"video:{vid}",)))
        if not records:
            raise ConfigError(f"no videos under {root}/real or {root}/fake")
        beside = [p for p in _videos(root) if p.relative_to(root).parts[0] not in ("real", "fake")]
        if beside:
            log.warning("folder format: %d videos of %s are outside real/ and fake/ and are not indexed (%s%s)",
                        len(beside), root, beside[0].relative_to(root), ", ..." if len(beside) > 1 else "")
    log.warning("folder format: every video is its own group (a folder says nothing of who is in it), so "
                "videos of one person can be in train and test; for an identity-clean split give a CSV with a "
                "group column (--format csv)")
    return records, [], {}


_LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1}


def _csv(path: Path, cfg: Any) -> tuple[list[VideoRecord], list[str], dict[str, str]]:
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
