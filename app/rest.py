"""The app's REST API: what the writing platform's editor calls.

`POST /api/manuscripts/{manuscript_id}/suggest` takes a `LlamaRequest` and answers a
`LlamaResponse`; with `Accept: text/event-stream` it streams `delta` events, then one `response`
event (or one `error` event). `GET /healthz` says the app is up and which backends it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.convertors import Convertor, register_url_convertor

from suggestions.backends.base import TextDelta
from suggestions.contract import LlamaRequest, describe_validation_error, parse_request
from suggestions.errors import BackendError, ConfigurationError, UnexpectedFailure
from suggestions.keys import authorization_matches

from .runtime import Runtime

logger = logging.getLogger(__name__)

# What each backend failure means to an HTTP client.
STATUS_FOR_KIND = {
    "rate_limited": 429,
    "timeout": 504,
    "rejected": 422,
    "truncated": 422,
    "unavailable": 503,
    "auth": 502,
    "interrupted": 502,
    "bad_response": 502,
    "internal": 500,
}
RETRY_AFTER_S = 2
_T = TypeVar("_T")


class _AnyText(Convertor[str]):
    """A path parameter that takes any text, even empty or with a slash or a newline (where
    `str` and `path` stop), so that every manuscript id reaches the route and gets its error
    (422, naming the field) rather than the page mount's `{"detail": "Not Found"}`."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("any_text", _AnyText())


class RestError(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if self.status in (429, 503) else None
        return JSONResponse(
            {"error": {"kind": self.kind, "message": self.message}},
            status_code=self.status,
            headers=headers,
        )


def rest_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()
    # text and context at the limit, each character at worst a 12-byte JSON escape pair
    max_body = runtime.config.settings.max_text_chars * 2 * 12 + 64_000

    @router.get("/healthz")
    async def healthz() -> dict[str, Any]:
        backends = {
            name: {"label": backend.label, "model_id": backend.model_id}
            for name, backend in runtime.service.backends.items()
        }
        return {"status": "ok", "columns": list(runtime.columns), "backends": backends}

    @router.post("/api/manuscripts/{manuscript_id:any_text}/suggest", response_model=None)
    async def suggest(manuscript_id: str, request: Request, backend: str = "custom") -> Response:
        try:
            _authorize(runtime, request)
            suggestion_request = await _read_request(request, manuscript_id, runtime, max_body)
            runtime.service.backend(backend)
        except RestError as exc:
            return exc.response()
        except ConfigurationError as exc:
            return RestError(404, "unknown_backend", str(exc)).response()
        if "text/event-stream" in request.headers.get("accept", ""):
            return StreamingResponse(
                _sse(runtime, suggestion_request, backend),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            response = await _until_disconnected(
                request, runtime.service.suggest(suggestion_request, backend=backend)
            )
        except BackendError as exc:
            logger.warning("rest: %s", exc.log_line())
            return _backend_error(exc).response()
        if response is None:  # the client left: nobody to answer, generation already stopped
            return Response(status_code=499)
        return JSONResponse(response.model_dump(mode="json"))

    return router


def _authorize(runtime: Runtime, request: Request) -> None:
    expected = runtime.config.api_key
    if expected is None:
        return
    if not authorization_matches(request.headers.get("authorization"), expected):
        raise RestError(401, "unauthorized", "A valid API key is needed (Authorization: Bearer).")


async def _read_request(
    request: Request, manuscript_id: str, runtime: Runtime, max_body: int
) -> LlamaRequest:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_body:
        raise RestError(413, "too_large", "The request is too large. Send a shorter passage.")
    chunks, size = [], 0
    async for chunk in request.stream():  # counted as it arrives: no Content-Length is needed
        size += len(chunk)
        if size > max_body:
            raise RestError(413, "too_large", "The request is too large. Send a shorter passage.")
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        data = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RestError(400, "invalid_json", "The request body is not valid JSON.") from None
    except RecursionError:
        raise RestError(
            400, "invalid_json", "The request body is nested too deeply to read."
        ) from None
    except ValueError:  # valid JSON Python will not read: an integer past 4,300 digits
        raise RestError(
            400, "invalid_json", "The request body has a number too long to read."
        ) from None
    if not isinstance(data, dict):
        raise RestError(422, "invalid_request", "The request body must be a JSON object.")
    given = data.get("manuscript_id")
    if given is not None and given != manuscript_id:
        raise RestError(
            422,
            "invalid_request",
            "manuscript_id in the body does not match the one in the URL; send it in one place.",
        )
    try:
        return parse_request(
            {**data, "manuscript_id": manuscript_id},
            max_text_chars=runtime.config.settings.max_text_chars,
        )
    except ValidationError as exc:
        raise RestError(422, "invalid_request", describe_validation_error(exc)) from None


def _backend_error(exc: BackendError) -> RestError:
    return RestError(STATUS_FOR_KIND.get(exc.kind, 502), exc.kind, exc.user_message)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _until_disconnected(request: Request, work: Awaitable[_T]) -> _T | None:
    """`work`'s result, or None once the client has gone: `work` is then cancelled, which
    closes the model stream and so stops generation at the next token (as a streamed request
    that loses its client does), instead of generating an answer nobody will read."""
    answer = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not answer.done():
            answer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answer
    if answer.cancelled():
        logger.info("rest: the client left before the answer; generation stopped")
        return None
    return answer.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _sse(runtime: Runtime, request: LlamaRequest, backend: str) -> AsyncIterator[bytes]:
    """Deltas, then exactly one `response` or `error` event, whatever goes wrong."""
    try:
        async with aclosing(runtime.service.stream(request, backend=backend)) as items:
            async for item in items:
                if isinstance(item, TextDelta):
                    yield _event("delta", {"text": item.text})
                else:
                    yield _event("response", item.model_dump(mode="json"))
    except BackendError as exc:
        logger.warning("rest stream: %s", exc.log_line())
        yield _event("error", {"kind": exc.kind, "message": exc.user_message})
    except Exception:
        logger.exception("rest stream failed")
        failure = UnexpectedFailure("the stream failed", backend=backend)
        yield _event("error", {"kind": failure.kind, "message": failure.user_message})
