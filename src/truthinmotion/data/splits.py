"""Groups and splits: no identity on both sides of a split, sizes that follow the ratios.

A video's group joins every video that shares a source identity (union-find over the identities
each video shows). Where pairs chain identities into one huge component (Celeb-DF ``idA_idB``,
DeepFakeDetection ``A_B__scene``), a component of more than max(10, 2%) of the videos is cut back
to each video's target identity, and the identities that then span splits are counted. Official
lists fix their videos' (or identities') splits; the rest is split by ratios, whole groups at a
time, stratified by label.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter, defaultdict
from typing import Any, Iterable, Sequence

__all__ = ["SPLITS", "assign_splits", "group_split"]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def _components(records: Sequence[Any], cap: int) -> dict[str, str]:
    """Video id -> group: union-find over every identity of a video; a component of more than
    ``cap`` videos (a chain of pairs) is cut back to each video's target identity."""
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
    size = Counter(find(r.identities[0]) for r in records)
    out = {}
    for r in records:
        root = find(r.identities[0])
        out[r.video_id] = root if size[root] <= cap else r.identities[0]
    chained = sum(1 for n in size.values() if n > cap)
    if chained:
        log.warning("%d chains of paired identities hold more than %d videos each; cut back to target identities",
                    chained, cap)
    return out


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


def assign_splits(records: Sequence[Any], official: dict[str, str], ratios: tuple[float, float, float],
                  seed: int) -> int:
    """Set every record's ``group`` and ``split`` (records have ``video_id``, ``label`` and
    ``identities``, the target identity first); ``official`` maps ``video:<id>`` or an identity
    to its official split. Returns how many identities span several splits."""
    cap = max(10, math.ceil(0.02 * len(records)))
    comp = _components(records, cap)
    members: dict[str, list[Any]] = defaultdict(list)
    for r in records:
        r.group = comp[r.video_id]
        members[r.group].append(r)

    by_video = {r.video_id: official[f"video:{r.video_id}"] for r in records if f"video:{r.video_id}" in official}
    fixed: dict[str, str] = {}
    conflicts = []
    for group, videos in members.items():
        found = {official[x] for v in videos for x in v.identities if x in official}
        if len(found) == 1:
            fixed[group] = found.pop()
        elif len(found) > 1:
            # The official lists put identities of one group in different splits: keep the group
            # out of training rather than leak it.
            fixed[group] = "test" if "test" in found else "val"
            conflicts.append(f"{group} ({', '.join(sorted(found))} -> {fixed[group]})")
    if conflicts:
        log.warning("%d groups span several official splits and were moved to test/val: %s%s", len(conflicts),
                    "; ".join(conflicts[:5]), " ..." if len(conflicts) > 5 else "")
    free: dict[str, tuple[int, int]] = {}
    for g, vs in members.items():
        rest = [v for v in vs if v.video_id not in by_video]
        if g not in fixed and rest:
            free[g] = (sum(1 - v.label for v in rest), sum(v.label for v in rest))
    if official and free:
        if set(official.values()) == {"test"}:  # an official test list alone (Celeb-DF): fill train/val
            ratios = (ratios[0], ratios[1], 0.0)
        log.info("%d groups are not in the official lists; split by ratios %s", len(free), ratios)
    fixed.update(group_split(free, ratios, seed))
    for r in records:
        r.split = by_video.get(r.video_id) or fixed[r.group]
    spans: dict[str, set[str]] = defaultdict(set)
    for r in records:
        for x in r.identities:
            spans[x].add(r.split)
    return sum(1 for s in spans.values() if len(s) > 1)
