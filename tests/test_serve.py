"""tim serve through a real uvicorn server on 127.0.0.1: the API, its limits, restarts."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
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


class Server:
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

    def get(self, path: str) -> tuple[int, dict | str]:
        return _call(urllib.request.Request(self.url + path))

    def upload(self, data: bytes, name: str = "video.mp4") -> tuple[int, dict, dict]:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(self.url + "/api/v1/jobs", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
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


def _call(req: urllib.request.Request) -> tuple[int, dict | str]:
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
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


def test_bad_uploads_get_their_status_and_the_server_goes_on(run_dir, tmp_path, clips, faceless):
    server = Server(run_dir, tmp_path / "data", "--max-upload-mb", "0.2", "--max-seconds", "1.0")
    try:
        cases = {
            "text named .mp4": (b"this is not a video\n" * 10, 415, "not_a_video"),
            "zero bytes": (b"", 415, "not_a_video"),
            "truncated": (clips["fake"].read_bytes()[:2000], 415, "not_a_video"),
            "oversize": (np.random.default_rng(0).bytes(300_000), 413, "too_large"),
            "too long": (clips["fake"].read_bytes(), 422, "too_long"),  # 30 frames at 25 fps: 1.2 s
        }
        for name, (data, code, err) in cases.items():
            got, body, _ = server.upload(data)
            assert (got, body["error"]) == (code, err), name
            assert body["detail"], name
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
    again = Server(run_dir, data_dir)
    try:
        assert all(again.wait(j)["verdict"]["status"] == "ok" for j in ids)
    finally:
        again.stop()


def test_a_token_is_required_when_set(run_dir, tmp_path):
    server = Server(run_dir, tmp_path / "data", "--token", "s3cret")
    try:
        code, body = server.get("/api/v1/model")
        assert code == 401 and body["error"] == "unauthorized"
        req = urllib.request.Request(server.url + "/api/v1/model", headers={"Authorization": "Bearer s3cret"})
        assert _call(req)[0] == 200
        assert server.get("/healthz")[0] == 200  # health and the page stay open
    finally:
        server.stop()


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
