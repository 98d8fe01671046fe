"""`create_app`: the OpenAI-compatible model service over one engine.

`POST /v1/chat/completions` (JSON, or SSE with `"stream": true`), `GET /v1/models`,
`GET /v1/models/{id}` and `GET /health`. Every route but `/health` needs
`Authorization: Bearer <key>`. Requests beyond the engine's concurrency wait a bounded time
for a slot, then get 503 with `Retry-After`; a client
that goes away while its answer is generated stops that generation at the next token. One JSON
log line per request, with no text and no key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from suggestions.keys import authorization_matches, read_api_key
from suggestions.prompts import MAX_OUTPUT_TOKENS
from suggestions.wire import (
    DONE,
    ChatCompletionRequest,
    completion_body,
    completion_id,
    delta_chunk,
    error_body,
    final_chunk,
    role_chunk,
    sse_frame,
)

from .engines.base import (
    Delta,
    Engine,
    EngineError,
    EngineEvent,
    EngineStream,
    Finished,
    PromptTooLong,
)
from .openai_schema import ApiError, parse_chat_request, sampling_params
from .request_log import RequestLog, RequestRecord, ms_since, request_log

logger = logging.getLogger(__name__)

EngineLoader = Callable[[], Engine]


@dataclass(frozen=True)
class ServiceLimits:
    """What one request may ask for, and how long it may wait for a free engine slot."""

    max_input_chars: int = 40_000
    """All message text together; our client's prompts for an 8,000-character passage plus
    context stay well under this."""
    max_tokens: int = MAX_OUTPUT_TOKENS
    default_max_tokens: int = 2048
    queue_timeout_s: float = 10.0
    retry_after_s: int = 2


class _Service:
    """The engine (once loaded), its state as `/health` reports it, and its admission slots."""

    def __init__(self, engine: Engine | None, aliases: tuple[str, ...]) -> None:
        self.engine = engine
        self.aliases = aliases
        self.state: Literal["loading", "ready", "failed"] = "ready" if engine else "loading"
        self.slots = asyncio.Semaphore(engine.max_concurrency) if engine else None
        self.loaded_at = int(time.time())

    def ready(self, engine: Engine) -> None:
        self.engine = engine
        self.slots = asyncio.Semaphore(engine.max_concurrency)
        self.loaded_at = int(time.time())
        self.state = "ready"

    def served_ids(self) -> tuple[str, ...]:
        models = self.models()
        return (*models, *(alias for alias in self.aliases if alias not in models))

    def models(self) -> dict[str, str]:
        return self.engine.models() if self.engine else {}

    def resolve(self, requested: str | None) -> str:
        """The engine's model id for a request's `model`: itself, or the default for none or
        an alias."""
        assert self.engine is not None
        if requested and requested in self.models():
            return requested
        return self.engine.model_id


def create_app(
    engine: Engine | EngineLoader,
    *,
    api_key: str,
    limits: ServiceLimits | None = None,
    aliases: tuple[str, ...] = (),
) -> FastAPI:
    """The service app. Pass a loaded engine (which stays the caller's to close), or a function
    that loads one: it then runs in a thread at start-up while `/health` answers 503 `loading`,
    and the app closes the engine at shutdown."""
    key = read_api_key(api_key, "MODAL_API_KEY")
    if key is None:
        raise ValueError("the model service needs an API key")
    limits = limits or ServiceLimits()
    loader = None if hasattr(engine, "stream") else engine
    service = _Service(None if loader else engine, aliases)  # type: ignore[arg-type]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_load(service, loader)) if loader else None
        try:
            yield
        finally:
            if task:
                task.cancel()
                if service.engine:  # loaded here, so closed here; a given engine is the caller's
                    service.engine.close()

    app = FastAPI(
        title="Writing-suggestion model service",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(RequestLog)

    def authorize(request: Request) -> None:
        if not authorization_matches(request.headers.get("authorization"), key):
            raise ApiError(
                401,
                "missing or wrong API key: send it as 'Authorization: Bearer <key>'",
                type="authentication_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def ready_engine() -> Engine:
        if service.engine is None:
            raise ApiError(
                503,
                "the model is still loading; try again shortly"
                if service.state == "loading"
                else "the model failed to load; the operator has the details in the logs",
                type="service_unavailable",
                code="model_loading" if service.state == "loading" else "model_unavailable",
                headers={"Retry-After": str(limits.retry_after_s)}
                if service.state == "loading"
                else {},
            )
        return service.engine

    @app.get("/health")
    async def health() -> JSONResponse:
        body: dict[str, Any] = {"status": service.state}
        if service.engine:
            models = service.models()
            body |= {
                "model": service.engine.model_id,
                "version": models.get(service.engine.model_id, service.engine.version),
                "models": models,
                **service.engine.status(),
            }
        return JSONResponse(body, status_code=200 if service.state == "ready" else 503)

    def model_card(model_id: str) -> dict[str, Any]:
        return {
            "id": model_id,
            "object": "model",
            "created": service.loaded_at,
            "owned_by": "writing-suggestions",
            "version": service.models().get(service.resolve(model_id)),
        }

    def not_served(model_id: str) -> ApiError:
        return ApiError(
            404,
            f"model {model_id!r} is not served here; this server serves "
            f"{', '.join(service.served_ids())}",
            code="model_not_found",
        )

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        authorize(request)
        ready_engine()
        data = [model_card(model_id) for model_id in service.served_ids()]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request) -> JSONResponse:
        authorize(request)
        ready_engine()
        if model_id not in service.served_ids():
            raise not_served(model_id)
        return JSONResponse(model_card(model_id))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        record: RequestRecord = request.scope["state"]["record"]
        authorize(request)
        max_body = 12 * limits.max_input_chars + 65_536  # room for \uXXXX-escaped text
        if int(request.headers.get("content-length") or 0) > max_body:
            raise _too_large(limits)
        body = await request.body()
        if len(body) > max_body:
            raise _too_large(limits)
        chat = parse_chat_request(body)
        record.stream = chat.stream
        engine = ready_engine()
        if chat.model and chat.model not in service.served_ids():
            raise not_served(chat.model)
        served_as = service.resolve(chat.model)
        record.model = served_as
        if chat.input_chars() > limits.max_input_chars:
            raise _too_large(limits, chat.input_chars())
        params = sampling_params(
            chat, default_max_tokens=limits.default_max_tokens, max_tokens_limit=limits.max_tokens
        )
        assert service.slots is not None
        try:
            await asyncio.wait_for(service.slots.acquire(), limits.queue_timeout_s)
        except TimeoutError:
            raise ApiError(
                503,
                "the model is busy with other requests; try again shortly",
                type="service_unavailable",
                code="overloaded",
                headers={"Retry-After": str(limits.retry_after_s)},
            ) from None
        generation = _Generation(engine, served_as, chat, record, service.slots)
        try:
            first = await generation.start(params)
        except BaseException:
            await generation.close()
            raise
        if chat.stream:
            return _ClosingStreamingResponse(
                generation.sse(first),
                on_close=generation.close,
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            return JSONResponse(await generation.collect(first, request))
        finally:
            await generation.close()

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        _note_error(request, exc.code or exc.type)
        return JSONResponse(
            error_body(exc.message, type=exc.type, code=exc.code),
            status_code=exc.status,
            headers=exc.headers,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(str(exc.detail), type="invalid_request_error", code=str(exc.status_code)),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    return app


class _Generation:
    """One admitted request: its engine stream, timing, and the slot it must give back."""

    def __init__(
        self,
        engine: Engine,
        model: str,
        chat: ChatCompletionRequest,
        record: RequestRecord,
        slots: asyncio.Semaphore,
    ) -> None:
        self.engine = engine
        self.model = model
        self.chat = chat
        self.record = record
        self.slots = slots
        self.events: EngineStream | None = None
        self.closed = False

    async def start(self, params: Any) -> EngineEvent:
        """The first event, read before the response starts, so that a request the engine
        refuses (a prompt longer than its context) still gets an error status."""
        try:
            self.events = self.engine.stream(self.chat.chat_messages(), params, self.model)
            return await self._next()
        except PromptTooLong as exc:
            raise ApiError(413, str(exc), code="context_length_exceeded") from exc
        except EngineError as exc:
            raise _engine_failed(exc) from exc

    async def _next(self) -> EngineEvent:
        assert self.events is not None
        try:
            event = await anext(self.events)
        except StopAsyncIteration:
            raise EngineError("the engine ended without a finish event") from None
        if isinstance(event, Delta) and self.record.ttft_ms is None:
            self.record.ttft_ms = ms_since(self.record.started)
        return event

    async def _all(self, first: EngineEvent) -> AsyncIterator[EngineEvent]:
        event = first
        while True:
            if isinstance(event, Finished):
                self._finished(event)
                await self.close()  # the engine is done: free the slot before the last bytes go
                yield event
                return
            yield event
            event = await self._next()

    async def sse(self, first: EngineEvent) -> AsyncIterator[bytes]:
        chunk_id, model = completion_id(), self.model
        try:
            yield sse_frame(role_chunk(model=model, chunk_id=chunk_id))
            async for event in self._all(first):
                if isinstance(event, Delta):
                    yield sse_frame(delta_chunk(event.text, model=model, chunk_id=chunk_id))
                else:
                    yield sse_frame(
                        final_chunk(
                            event.finish_reason,
                            model=model,
                            chunk_id=chunk_id,
                            prompt_tokens=event.prompt_tokens,
                            completion_tokens=event.completion_tokens,
                        )
                    )
            yield sse_frame(DONE)
        except EngineError as exc:
            logger.error("generation failed mid-stream: %s", exc)
            self.record.error = "engine_error"
            yield sse_frame(error_body("the model failed mid-answer", type="server_error"))

    async def collect(self, first: EngineEvent, request: Request) -> dict[str, Any]:
        """The whole answer, abandoned (and generation stopped) if the client disconnects."""

        async def gather() -> tuple[str, Finished]:
            pieces: list[str] = []
            async for event in self._all(first):
                if isinstance(event, Delta):
                    pieces.append(event.text)
                else:
                    return "".join(pieces), event
            raise AssertionError("unreachable: _all ends with a Finished event")

        answer = asyncio.create_task(gather())
        gone = asyncio.create_task(_disconnected(request))
        try:
            await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not answer.done():
            answer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answer
            self.record.client_disconnected = True
            return {}
        try:
            text, finished = answer.result()
        except EngineError as exc:
            raise _engine_failed(exc) from exc
        return completion_body(
            text,
            finished.finish_reason,
            model=self.model,
            prompt_tokens=finished.prompt_tokens,
            completion_tokens=finished.completion_tokens,
        )

    def _finished(self, event: Finished) -> None:
        self.record.prompt_tokens = event.prompt_tokens
        self.record.completion_tokens = event.completion_tokens
        self.record.finish_reason = event.finish_reason

    async def close(self) -> None:
        """Stop the engine (if it is still generating) and free the slot, exactly once."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.events is not None:
                await self.events.aclose()
        finally:
            self.slots.release()


class _ClosingStreamingResponse(StreamingResponse):
    """A streaming response that always runs `on_close`, even when the client left before the
    first byte (the body iterator then never starts, so its own cleanup would never run)."""

    def __init__(self, content: Any, *, on_close: Callable[[], Any], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        record: RequestRecord = scope["state"]["record"]
        try:
            await super().__call__(scope, receive, send)
        except (ClientDisconnect, OSError):
            pass
        finally:
            if record.finish_reason is None and record.error is None:
                record.client_disconnected = True
            await self.on_close()


async def _load(service: _Service, loader: EngineLoader) -> None:
    started = time.perf_counter()
    try:
        engine = await asyncio.to_thread(loader)
        service.ready(engine)
    except Exception:
        logger.exception("the model failed to load")
        service.state = "failed"
        return
    request_log.info(
        json.dumps(
            {
                "event": "model_loaded",
                "model": engine.model_id,
                "version": engine.version,
                "load_s": round(time.perf_counter() - started, 2),
            }
        )
    )


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _engine_failed(exc: EngineError) -> ApiError:
    logger.error("generation failed: %s", exc, exc_info=exc)
    return ApiError(
        500, "the model failed on this request", type="server_error", code="engine_error"
    )


def _too_large(limits: ServiceLimits, chars: int | None = None) -> ApiError:
    size = f"is {chars:,} characters" if chars is not None else "is too large"
    return ApiError(
        413,
        f"the input {size}; this server accepts at most {limits.max_input_chars:,} characters "
        "of message text per request",
        code="input_too_large",
    )


def _note_error(request: Request, code: str) -> None:
    record = request.scope.get("state", {}).get("record")
    if record is not None:
        record.error = code
