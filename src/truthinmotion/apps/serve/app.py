"""The FastAPI application of ``tim serve``: its routes, each a short function over the
:class:`~.workers.Service`."""

from __future__ import annotations

import json
import logging
import secrets
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable, Sequence

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from ...core.io import without_paths
from .config import ServeConfig
from .metrics import log_access
from .uploads import Body, ClientGone, Refused, check_declared, receive_upload, video_seconds
from .workers import Service

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page.html")
MODEL_KEYS = ("detector", "data", "backbone_weights", "features", "inference", "verdict", "trained")


def error(status: int, err: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": err, "detail": detail}, status_code=status, headers=headers)


public = without_paths  # clients learn which model answers, not where this machine keeps it


def create_app(cfg: ServeConfig, scorers: Sequence[Any] | None = None, clock: Callable[[], float] = time.time) -> Any:
    """The FastAPI application; the models are loaded (unless ``scorers`` are given, one per
    worker) and the workers started here (see :class:`~.workers.Service`)."""
    service = Service(cfg, scorers, clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    app = FastAPI(title="truthinmotion", description="Deepfake screening: upload a video, get a verdict "
                  "with its evidence.", version="1", lifespan=lifespan)
    app.state.service = service
    app.middleware("http")(authenticate)
    app.middleware("http")(access)  # added last: the outermost, so refusals are logged too
    app.include_router(routes)
    return app


def _service(request: Request) -> Service:
    return request.app.state.service


async def access(request: Request, call_next):
    """One JSON line per request on the ``truthinmotion.serve.access`` logger, and its count in
    ``/metrics``."""
    start = time.perf_counter()
    response = await call_next(request)
    path = request.url.path
    job = getattr(request.state, "job_id", None)
    if job is None and path.startswith("/api/v1/jobs/"):
        job = path.split("/")[4]
    declared = request.headers.get("content-length", "")
    log_access(method=request.method, path=path, status=response.status_code, job=job,
               bytes_in=int(declared) if declared.isdigit() else 0,
               bytes_out=int(response.headers.get("content-length", 0) or 0),
               seconds=round(time.perf_counter() - start, 6))
    _service(request).metrics.request(request.method, response.status_code)
    return response


async def authenticate(request: Request, call_next):
    cfg = _service(request).cfg
    if cfg.token and request.url.path.startswith("/api/"):
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {cfg.token}".encode()):
            await Body(request).drain(cfg.upload_limit)
            return error(401, "unauthorized", "send Authorization: Bearer <token>")
    return await call_next(request)


routes = APIRouter()


@routes.get("/", response_class=HTMLResponse, include_in_schema=False)
def page() -> str:
    return PAGE.read_text()


@routes.get("/healthz")
def healthz(request: Request):
    health = _service(request).health()
    return health if health["status"] == "ok" else JSONResponse(health, status_code=503)


@routes.get("/api/v1/model")
def model(request: Request) -> dict[str, Any]:
    info = _service(request).model_info
    return {k: public(info[k]) for k in MODEL_KEYS if k in info}


@routes.get("/api/v1/models")
def models(request: Request) -> dict[str, Any]:
    """The detectors served, each with its card: the record's summary and, for an exported
    folder, its model card (``README.md``)."""
    service = _service(request)
    return {"default": service.default,
            "models": [{"name": name, "default": name == service.default, **card(info)}
                       for name, info in service.models.items()]}


def card(info: dict[str, Any]) -> dict[str, Any]:
    return {**{k: public(info[k]) for k in MODEL_KEYS if k in info}, "card": info.get("card")}


@routes.get("/metrics", include_in_schema=False)
def metrics(request: Request):
    from fastapi.responses import PlainTextResponse

    service = _service(request)
    text = service.metrics.text(service.jobs.counts(), service.health()["workers"])
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


@routes.post("/api/v1/jobs", status_code=202)
async def submit(request: Request):
    service, body, job_id = _service(request), Body(request), secrets.token_hex(12)
    request.state.job_id = job_id
    try:
        request.state.model = await queue_upload(service, body, job_id, request.headers.get("content-type", ""))
    except Refused as refused:
        await body.drain(service.cfg.upload_limit)
        return error(refused.status, refused.error, refused.detail, refused.headers)
    except ClientGone:
        log.info("a client disconnected during its upload: nothing kept")
        return error(400, "bad_request", "the upload stopped before its end")
    except OSError as err:
        log.exception("an upload could not be stored")
        await body.drain(service.cfg.upload_limit)
        return error(500, "storage", f"the upload could not be stored ({err.strerror or err})")
    service.wake.set()
    return {"id": job_id, "status": "queued", "model": request.state.model}


async def queue_upload(service: Service, body: Body, job_id: str, content_type: str) -> str:
    """Receive, check and queue an upload as job ``job_id`` for the detector its ``model`` field
    names (the default without one); nothing of it is kept unless it is queued. The detector's name."""
    cfg, target = service.cfg, service.upload(job_id)
    try:
        check_declared(body, cfg.upload_limit)
        name, fields = await receive_upload(body, content_type, target, cfg.upload_limit)
        model = fields.get("model") or service.default
        if model not in service.models:
            raise Refused(422, "unknown_model", f"no detector {model!r}; served: {', '.join(service.models)}")
        await run_in_threadpool(check_length, target, cfg.max_seconds)  # decoding: off the event loop
        if not service.jobs.add(job_id, str(target), Path(name).name[:200], cfg.queue, model):
            raise Refused(503, "queue_full", f"{cfg.queue} jobs are waiting; try again later", {"Retry-After": "10"})
    except BaseException:  # noqa: BLE001 - a refusal, a disconnect, a full disk, a cancelled task
        target.unlink(missing_ok=True)
        raise


def check_length(path: Path, max_seconds: float) -> None:
    """Refuse what does not decode as video (415) or plays longer than ``max_seconds`` (422)."""
    try:
        seconds = video_seconds(path)
    except Exception as err:  # noqa: BLE001 - whatever OpenCV says, it is not a video we can read
        raise Refused(415, "not_a_video", f"the upload does not decode as video ({err})") from None
    if seconds > max_seconds:
        raise Refused(422, "too_long", f"{seconds:.0f} s of video; the limit is {max_seconds:g} s")


@routes.get("/api/v1/jobs/{job_id}")
def status(job_id: str, request: Request):
    job = _service(request).jobs.get(job_id)
    if job is None:
        return error(404, "not_found", f"no job {job_id}")
    verdict = json.loads(job["verdict"])[0] if job["verdict"] else None
    return {"id": job_id, "status": job["status"], "model": job["model"] or _service(request).default,
            "verdict": verdict, "error": job["error"]}


@routes.get("/api/v1/jobs/{job_id}/report", response_class=HTMLResponse)
def report(job_id: str, request: Request):
    service = _service(request)
    job, page = service.jobs.get(job_id), service.report(job_id)
    if job is None:
        return error(404, "not_found", f"no job {job_id}")
    if job["status"] != "done" or not page.is_file():
        return error(409, "not_ready", f"job {job_id} is {job['status']}")
    return FileResponse(page, media_type="text/html")


@routes.delete("/api/v1/jobs/{job_id}")
def delete(job_id: str, request: Request):
    service = _service(request)
    outcome = service.jobs.delete(job_id)
    if outcome is None:
        return error(404, "not_found", f"no job {job_id}")
    if outcome == "deleting":  # its worker removes it, and whatever it wrote, when it stops
        return JSONResponse({"id": job_id, "status": "deleting"}, status_code=202)
    service.report(job_id).unlink(missing_ok=True)
    service.upload(job_id).unlink(missing_ok=True)
    return {"id": job_id, "status": "deleted"}


def serve(cfg: ServeConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(create_app(cfg), host=host, port=port, log_level="info")
