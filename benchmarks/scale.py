"""Videos per second by engine, on the same videos in one run.

- faces stage (``run_faces``, K=32): local with 1 worker (the baseline), local with 2 worker
  processes, and Ray with 2 CPUs (``--engine ray``, 2 actors);
- ``tim detect`` with small models (DINOv2-S on flow+depth, Depth Anything V2-S at 224, random
  weights: speed does not depend on them): one video at a time in one process (the baseline),
  batched across videos with CPU workers feeding the model stage (local, 2 workers), and the same
  on Ray with 2 CPUs; on ``--device cuda``, batched detect against one video at a time.

Videos: the shared FF++ and DFDC ones, each listed ``--repeat`` times for the faces stage (9 x 4
by default, so that starting workers is not most of the time), ``--detect-videos`` of them for
detect. Each configuration starts from nothing (its own work directory; process and Ray
start-up are counted, as a user would see them). The CPU cores the one-worker baseline already
keeps busy (FFmpeg decodes with threads, torch computes with threads) are printed too: on N
cores no engine can be faster than N / that. Prints JSON.

    python benchmarks/scale.py [--data ../shared/data] [--device cpu|cuda] [--repeat 4] [--detect-videos 4]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from detect import make_run  # noqa: E402 - the small random-weights detector of benchmarks/detect.py

from truthinmotion.inference.detect import detect  # noqa: E402
from truthinmotion.execution.engine import Engine  # noqa: E402
from truthinmotion.faces.config import FacesConfig
from truthinmotion.faces.stage import run_faces  # noqa: E402
from truthinmotion.data.index import IndexConfig, index_dataset  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def faces_rate(videos: list[Path], tmp: Path, name: str, workers: int, engine: Engine) -> tuple[float, float]:
    """(videos per second, CPU cores this process kept busy on average)."""
    root = tmp / f"data-{name}"
    (root / "real").mkdir(parents=True)
    for i, v in enumerate(videos):
        (root / "real" / f"{i}-{v.stem}.mp4").symlink_to(v.resolve())
    work = tmp / f"work-{name}"
    index_dataset(root, work, IndexConfig(format="folder", ratios=(1.0, 0.0, 0.0)))
    t, cpu = time.perf_counter(), time.process_time()
    report = run_faces(work, FacesConfig(), workers=workers, engine=engine, progress=False)
    seconds = time.perf_counter() - t
    assert report.processed == len(videos), report.summary()
    return len(videos) / seconds, (time.process_time() - cpu) / seconds


def detect_rate(videos: list[Path], run: Path, device: str, **kwargs) -> tuple[float, list]:
    t = time.perf_counter()
    verdicts = detect(videos, run, device=device, progress=False, **kwargs)
    return len(videos) / (time.perf_counter() - t), [v.probability for v in verdicts]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=4, help="times each video is listed for the faces stage (4)")
    ap.add_argument("--detect-videos", type=int, default=4)
    args = ap.parse_args()
    videos = sorted(Path(p) for p in glob.glob(str(args.data / "**" / "*.mp4"), recursive=True))
    if not videos:
        sys.exit(f"no videos under {args.data}")
    tmp = Path(tempfile.mkdtemp())
    ray = Engine("ray")
    out: dict = {"videos": len(videos), "device": args.device}
    if args.device == "cpu":
        listed = videos * args.repeat
        base, cores = faces_rate(listed, tmp, "l1", 1, Engine())
        faces = {"local-1": base, "local-2": faces_rate(listed, tmp, "l2", 2, Engine())[0],
                 "ray-2": faces_rate(listed, tmp, "r2", 2, ray)[0]}
        out["faces_videos"] = len(listed)
        out["faces_videos_per_s"] = {k: round(v, 3) for k, v in faces.items()}
        out["faces_ratio_vs_local_1"] = {k: round(v / base, 2) for k, v in faces.items()}
        out["faces_local_1_cores_busy"] = round(cores, 2)
        out["cores"] = os.cpu_count()
    run = make_run(tmp, "small-224")
    chosen = videos[: args.detect_videos]
    runs = {"one-at-a-time": dict(workers=1, batch_size=32)}  # 32 points: one video per model pass
    if args.device == "cpu":
        runs.update({"batched-local-2": dict(workers=2, batch_size=64), "batched-ray-2": dict(workers=2, batch_size=64,
                                                                                              engine=ray)})
    else:
        runs["batched"] = dict(workers=4, batch_size=128)
    rates, probs = {}, {}
    for name, kwargs in runs.items():
        rates[name], probs[name] = detect_rate(chosen, run, args.device, **kwargs)
    base = "one-at-a-time"
    out["detect_videos"] = len(chosen)
    out["detect_videos_per_s"] = {k: round(v, 3) for k, v in rates.items()}
    out["detect_ratio_vs_one_at_a_time"] = {k: round(v / rates[base], 2) for k, v in rates.items()}
    out["detect_max_probability_difference"] = {
        k: max(abs(a - b) for a, b in zip(p, probs[base]) if a is not None and b is not None) for k, p in probs.items()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
