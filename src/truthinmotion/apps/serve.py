"""``tim serve``: the detector behind HTTP, with a JSON API, a web page and the limits of a service
open to uploads (FastAPI and uvicorn: the ``serve`` extra, ``pip install 'truthinmotion[serve]'``).

A job is an uploaded video. The upload is streamed to disk under a random name inside the data
directory (never a name or path the client sent), its size checked while it streams (413), and
it is probed before it is accepted: content that does not decode as video is refused (415), a
video longer than ``max_seconds`` too (422). Accepted jobs are recorded in SQLite
(``DATA_DIR/jobs.sqlite``) and scored by worker threads, each holding the models once, outside
the event loop; on start, jobs that were queued or running when the server stopped are queued
again, so nothing accepted is lost. A full queue answers 503 with ``Retry-After``; with a token,
a request without ``Authorization: Bearer TOKEN`` gets 401. Errors are JSON
``{"error": ..., "detail": ...}``. A video that is accepted but cannot be scored (no face, cut
short) finishes as ``done`` with the verdict's status, exactly as ``tim detect`` reports it.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

__all__ = ["Jobs", "ServeConfig", "create_app", "serve"]

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("serve_page.html")


@dataclass(frozen=True)
class ServeConfig:
    model: str
    data_dir: Path
    device: str = "cpu"
    workers: int = 1  # scoring threads, each with its own models
    queue: int = 32  # jobs queued or running at most; beyond: 503
    max_upload_mb: float = 200.0
    max_seconds: float = 600.0
    token: str | None = None
    keep_uploads: bool = False


class Jobs:
    """The job table in SQLite; every call opens its own connection (threads and restarts safe)."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, status TEXT, upload TEXT, "
                       "name TEXT, verdict TEXT, error TEXT, created REAL, updated REAL)")

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        return db

    def add(self, job_id: str, upload: str, name: str, limit: int) -> bool:
        """Queue a job unless ``limit`` jobs are already queued or running."""
        with self.lock, self._db() as db:
            active = db.execute("SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')").fetchone()[0]
            if active >= limit:
                return False
            now = time.time()
            db.execute("INSERT INTO jobs VALUES (?, 'queued', ?, ?, NULL, NULL, ?, ?)", (job_id, upload, name, now, now))
            return True

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return dict(row) if row else None

    def claim(self) -> dict[str, Any] | None:
        """The oldest queued job, now running."""
        with self.lock, self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE status = 'queued' ORDER BY created LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = 'running', updated = ? WHERE id = ?", (time.time(), row["id"]))
            return dict(row)

    def finish(self, job_id: str, status: str, verdict: str | None = None, error: str | None = None) -> None:
        with self.lock, self._db() as db:
            db.execute("UPDATE jobs SET status = ?, verdict = ?, error = ?, updated = ? WHERE id = ?",
                       (status, verdict, error, time.time(), job_id))

    def requeue_unfinished(self) -> int:
        with self.lock, self._db() as db:
            return db.execute("UPDATE jobs SET status = 'queued' WHERE status = 'running'").rowcount

    def delete(self, job_id: str) -> bool:
        with self.lock, self._db() as db:
            return db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0


class Service:
    """The jobs, the worker threads and the files of one data directory."""

    def __init__(self, cfg: ServeConfig):
        from ..inference.scorer import Scorer

        self.cfg = cfg
        for sub in ("uploads", "reports"):
            (cfg.data_dir / sub).mkdir(parents=True, exist_ok=True)
        self.jobs = Jobs(cfg.data_dir / "jobs.sqlite")
        requeued = self.jobs.requeue_unfinished()
        if requeued:
            log.info("%d jobs were running when the server stopped: queued again", requeued)
        self.scorers = [Scorer(cfg.model, cfg.device) for _ in range(cfg.workers)]  # loaded once, up front
        self.model_info = self.scorers[0].model_info
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._work, args=(s,), daemon=True, name=f"scorer-{i}")
                        for i, s in enumerate(self.scorers)]
        for t in self.threads:
            t.start()

    def _work(self, scorer: Any) -> None:
        from ..inference.verdict import to_json
        from ..reports.page import write_report

        while not self.stop.is_set():
            job = self.jobs.claim()
            if job is None:
                self.wake.wait(0.5)
                self.wake.clear()
                continue
            upload = Path(job["upload"])
            try:
                verdict, evidence = scorer.score(upload, evidence=4)
                verdict.video = job["name"]  # the client's name, for display only
                write_report(verdict, evidence, scorer.model_info, self.cfg.data_dir / "reports" / f"{job['id']}.html")
                self.jobs.finish(job["id"], "done", verdict=to_json([verdict]))
            except Exception as err:  # noqa: BLE001 - a job fails, the service goes on
                log.exception("job %s failed", job["id"])
                self.jobs.finish(job["id"], "failed", error=f"{type(err).__name__}: {err}")
            finally:
                if not self.cfg.keep_uploads:
                    upload.unlink(missing_ok=True)


class _TooLarge(Exception):
    pass


async def _receive_upload(request: Any, target: Path, limit: int) -> str:
    """Stream the multipart field ``file`` of ``request`` into ``target``; its client file name."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise ValueError("expected multipart/form-data with a field named file")
    part: dict[str, Any] = {"field": b"", "value": b"", "headers": {}, "file": False, "size": 0, "found": None}
    out = open(target, "wb")

    def header_end() -> None:
        part["headers"][part["field"].lower()] = part["value"]
        part["field"] = part["value"] = b""

    def headers_done() -> None:
        _, opts = parse_options_header(part["headers"].get(b"content-disposition", b""))
        part["file"] = opts.get(b"name") == b"file" and part["found"] is None
        if part["file"]:
            part["found"] = opts.get(b"filename", b"upload").decode("utf-8", "replace")

    def data(buf: bytes, start: int, end: int) -> None:
        if part["file"]:
            part["size"] += end - start
            if part["size"] > limit:
                raise _TooLarge
            out.write(buf[start:end])

    callbacks = {
        "on_part_begin": lambda: part.update(headers={}, file=False),
        "on_header_field": lambda b, s, e: part.update(field=part["field"] + b[s:e]),
        "on_header_value": lambda b, s, e: part.update(value=part["value"] + b[s:e]),
        "on_header_end": header_end,
        "on_headers_finished": headers_done,
        "on_part_data": data,
        "on_part_end": lambda: part.update(file=False),
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    finally:
        out.close()
    if part["found"] is None:
        raise ValueError("no field named file in the upload")
    return part["found"]


def create_app(cfg: ServeConfig) -> Any:
    """The FastAPI application (models loaded and workers started here)."""
    from ..media.video import probe

    service = Service(cfg)
    app = FastAPI(title="truthinmotion", description="Deepfake screening: upload a video, get a verdict "
                  "with its evidence.", version="1")
    app.state.service = service

    def error(status: int, err: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": err, "detail": detail}, status_code=status, headers=headers)

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        if cfg.token and request.url.path.startswith("/api/"):
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {cfg.token}".encode()):
                return error(401, "unauthorized", "send Authorization: Bearer <token>")
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text()

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "workers": sum(t.is_alive() for t in service.threads)}

    @app.get("/api/v1/model")
    def model() -> dict[str, Any]:
        info = service.model_info
        keys = ("detector", "data", "backbone_weights", "features", "inference", "verdict", "trained")
        return {k: info.get(k) for k in keys if k in info}

    @app.post("/api/v1/jobs", status_code=202)
    async def submit(request: Request):
        limit = int(cfg.max_upload_mb * 2**20)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
            return error(413, "too_large", f"uploads are limited to {cfg.max_upload_mb:g} MB")
        job_id = secrets.token_hex(12)
        target = cfg.data_dir / "uploads" / f"{job_id}.video"
        try:
            name = await _receive_upload(request, target, limit)
        except _TooLarge:
            target.unlink(missing_ok=True)
            return error(413, "too_large", f"uploads are limited to {cfg.max_upload_mb:g} MB")
        except ValueError as err:
            target.unlink(missing_ok=True)
            return error(400, "bad_request", str(err))
        try:
            info = probe(target)
            if info.frames < 2 or info.width < 1:
                raise ValueError("fewer than 2 frames")
        except Exception as err:  # noqa: BLE001 - whatever OpenCV says, it is not a video we can read
            target.unlink(missing_ok=True)
            return error(415, "not_a_video", f"the upload does not decode as video ({err})")
        seconds = info.frames / info.fps if info.fps > 0 else 0.0
        if seconds > cfg.max_seconds:
            target.unlink(missing_ok=True)
            return error(422, "too_long", f"{seconds:.0f} s of video; the limit is {cfg.max_seconds:g} s")
        if not service.jobs.add(job_id, str(target), Path(name).name[:200], cfg.queue):
            target.unlink(missing_ok=True)
            return error(503, "queue_full", f"{cfg.queue} jobs are waiting; try again later", {"Retry-After": "10"})
        service.wake.set()
        return {"id": job_id, "status": "queued"}

    def job_or_404(job_id: str) -> dict[str, Any] | JSONResponse:
        job = service.jobs.get(job_id)
        return job if job is not None else error(404, "not_found", f"no job {job_id}")

    @app.get("/api/v1/jobs/{job_id}")
    def status(job_id: str):
        job = job_or_404(job_id)
        if isinstance(job, JSONResponse):
            return job
        return {"id": job_id, "status": job["status"], "verdict": json.loads(job["verdict"])[0] if job["verdict"] else None,
                "error": job["error"]}

    @app.get("/api/v1/jobs/{job_id}/report", response_class=HTMLResponse)
    def report(job_id: str):
        job = job_or_404(job_id)
        if isinstance(job, JSONResponse):
            return job
        page = cfg.data_dir / "reports" / f"{job_id}.html"
        if job["status"] != "done" or not page.is_file():
            return error(409, "not_ready", f"job {job_id} is {job['status']}")
        return FileResponse(page, media_type="text/html")

    @app.delete("/api/v1/jobs/{job_id}")
    def delete(job_id: str):
        job = job_or_404(job_id)
        if isinstance(job, JSONResponse):
            return job
        if job["status"] == "running":
            return error(409, "running", "the job is being scored; delete it when it is done")
        service.jobs.delete(job_id)
        Path(job["upload"]).unlink(missing_ok=True)
        (cfg.data_dir / "reports" / f"{job_id}.html").unlink(missing_ok=True)
        return {"id": job_id, "status": "deleted"}

    @app.on_event("shutdown")
    def stop() -> None:
        service.stop.set()

    return app


def serve(cfg: ServeConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(create_app(cfg), host=host, port=port, log_level="info")
