"""The model service's request log: an id for every request, and one JSON line per request
when its response is fully sent (so streamed requests log their real totals), with no text and
no key, so that it can be shipped as a metrics feed."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import asdict, dataclass, field

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from suggestions.wire import error_body

logger = logging.getLogger(__name__)
request_log = logging.getLogger("modal_backend.requests")
"""One JSON line per request, and nothing else."""


@dataclass
class RequestRecord:
    """The fields of a request's log line; handlers fill in what they learn."""

    request_id: str
    method: str
    path: str
    status: int = 0
    model: str | None = None
    stream: bool | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    ttft_ms: float | None = None
    total_ms: float | None = None
    client_disconnected: bool = False
    error: str | None = None
    started: float = field(default_factory=time.perf_counter, repr=False)

    def log_line(self) -> str:
        fields = asdict(self)
        fields.pop("started")
        return json.dumps({key: value for key, value in fields.items() if value is not None})


def ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestLog:
    """Pure ASGI middleware: a request id for every request, echoed as `X-Request-Id`, and one
    log line when the response is fully sent (so streamed requests log their real totals)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        record = RequestRecord(
            request_id=incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex,
            method=scope["method"],
            path=scope["path"],
        )
        scope.setdefault("state", {})["record"] = record

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", record.request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error in %s %s", record.method, record.path)
            record.error = "internal_error"
            if record.status:
                raise  # the response had started: nothing better to send
            await JSONResponse(
                error_body("the model service failed on this request", type="server_error"),
                status_code=500,
            )(scope, receive, send_with_id)
        finally:
            record.total_ms = ms_since(record.started)
            level = logging.DEBUG if record.path == "/health" else logging.INFO
            request_log.log(level, record.log_line())
