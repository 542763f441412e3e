"""tim serve through a real uvicorn server on 127.0.0.1: the API, its limits, restarts."""

from __future__ import annotations

import io
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="tim serve needs the serve extra (make test installs it)")

from conftest import FFPP, need_shared  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    url: str
    headers: dict[str, str] = {}  # sent with every request (a token's)

    def get(self, path: str, timeout: float = 60) -> tuple[int, dict | str]:
        return _call(urllib.request.Request(self.url + path, headers=self.headers), timeout)

    def delete(self, path: str) -> tuple[int, dict | str]:
        return _call(urllib.request.Request(self.url + path, method="DELETE", headers=self.headers))

    def upload(self, data: bytes, name: str = "video.mp4", **fields: str) -> tuple[int, dict, dict]:
        boundary = uuid.uuid4().hex
        body = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                       for k, v in fields.items()).encode()
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(self.url + "/api/v1/jobs", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}", **self.headers})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read()), {k.lower(): v for k, v in r.headers.items()}
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read()), {k.lower(): v for k, v in err.headers.items()}

    def wait(self, job_id: str, timeout: float = 120) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            code, job = self.get(f"/api/v1/jobs/{job_id}")
            assert code == 200
            if job["status"] in ("done", "failed"):
                return job
            time.sleep(0.3)
        raise TimeoutError(job_id)


class Server(Client):
    """``tim serve`` in a process of its own."""

    def __init__(self, run_dir: Path, data_dir: Path, *args: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "truthinmotion", "serve", "--model", str(run_dir), "--port", str(self.port),
               "--data-dir", str(data_dir), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("the server did not start: " + self.proc.stderr.read()[-2000:])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _call(req: urllib.request.Request, timeout: float = 60) -> tuple[int, dict | str]:
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            return r.status, json.loads(text) if r.headers.get_content_type() == "application/json" else text
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def server(run_dir, tmp_path):
    s = Server(run_dir, tmp_path / "data", "--queue", "8")
    yield s
    s.stop()


def test_a_video_gets_the_verdict_of_tim_detect(server, run_dir):
    need_shared()
    from truthinmotion.inference.scorer import Scorer

    video = FFPP / "original_sequences/youtube/c23/videos/004.mp4"
    code, job, _ = server.upload(video.read_bytes(), "004.mp4")
    assert code == 202 and job["status"] == "queued"
    done = server.wait(job["id"])
    verdict = done["verdict"]
    assert done["status"] == "done" and verdict["status"] == "ok" and verdict["video"] == "004.mp4"
    assert abs(verdict["probability"] - Scorer(run_dir)(video).probability) <= 1e-4
    code, page = server.get(f"/api/v1/jobs/{job['id']}/report")
    assert code == 200 and "Probability that a face was manipulated" in page
    code, model = server.get("/api/v1/model")
    assert code == 200 and model["detector"]["backbone"] == "dinov2-tiny"
    # the upload is gone after scoring; the job can be deleted
    assert not list((Path(server.proc.args[server.proc.args.index("--data-dir") + 1]) / "uploads").iterdir())
    req = urllib.request.Request(server.url + f"/api/v1/jobs/{job['id']}", method="DELETE")
    assert _call(req)[0] == 200 and server.get(f"/api/v1/jobs/{job['id']}")[0] == 404


def _bogus_rate_video(path: Path, frames: int) -> Path:
    """A clip whose container says 5,000 frames a second (OpenCV writes the rate it is given)."""
    import cv2

    from truthinmotion.media.clips import write_video

    ramp = np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None]
    clip = np.stack([np.broadcast_to(np.roll(ramp, i, axis=1), (64, 64, 3)) for i in range(frames)])
    write_video(path, clip, fps=5000)
    assert cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FPS) == 5000
    return path


def test_bad_uploads_get_their_status_and_the_server_goes_on(run_dir, tmp_path, clips, faceless):
    import requests

    server = Server(run_dir, tmp_path / "data", "--max-upload-mb", "0.2", "--max-seconds", "1.0",
                    "--token", "s3cret")
    try:
        # a token set: every API call without it is refused; health and the page stay open
        code, body = server.get("/api/v1/model")
        assert code == 401 and body["error"] == "unauthorized"
        assert server.get("/healthz")[0] == 200
        server.headers = {"Authorization": "Bearer s3cret"}
        assert server.get("/api/v1/model")[0] == 200
        huge = np.random.default_rng(0).bytes(24 * 2**20)
        cases = {
            "text named .mp4": (b"this is not a video\n" * 10, 415, "not_a_video"),
            "zero bytes": (b"", 415, "not_a_video"),
            "truncated": (clips["fake"].read_bytes()[:2000], 415, "not_a_video"),
            "oversize": (np.random.default_rng(0).bytes(300_000), 413, "too_large"),
            # urllib sends all of it before reading, with Connection: close: the 413 must still reach it
            "far oversize": (huge, 413, "too_large"),
            "too long": (clips["fake"].read_bytes(), 422, "too_long"),  # 30 frames at 25 fps: 1.2 s
            # 60 frames whose header rate (5,000/s) would make them 0.012 s long
            "bogus frame rate": (_bogus_rate_video(tmp_path / "fast.mp4", 60).read_bytes(), 422, "too_long"),
        }
        for name, (data, code, err) in cases.items():
            got, body, _ = server.upload(data)
            assert (got, body["error"]) == (code, err), name
            assert body["detail"], name
        answer = requests.post(server.url + "/api/v1/jobs", files={"file": ("big.mp4", huge)}, timeout=120,
                               headers=server.headers)
        assert answer.status_code == 413 and answer.json()["error"] == "too_large"
        assert not list((tmp_path / "data" / "uploads").iterdir())
        # a readable video without a face is accepted and finishes with the verdict's status
        code, job, _ = server.upload(faceless.read_bytes(), "noface.mp4")
        assert code == 202
        done = server.wait(job["id"])
        assert done["status"] == "done" and done["verdict"]["status"] == "no_face"
        assert server.get("/healthz") == (200, {"status": "ok", "workers": 1})
        assert server.get("/api/v1/jobs/nope")[1]["error"] == "not_found"
    finally:
        server.stop()


def test_a_full_queue_answers_503_and_accepted_jobs_finish(run_dir, tmp_path, clips):
    server = Server(run_dir, tmp_path / "data", "--queue", "2")
    try:
        data = clips["fake"].read_bytes()
        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(lambda _: server.upload(data), range(10)))
        accepted = [body["id"] for code, body, _ in results if code == 202]
        refused = [(body, headers) for code, body, headers in results if code == 503]
        assert len(accepted) + len(refused) == 10 and 1 <= len(accepted) <= 4 and refused
        assert all(b["error"] == "queue_full" and h.get("retry-after") for b, h in refused)
        assert all(server.wait(j)["verdict"]["status"] == "ok" for j in accepted)
    finally:
        server.stop()


def test_jobs_queued_when_the_server_stops_finish_after_a_restart(run_dir, tmp_path, clips):
    data_dir = tmp_path / "data"
    server = Server(run_dir, data_dir)
    ids = [server.upload(clips["fake"].read_bytes())[1]["id"] for _ in range(4)]
    server.stop()
    with sqlite3.connect(data_dir / "jobs.sqlite") as db:
        statuses = dict(db.execute("SELECT id, status FROM jobs").fetchall())
    assert set(statuses) == set(ids) and any(s in ("queued", "running") for s in statuses.values()), statuses
    # what a crash mid-upload or mid-delete leaves: files no job holds
    pending = next(j for j, s in statuses.items() if s in ("queued", "running"))
    strays = [data_dir / "uploads" / "0123456789abcdef01234567.video", data_dir / "reports" / "feedface.html",
              data_dir / "reports" / f"{pending}.html"]  # a page of a job that is not done
    for p in strays:
        p.write_bytes(b"left behind")
    again = Server(run_dir, data_dir)
    try:
        assert not any(p.exists() for p in strays)
        assert all(again.wait(j)["verdict"]["status"] == "ok" for j in ids)
    finally:
        again.stop()


class Live(Client):
    """``create_app`` in this process, served by uvicorn in a thread, so a test reaches the
    service inside: its hooks, its clock, its job store."""

    def __init__(self, scorer, data_dir: Path, clock=time.time, scorers=None, **settings):
        import uvicorn

        from truthinmotion.apps.serve import ServeConfig, create_app

        cfg = ServeConfig(model="unused: the scorer is given", data_dir=data_dir, **settings)
        self.app = create_app(cfg, scorers if scorers is not None else [scorer], clock)
        self.service = self.app.state.service
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=int(self.url.rsplit(":", 1)[1]),
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.service.close()
        for w in self.service.workers:  # the next test's service scores with the same models
            w.thread.join(60)


@pytest.fixture(scope="module")
def scorer(run_dir):
    from truthinmotion.inference.scorer import Scorer

    return Scorer(run_dir)


@pytest.fixture
def live(scorer, tmp_path):
    started: list[Live] = []

    def start(scorers=None, **settings) -> Live:
        started.append(Live(scorer, tmp_path / f"data{len(started)}", scorers=scorers, **settings))
        return started[-1]

    yield start
    for s in started:
        s.stop()


def _until(condition, timeout: float = 60, what: str = "") -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.05)


def _rows(service) -> dict[str, str]:
    with sqlite3.connect(service.jobs.path) as db:
        return dict(db.execute("SELECT id, status FROM jobs").fetchall())


def test_a_job_deleted_while_it_is_scored_leaves_nothing_behind(live, clips):
    """The worker is held between its claim and its scoring; the client deletes the job then. The
    page the worker writes afterwards must not outlive the delete."""
    server = live(keep_uploads=True)
    claimed, release = threading.Event(), threading.Event()
    server.service.after_claim = lambda job: (claimed.set(), release.wait(60))
    code, job, _ = server.upload(clips["fake"].read_bytes())
    assert code == 202 and claimed.wait(60)
    assert server.delete(f"/api/v1/jobs/{job['id']}") == (202, {"id": job["id"], "status": "deleting"})
    assert server.get(f"/api/v1/jobs/{job['id']}")[0] == 404  # gone for the client at once
    assert server.delete(f"/api/v1/jobs/{job['id']}")[0] == 404
    release.set()
    _until(lambda: server.service.workers[0].job is None, what="the worker to finish the deleted job")
    assert not _rows(server.service) and server.service.workers[0].thread.is_alive()
    assert not list(server.service.reports.iterdir()) and not list(server.service.uploads.iterdir())
    # a job that is done is deleted at once, with its page
    code, job, _ = server.upload(clips["fake"].read_bytes())
    assert server.wait(job["id"])["status"] == "done" and server.service.report(job["id"]).is_file()
    assert server.delete(f"/api/v1/jobs/{job['id']}") == (200, {"id": job["id"], "status": "deleted"})
    assert not list(server.service.reports.iterdir()) and not list(server.service.uploads.iterdir())


def test_an_upload_that_stops_midway_leaves_no_file(live, monkeypatch):
    server = live()
    uploads = server.service.uploads
    head = (b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"v.mp4\"\r\n\r\n"
            + bytes(256 * 1024))
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as client:
        client.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n"
                       b"Content-Type: multipart/form-data; boundary=b0undary\r\n\r\n" + head)
        _until(lambda: any(p.stat().st_size > 0 for p in uploads.iterdir()), 30, "the upload to start")
    _until(lambda: not list(uploads.iterdir()), 30, "the partial upload to be removed after the disconnect")
    # the disk fills up while an upload is written
    import truthinmotion.apps.serve.uploads as receiving

    class Full(io.BufferedWriter):
        def write(self, data):
            super().write(data)
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(receiving.os, "fdopen", lambda fd, mode: Full(io.FileIO(fd, "w")))
    code, body, _ = server.upload(bytes(100_000))
    assert (code, body["error"]) == (500, "storage") and "No space left" in body["detail"]
    assert not list(uploads.iterdir())


def test_a_slow_probe_leaves_the_service_answering(live, clips, monkeypatch):
    """Probing decodes (WebM without a frame count: every frame); while it runs, other requests
    are answered."""
    import truthinmotion.apps.serve.uploads as receiving

    server = live()
    entered, release = threading.Event(), threading.Event()
    real = receiving.probe

    def slow_probe(path):
        entered.set()
        release.wait(60)
        return real(path)

    monkeypatch.setattr(receiving, "probe", slow_probe)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(server.upload, clips["fake"].read_bytes())
        assert entered.wait(60)
        try:
            assert server.get("/healthz", timeout=10) == (200, {"status": "ok", "workers": 1})
        finally:
            release.set()
        assert pending.result()[0] == 202


def test_a_worker_that_stops_is_reported_and_its_job_failed(live, clips):
    """A failure outside the scoring (the job store) stops a worker: health says which and why,
    and its job is failed, not left running."""
    server = live()
    calls = []

    def full_disk(*args, **kwargs):
        calls.append(args)
        raise OSError(28, "database or disk is full")

    server.service.jobs.finish = full_disk
    code, job, _ = server.upload(clips["fake"].read_bytes())
    _until(lambda: server.get("/healthz")[0] == 503, what="health to report the stopped worker")
    code, health = server.get("/healthz")
    assert health["status"] == "failing" and health["workers"] == 0 and calls
    assert health["stopped"] == [{"thread": "scorer-0", "error": "OSError: [Errno 28] database or disk is full"}]
    done = server.wait(job["id"], timeout=10)
    assert done["status"] == "failed" and "worker scoring it stopped" in done["error"]
    assert not list(server.service.reports.iterdir()) and not list(server.service.uploads.iterdir())
    # claim fails: the worker stops before it holds a job
    other = live()
    other.service.jobs.claim = lambda: 1 / 0
    _until(lambda: other.get("/healthz")[0] == 503, what="health to report the stopped worker")
    assert other.get("/healthz")[1]["stopped"][0]["error"] == "ZeroDivisionError: division by zero"


def test_files_are_private_and_expire_after_keep_hours(live, clips, run_dir):
    now = [1_000_000.0]
    server = live(clock=lambda: now[0], keep_uploads=True, keep_hours=2.0, sweep_seconds=0.05)
    code, model = server.get("/api/v1/model")
    paths = [v for v in _strings(model) if "/" in v and Path(v).is_absolute()]
    assert code == 200 and not paths and model["features"]["depth"]["model"] == "da-tiny"
    code, job, _ = server.upload(clips["fake"].read_bytes())
    assert server.wait(job["id"])["status"] == "done"
    files = [server.service.upload(job["id"]), server.service.report(job["id"]), server.service.jobs.path]
    assert [f.stat().st_mode & 0o777 for f in files] == [0o600] * 3
    now[0] += 2 * 3600 - 1  # not yet
    server.service.sweep()
    assert server.get(f"/api/v1/jobs/{job['id']}")[0] == 200 and all(f.exists() for f in files)
    now[0] += 2  # the janitor finds it within a few of its rounds
    _until(lambda: not _rows(server.service), 10, "the janitor to remove the expired job")
    assert server.get(f"/api/v1/jobs/{job['id']}")[0] == 404 and not any(f.exists() for f in files[:2])


def _strings(tree):
    if isinstance(tree, dict):
        return [s for v in tree.values() for s in _strings(v)]
    if isinstance(tree, list):
        return [s for v in tree for s in _strings(v)]
    return [tree] if isinstance(tree, str) else []


class _Chromium:
    """Headless Chromium driven through the DevTools protocol over a pipe (no websocket library)."""

    def __init__(self, exe: str, profile: Path):
        import os

        self.r_chrome, self.w_ours = os.pipe()  # we write, Chromium reads (its fd 3)
        self.r_ours, self.w_chrome = os.pipe()  # Chromium writes (its fd 4), we read
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "about:blank"],
            close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: (os.dup2(self.r_chrome, 3), os.dup2(self.w_chrome, 4)))
        os.close(self.r_chrome)
        os.close(self.w_chrome)
        self.next_id, self.buffer, self.session = 0, b"", None

    def send(self, method: str, **params) -> dict:
        import os

        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self.w_ours, json.dumps(msg).encode() + b"\0")
        import select

        while True:
            while b"\0" not in self.buffer:
                if not select.select([self.r_ours], [], [], 30)[0]:
                    raise TimeoutError(f"Chromium did not answer {method}")
                chunk = os.read(self.r_ours, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def test_the_page_uploads_a_video_and_shows_the_verdict(run_dir, tmp_path):
    """Headless Chromium opens /, a shared video is chosen in the page's file input, the page
    uploads it, polls the job and shows the verdict, which equals the API's."""
    import shutil

    need_shared()
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium package when it can)")
    server = Server(run_dir, tmp_path / "data")
    browser = _Chromium(exe, tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", url=server.url + "/")["targetId"]
        browser.session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        deadline = time.time() + 30
        while not browser.evaluate("document.readyState === 'complete' && !!document.getElementById('file')"):
            assert time.time() < deadline, "the page did not load"
            time.sleep(0.2)
        root = browser.send("DOM.getDocument")["root"]["nodeId"]
        node = browser.send("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
        video = FFPP / "original_sequences/youtube/c23/videos/004.mp4"
        browser.send("DOM.setFileInputFiles", files=[str(video)], nodeId=node)
        browser.evaluate("document.getElementById('send').click()")
        deadline, shown = time.time() + 120, None
        while shown is None and time.time() < deadline:
            time.sleep(0.5)
            shown = browser.evaluate("(document.getElementById('probability') || {}).textContent || null")
        assert shown is not None, browser.evaluate("document.body.innerText")
        label = browser.evaluate("document.getElementById('label').textContent")
        job_id = browser.evaluate("document.getElementById('status').textContent").split()[1].rstrip(":")
        verdict = server.get(f"/api/v1/jobs/{job_id}")[1]["verdict"]
        assert shown == f"{verdict['probability']:.3f}" and label == verdict["label"]
        assert browser.evaluate("document.getElementById('report').hidden") is False
    finally:
        browser.close()
        server.stop()


def test_two_detectors_each_job_scored_by_the_one_it_names_and_metrics_follow(live, scorer, run_dir, clips, tmp_path,
                                                                             caplog):
    """Two detectors (the shared one, and a copy whose head says "fake" more: other probabilities);
    each job is scored by the detector its model field names, an unknown name is refused, /metrics
    counts the verdicts per detector, and the access log has a JSON line per request, no token."""
    import logging

    import torch
    from prometheus_client.parser import text_string_to_metric_families

    from truthinmotion.inference.scorer import Scorer
    from truthinmotion.models.detector import Detector

    other = Detector.from_pretrained(run_dir)
    with torch.no_grad():
        for head in other.heads.values():
            head[-1].bias += 3.0
    other_scorer = Scorer(other.save_pretrained(tmp_path / "other"))
    caplog.set_level(logging.INFO, logger="truthinmotion.serve.access")
    server = live(scorers={"main": [scorer], "other": [other_scorer]}, token="s3cret-token")
    server.headers = {"Authorization": "Bearer s3cret-token"}
    code, listed = server.get("/api/v1/models")
    assert code == 200 and listed["default"] == "main" and [m["name"] for m in listed["models"]] == ["main", "other"]
    assert listed["models"][1]["detector"]["backbone"] == "dinov2-tiny"
    video = clips["fake"].read_bytes()
    code, refused, _ = server.upload(video, model="nope")
    assert code == 422 and refused["error"] == "unknown_model" and "main, other" in refused["detail"]
    ids = {name: server.upload(video, **({"model": name} if name != "main" else {}))[1]["id"]
           for name in ("main", "other")}
    got = {name: server.wait(i) for name, i in ids.items()}
    expected = {"main": scorer(clips["fake"]).probability, "other": other_scorer(clips["fake"]).probability}
    assert abs(expected["main"] - expected["other"]) > 0.05  # the two detectors do disagree
    for name, job in got.items():
        assert job["model"] == name and job["status"] == "done"
        assert abs(job["verdict"]["probability"] - expected[name]) <= 1e-4
    # /metrics parses as Prometheus text and counts what happened
    code, text = server.get("/metrics")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    for name, job in got.items():
        v = job["verdict"]
        key = ("tim_verdicts_total", (("label", v["label"]), ("model", name), ("status", "ok")))
        assert samples[key] == 1
    assert samples[("tim_jobs", (("status", "done"),))] == 2 and samples[("tim_queue_length", ())] == 0
    assert samples[("tim_http_requests_total", (("code", "422"), ("method", "POST")))] == 1
    assert samples[("tim_stage_seconds_count", (("stage", "faces"),))] == 2
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "truthinmotion.serve.access"]
    posted = [ln for ln in lines if ln["method"] == "POST" and ln["status"] == 202]
    assert sorted(ln["job"] for ln in posted) == sorted(ids.values()) and all(ln["bytes_in"] > len(video) for ln in posted)
    assert any(ln["path"] == f"/api/v1/jobs/{ids['other']}" and ln["job"] == ids["other"] for ln in lines)
    assert "s3cret-token" not in caplog.text


def test_workers_share_one_loaded_detector_and_explain_at_once(run_dir, clips, tmp_path):
    """`tim serve --workers 2`: the detector and the depth model are loaded once, each worker has a
    preparer of its own; two workers scoring with evidence at the same time give what one scorer
    gives alone (saliency takes no gradient of the shared weights)."""
    from truthinmotion.apps.serve import ServeConfig
    from truthinmotion.apps.serve.workers import Service
    from truthinmotion.inference.scorer import Scorer

    service = Service(ServeConfig(model=str(run_dir), data_dir=tmp_path / "data", workers=2))
    try:
        (a,), (b,) = (list(w.scorers.values()) for w in service.workers)
        assert a.model is b.model and a.depth is b.depth and a.preparer is not b.preparer
        alone = Scorer(run_dir, runtime="torch")
        expected = [alone.score(clips[k], evidence=2) for k in ("fake", "real")]
        a, b = a.sibling(), a.sibling()  # with a PyTorch detector (saliency's own), shared
        a.model = b.model = alone.model
        with ThreadPoolExecutor(2) as pool:
            for _ in range(2):
                got = list(pool.map(lambda s, k: s.score(clips[k], evidence=2), (a, b), ("fake", "real")))
                for (verdict, evidence), (want, want_evidence) in zip(got, expected):
                    assert verdict.probability == pytest.approx(want.probability, abs=1e-6)
                    for m, sal in evidence.saliency.items():
                        np.testing.assert_allclose(sal, want_evidence.saliency[m], atol=1e-6)
    finally:
        service.close()
