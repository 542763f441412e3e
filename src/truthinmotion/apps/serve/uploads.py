"""Receiving an upload: the multipart field ``file`` streamed to a private file under the size
limit, refusals every client can read, and the length check of what arrived.

An upload whose ``Content-Length`` is over the limit is refused before a byte of it is read.
A refusal is only readable if the client gets to read: urllib (and clients like it) send the
whole body before reading the answer, and uvicorn closes the connection after the answer when
the client asked for ``Connection: close``; unread bytes then make the kernel reset the
connection and the client sees ``Connection reset by peer``, not the 413. So the rest of a
refused body is read and dropped first, up to :data:`DRAIN_BYTES` (or the upload limit, if
larger); a client announcing more than that, or one waiting for ``100 Continue``, gets the answer
at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, AsyncIterator

import cv2

from ...media.video import probe

DRAIN_BYTES = 64 * 2**20
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file, bytes
NOMINAL_FPS = 30.0  # the rate of most footage; taken when a container's rate cannot be trusted


class Refused(Exception):
    """An upload the service does not take: the answer's status, error and detail."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


class ClientGone(ConnectionError):
    """The client disconnected before its upload arrived."""


class Body:
    """A request body as it arrives (ASGI messages), counting what was read."""

    def __init__(self, request: Any):
        self.receive = request.receive
        self.headers = request.headers
        self.read = 0
        self.done = False  # all of it was read

    def declared(self) -> int | None:
        """The ``Content-Length`` the client sent, if any."""
        value = self.headers.get("content-length", "")
        return int(value) if value.isdigit() else None

    async def chunks(self) -> AsyncIterator[bytes]:
        while not self.done:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone("the client disconnected during the upload")
            chunk = message.get("body", b"")
            self.read += len(chunk)
            self.done = not message.get("more_body", False)
            yield chunk

    async def drain(self, limit: int) -> None:
        """Read and drop the rest of the body, so that the client reads the answer (see above)."""
        if self.done or (self.read == 0 and self.headers.get("expect", "").lower() == "100-continue"):
            return  # such a client sends nothing before the answer says so
        budget = max(limit, DRAIN_BYTES)
        declared = self.declared()
        if declared is not None and declared - self.read > budget:
            return
        start = self.read
        try:
            async for _ in self.chunks():
                if self.read - start > budget:
                    return
        except ClientGone:
            return


class _TooLarge(Exception):
    pass


def check_declared(body: Body, limit: int) -> None:
    """Refuse an upload whose ``Content-Length`` is over ``limit``, before reading it."""
    declared = body.declared()
    if declared is not None and declared > limit + MULTIPART_OVERHEAD:
        raise Refused(413, "too_large", f"uploads are limited to {limit / 2**20:g} MB")


FIELD_BYTES = 256  # the most a text field (``model``) may hold


async def receive_upload(body: Body, content_type: str, target: Path, limit: int) -> tuple[str, dict[str, str]]:
    """Stream the multipart field ``file`` into ``target`` (created, readable by this user only)
    and stop at ``limit`` bytes; its client file name, and the text fields sent with it (``model``),
    each up to :data:`FIELD_BYTES`. The caller removes ``target`` whatever happens next."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise Refused(400, "bad_request", "expected multipart/form-data with a field named file")
    part: dict[str, Any] = {"field": b"", "value": b"", "headers": {}, "file": False, "size": 0, "found": None,
                            "text": None}
    fields: dict[str, bytes] = {}
    out = os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")

    def header_end() -> None:
        part["headers"][part["field"].lower()] = part["value"]
        part["field"] = part["value"] = b""

    def headers_done() -> None:
        _, opts = parse_options_header(part["headers"].get(b"content-disposition", b""))
        part["file"] = opts.get(b"name") == b"file" and part["found"] is None
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        part["text"] = name if not part["file"] and b"filename" not in opts else None
        if part["text"] is not None:
            fields[name] = b""
        if part["file"]:
            part["found"] = opts.get(b"filename", b"upload").decode("utf-8", "replace")

    def data(buf: bytes, start: int, end: int) -> None:
        if part["file"]:
            part["size"] += end - start
            if part["size"] > limit:
                raise _TooLarge
            out.write(buf[start:end])
        elif part["text"] is not None:
            fields[part["text"]] += buf[start:end]
            if len(fields[part["text"]]) > FIELD_BYTES:
                raise Refused(400, "bad_request", f"the field {part['text']} is longer than {FIELD_BYTES} bytes")

    callbacks = {
        "on_part_begin": lambda: part.update(headers={}, file=False),
        "on_header_field": lambda b, s, e: part.update(field=part["field"] + b[s:e]),
        "on_header_value": lambda b, s, e: part.update(value=part["value"] + b[s:e]),
        "on_header_end": header_end,
        "on_headers_finished": headers_done,
        "on_part_data": data,
        "on_part_end": lambda: part.update(file=False, text=None),
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        async for chunk in body.chunks():
            parser.write(chunk)
        parser.finalize()
    except _TooLarge:
        raise Refused(413, "too_large", f"uploads are limited to {limit / 2**20:g} MB") from None
    except ValueError as err:  # the multipart parser's errors
        raise Refused(400, "bad_request", str(err)) from None
    finally:
        out.close()
    if part["found"] is None:
        raise Refused(400, "bad_request", "no field named file in the upload")
    return part["found"], {k: v.decode("utf-8", "replace").strip() for k, v in fields.items()}


def video_seconds(path: Path) -> float:
    """How long the video at ``path`` plays, for the length limit; errors for what does not
    decode as video. Decodes the whole file when the container holds no frame count (WebM,
    MKV) or a frame rate that cannot be true: run it outside the event loop.

    A rate of 0 or of 1000 frames a second and more (``probe`` gives 0 for both) would make any
    video 0 s long: its frames' timestamps are read instead, and it is taken to be at least its
    frames at :data:`NOMINAL_FPS`, so that the limit still bounds the frames a job decodes.
    """
    info = probe(path)
    if info.fps > 0:
        return info.frames / info.fps
    return max(info.frames / NOMINAL_FPS, _last_timestamp(path))


def _last_timestamp(path: Path) -> float:
    cap = cv2.VideoCapture(str(path))
    last = 0.0
    try:
        while cap.grab():
            last = max(last, cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
    finally:
        cap.release()
    return last
