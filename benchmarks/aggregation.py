"""Video-level aggregation at DFDC's test split size: grouping by sort against a mask per item.

``metrics.video_level`` turns every scored point into a video's score; evaluate, training's
validation and ``tim benchmark`` call it. It used to build a boolean mask over every point for
each item (and for each video over the items), quadratic in videos; evaluate counted each video's
faces with a scan of every item per video. This times both, old and new, on a generated table of
5,000 videos x 32 points (float32 probabilities, as ``predict`` returns them; one face per video,
grouped by video id as evaluate does), checks that the scores are bit for bit the same, and prints
JSON with the ratio (old seconds / new seconds: how many times faster).

    python benchmarks/aggregation.py [--videos 5000] [--points 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from truthinmotion.core.metrics import AGGREGATIONS, video_level


def video_level_by_masks(probs: np.ndarray, videos: np.ndarray, labels: np.ndarray, how: str,
                         groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The implementation this replaces (a mask over every point per item)."""
    videos = np.asarray(videos)
    ids, first = np.unique(videos, return_index=True)
    order = np.argsort(first)
    ids, first = ids[order], first[order]
    scores = np.array([AGGREGATIONS[how](np.asarray(probs)[videos == v]) for v in ids])
    vlabels = np.asarray(labels)[first]
    if groups is None:
        return ids, scores, vlabels
    item_group = np.asarray(groups)[first]
    gids, gfirst = np.unique(item_group, return_index=True)
    gids = gids[np.argsort(gfirst)]
    return (gids, np.array([scores[item_group == g].max() for g in gids]),
            np.array([vlabels[item_group == g][0] for g in gids]))


def best_of(repeats: int, f: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = f()
        times.append(time.perf_counter() - t)
    return min(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=5000)
    ap.add_argument("--points", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    items = np.repeat(np.arange(args.videos), args.points)  # predict's order: a video's points together
    probs = rng.random(len(items)).astype(np.float32)
    labels = (items % 4 != 0).astype(int)  # one real to three fakes
    names = np.array([f"video{i:05d}" for i in range(args.videos)])
    groups = names[items]
    rows = []
    for how in AGGREGATIONS:
        old_s, old = best_of(args.repeats, lambda: video_level_by_masks(probs, items, labels, how, groups))
        new_s, new = best_of(args.repeats, lambda: video_level(probs, items, labels, how, groups))
        rows.append({"what": f"video_level {how}", "old_s": round(old_s, 4), "new_s": round(new_s, 4),
                     "ratio": round(old_s / new_s, 1),
                     "identical": all(a.tolist() == b.tolist() for a, b in zip(new, old))})
    # evaluate's faces per video: a scan of every item per video, against one count
    dataset = [SimpleNamespace(video_id=str(v)) for v in names]
    old_s, old = best_of(args.repeats, lambda: {v: sum(it.video_id == v for it in dataset) for v in names})
    new_s, new = best_of(args.repeats, lambda: Counter(it.video_id for it in dataset))
    rows.append({"what": "evaluate faces per video", "old_s": round(old_s, 4), "new_s": round(new_s, 4),
                 "ratio": round(old_s / new_s, 1), "identical": all(old[v] == new[v] for v in names)})
    print(json.dumps({"benchmark": "aggregation", "videos": args.videos, "points": args.points,
                      "repeats": f"best of {args.repeats}", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
