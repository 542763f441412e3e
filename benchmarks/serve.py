"""Videos per minute through `tim serve`'s API against `tim detect` on the same videos, same run.

A detector of DINOv2-small and Depth Anything V2 small at input 224 (random weights: speed does
not depend on them; the `small-224` setup of benchmarks/detect.py) scores the shared videos:

  detect         Scorer in this process, the verdict alone (`tim detect`)
  detect+report  the same with the evidence page written (`tim detect --report`): the work a job does
  serve          every video uploaded to a running `tim serve` (one worker) at once, then polled
                 until done: upload, probe, queue, scoring with its page, SQLite

Models are loaded before the clock starts on both sides. Prints JSON with videos per minute
and the service's time over detect+report.

    python benchmarks/serve.py [--data ../shared/data] [--repeat 2]
"""

from __future__ import annotations

import argparse
import glob
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect import make_run  # noqa: E402 - the same small-224 detector as benchmarks/detect.py

from truthinmotion.inference.scorer import Scorer  # noqa: E402
from truthinmotion.reports.page import write_report  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _upload(url: str, path: str) -> str:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{Path(path).name}\"\r\n\r\n"
            ).encode() + Path(path).read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "/api/v1/jobs", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["id"]


def _status(url: str, job: str) -> str:
    with urllib.request.urlopen(f"{url}/api/v1/jobs/{job}", timeout=60) as r:
        return json.loads(r.read())["status"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--repeat", type=int, default=1, help="each video this many times")
    args = ap.parse_args()
    videos = sorted(glob.glob(f"{args.data}/**/*.mp4", recursive=True)) * args.repeat
    if not videos:
        raise SystemExit(f"no videos under {args.data}")
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp), "small-224")
        scorer = Scorer(run)
        scorer(videos[0])  # warm-up
        t = time.perf_counter()
        for v in videos:
            scorer(v)
        detect_s = time.perf_counter() - t
        t = time.perf_counter()
        for i, v in enumerate(videos):
            verdict, evidence = scorer.score(v, evidence=4)
            write_report(verdict, evidence, scorer.model_info, Path(tmp) / f"{i}.html")
        report_s = time.perf_counter() - t
        del scorer
        port = _port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "truthinmotion", "serve", "--model", str(run), "--port",
                                   str(port), "--data-dir", f"{tmp}/serve", "--queue", str(len(videos) + 1)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(url + "/healthz", timeout=2)
                    break
                except OSError:
                    time.sleep(0.3)
            job = _upload(url, videos[0])  # warm-up, as for detect
            while _status(url, job) not in ("done", "failed"):
                time.sleep(0.2)
            t = time.perf_counter()
            jobs = [_upload(url, v) for v in videos]
            pending = set(jobs)
            while pending:
                pending = {j for j in pending if _status(url, j) not in ("done", "failed")}
                time.sleep(0.1)
            serve_s = time.perf_counter() - t
        finally:
            server.terminate()
            server.wait(timeout=30)
    n = len(videos)
    print(json.dumps({
        "benchmark": "serve", "videos": n, "detector": "small-224 (random weights)",
        "videos_per_minute": {"detect": round(60 * n / detect_s, 2), "detect+report": round(60 * n / report_s, 2),
                              "serve": round(60 * n / serve_s, 2)},
        "serve_over_detect_report": round(serve_s / report_s - 1, 3),
        "serve_over_detect": round(serve_s / detect_s - 1, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
