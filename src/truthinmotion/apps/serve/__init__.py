"""``tim serve``: the detector behind HTTP, with a JSON API, a web page and the limits of a service
open to uploads (FastAPI and uvicorn: the ``serve`` extra, ``pip install 'truthinmotion[serve]'``).

A job is an uploaded video. The upload is streamed to disk under a random name inside the data
directory (never a name or path the client sent), readable by this user only, its size checked
before (``Content-Length``) and while it streams (413), and it is probed, outside the event loop,
before it is accepted: content that does not decode as video is refused (415), a video longer
than ``max_seconds`` too (422). Accepted jobs are recorded in SQLite (``DATA_DIR/jobs.sqlite``)
and scored by worker threads, each holding the models once; on start, jobs that were queued or
running when the server stopped are queued again, so nothing accepted is lost. A full queue
answers 503 with ``Retry-After``; with a token, a request without ``Authorization: Bearer TOKEN``
gets 401. Errors are JSON ``{"error": ..., "detail": ...}``. A video that is accepted but cannot
be scored (no face, cut short) finishes as ``done`` with the verdict's status, exactly as
``tim detect`` reports it. A finished job, its upload and its page are removed ``keep_hours``
after it ended.

Modules: :mod:`.store` (the SQLite job table), :mod:`.workers` (scoring threads, health,
sweeps), :mod:`.uploads` (receiving and checking an upload), :mod:`.app` (the routes).
"""

from __future__ import annotations

import importlib
from typing import Any

# Name -> module, imported on first use: `tim serve --help` reads ServeConfig's defaults without
# FastAPI, and says how to install the serve extra when it is missing.
_EXPORTS = {"Jobs": "store", "ServeConfig": "config", "create_app": "app", "serve": "app"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Jobs", "ServeConfig", "create_app", "serve"]  # noqa: F822 - resolved lazily by __getattr__
