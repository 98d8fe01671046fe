"""`create_app`: the OpenAI-compatible model service over one engine.

`POST /v1/chat/completions` (JSON, or SSE with `"stream": true`), `GET /v1/models`,
`GET /v1/models/{id}` and `GET /health`. Every route but `/health` needs
`Authorization: Bearer <key>`. `Admission` decides which requests join the engine's batch, from
each request's size and the engine's measured speed; one that cannot be served within the
clients' patience gets a prompt 503 with `Retry-After`. A client that goes away while it waits,
or while its answer is generated, gives its place back at once and stops that generation at the
next token. One JSON log line per request, with no text and no key.
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
from typing import Any, Literal, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from suggestions.keys import authorization_matches, read_api_key
from suggestions.prompts import MAX_OUTPUT_TOKENS, estimate_tokens
from suggestions.wire import (
    ChatCompletionRequest,
    error_body,
)

from .admission import Admission, AdmissionLimits, Overloaded, RequestCost
from .engines.base import (
    Engine,
)
from .generation import (
    ClientGone,
    ClosingStreamingResponse,
    Generation,
    unless_disconnected,
)
from .openai_schema import ApiError, parse_chat_request, sampling_params
from .request_log import RequestLog, RequestRecord, request_log

logger = logging.getLogger(__name__)

EngineLoader = Callable[[], Engine]
T = TypeVar("T")


@dataclass(frozen=True)
class ServiceLimits:
    """What one request may ask for, and what the clients will wait for (`AdmissionLimits`)."""

    max_input_chars: int = 40_000
    """All message text together; our client's prompts for an 8,000-character passage plus
    context stay well under this."""
    max_tokens: int = MAX_OUTPUT_TOKENS
    default_max_tokens: int = 2048
    first_token_budget_s: float = AdmissionLimits.first_token_budget_s
    """Longest a request may wait for its first token before it is refused with a 503."""
    finish_budget_s: float = AdmissionLimits.finish_budget_s
    """Longest a request may be predicted to take in all before it is refused with a 503."""
    retry_after_s: int = 2
    """The `Retry-After` while the model loads, and the shortest one for an overload."""

    def admission(self) -> AdmissionLimits:
        return AdmissionLimits(
            first_token_budget_s=self.first_token_budget_s,
            finish_budget_s=self.finish_budget_s,
            min_retry_after_s=self.retry_after_s,
        )


class _Service:
    """The engine (once loaded), its state as `/health` reports it, and its admission."""

    def __init__(
        self, engine: Engine | None, aliases: tuple[str, ...], limits: AdmissionLimits
    ) -> None:
        self.engine: Engine | None = None
        self.aliases = aliases
        self.limits = limits
        self.state: Literal["loading", "ready", "failed"] = "loading"
        self.admission: Admission | None = None
        self.loaded_at = int(time.time())
        if engine is not None:
            self.ready(engine)

    def ready(self, engine: Engine) -> None:
        self.engine = engine
        kv_tokens = getattr(engine, "kv_token_capacity", None)
        self.admission = Admission(
            max_sequences=engine.max_concurrency,
            kv_tokens=kv_tokens,
            fixed_slots=kv_tokens is None,
            limits=self.limits,
        )
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
    service = _Service(None if loader else engine, aliases, limits.admission())  # type: ignore[arg-type]

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
            if service.admission is not None:
                body["admission"] = service.admission.status()
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
        admission = service.admission
        assert admission is not None
        cost = RequestCost(_prompt_tokens(engine, chat), params.max_tokens)
        try:
            ticket = await unless_disconnected(request, admission.admit(cost))
        except Overloaded as exc:
            raise ApiError(
                503,
                f"the model is busy with other requests ({exc.reason}); try again in "
                f"{exc.retry_after_s} s",
                type="service_unavailable",
                code="overloaded",
                headers={"Retry-After": str(exc.retry_after_s)},
            ) from None
        except ClientGone:
            record.client_disconnected = True
            return Response(status_code=499)
        generation = Generation(engine, served_as, chat, record, admission, ticket)
        try:
            first = await unless_disconnected(request, generation.start(params))
        except ClientGone:
            record.client_disconnected = True
            return Response(status_code=499)
        except BaseException:
            await generation.close()
            raise
        if chat.stream:
            return ClosingStreamingResponse(
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


def _prompt_tokens(engine: Engine, chat: ChatCompletionRequest) -> int:
    """The prompt's size for the KV cache: the engine's own count where it keeps a cache,
    otherwise an estimate from the characters."""
    messages = chat.chat_messages()
    count = getattr(engine, "prompt_ids", None)
    if getattr(engine, "kv_token_capacity", None) is not None and count is not None:
        with contextlib.suppress(Exception):  # the engine reports a bad prompt itself, later
            return len(count(messages))
    return sum(estimate_tokens(m["content"]) + 8 for m in messages)


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
