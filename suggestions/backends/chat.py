"""`ChatBackend`: any OpenAI-compatible `/v1/chat/completions` server, streamed over SSE.

Used for the custom model on Modal, the baseline, and the local model server. Transport errors are
translated into `BackendError`s at one boundary (`_translated`), with the key kept out of every
message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError

from ..contract import LlamaRequest, TokenUsage
from ..errors import (
    AuthenticationFailed,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadBackendResponse,
    RateLimited,
    RequestRejected,
    StreamInterrupted,
)
from ..prompts import ChatMessage, build_messages, max_output_tokens
from ..retry import RETRYABLE_STATUS, RetryPolicy, parse_retry_after
from ..wire import (
    DONE,
    ChunkFields,
    ServerReportedError,
    WireFormatError,
    read_chunk,
    read_completion,
    read_error_message,
)
from .base import BackendEvent, StreamEnd, TextDelta

logger = logging.getLogger(__name__)

PromptBuilder = Callable[[LlamaRequest], list[ChatMessage]]


def chat_completions_url(base_url: str) -> str:
    """Accept a server root, a `/v1` root, or the full endpoint."""
    url = base_url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return f"{url}/chat/completions"
    return f"{url}/v1/chat/completions"


class ChatBackend:
    """Streams suggestions from an OpenAI-compatible chat-completions server."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        model: str,
        label: str,
        api_key: str | None = None,
        key_env_var: str = "MODAL_API_KEY",
        build_prompt: PromptBuilder = build_messages,
        timeout: httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        streaming: bool = True,
        temperature: float = 0.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.model_id = model
        self.label = label
        self.url = chat_completions_url(base_url)
        self.key_env_var = key_env_var
        self.streaming = streaming
        self.temperature = temperature
        self.retry = retry or RetryPolicy()
        self._api_key = api_key
        self._build_prompt = build_prompt
        self._timeout = timeout or httpx.Timeout(30.0, connect=5.0)
        self._transport = transport
        self._sleep = sleep
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"ChatBackend(name={self.name!r}, url={self.url!r}, model={self.model_id!r})"

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def stream(self, request: LlamaRequest) -> AsyncGenerator[BackendEvent, None]:
        payload: dict[str, Any] = {
            "model": self.model_id,
            "messages": self._build_prompt(request),
            "max_tokens": max_output_tokens(request),
            "temperature": self.temperature,
            "stream": self.streaming,
        }
        if self.streaming:
            payload["stream_options"] = {"include_usage": True}
        response, attempts = await self._open(payload)
        try:
            with self._translated(attempts):
                content_type = response.headers.get("content-type", "")
                if self.streaming and "text/event-stream" in content_type:
                    async for event in self._read_sse(response, attempts):
                        yield event
                else:
                    fields = read_completion(await response.aread())
                    if fields.content:
                        yield TextDelta(fields.content)
                    yield self._end(fields, fields.usage, attempts)
        finally:
            await response.aclose()

    # --- Opening the response, with retries --------------------------------------------------

    async def _open(self, payload: dict[str, Any]) -> tuple[httpx.Response, int]:
        client = self._get_client()
        headers = {"Accept": "text/event-stream" if self.streaming else "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                request = client.build_request("POST", self.url, json=payload, headers=headers)
                response = await client.send(request, stream=True)
            except httpx.TimeoutException as exc:
                if not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
                    raise BackendTimeout(
                        f"no response from {self.url} within {self._timeout.read}s",
                        backend=self.name,
                        attempts=attempt,
                    ) from exc
                failure: BackendError = BackendUnavailable(
                    f"could not connect to {self.url}: {type(exc).__name__}",
                    backend=self.name,
                    attempts=attempt,
                )
            except httpx.TransportError as exc:
                failure = BackendUnavailable(
                    f"could not reach {self.url}: {type(exc).__name__}: {exc}",
                    backend=self.name,
                    attempts=attempt,
                )
            else:
                if response.status_code < 400:
                    return response, attempt
                failure = await self._status_failure(response, attempt)
                if response.status_code not in RETRYABLE_STATUS:
                    raise failure
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            delay = self.retry.delay_before_retry(attempt, retry_after)
            if delay is None:
                raise failure
            logger.info("retrying %s in %.2fs after %s", self.name, delay, failure.log_line())
            await self._sleep(delay)

    async def _status_failure(self, response: httpx.Response, attempt: int) -> BackendError:
        status = response.status_code
        try:
            message = self._redact(read_error_message(await response.aread()))
        except httpx.HTTPError as exc:
            message = f"(error body unreadable: {type(exc).__name__})"
        finally:
            await response.aclose()
        detail = f"{self.url} answered {status}: {message}"
        error_type: type[BackendError]
        if status in (401, 403):
            error_type = AuthenticationFailed
            detail += f" (check {self.key_env_var})"
        elif status == 429:
            error_type = RateLimited
        elif status in (400, 413, 422):
            error_type = RequestRejected
        else:
            error_type = BackendUnavailable
        return error_type(detail, backend=self.name, status_code=status, attempts=attempt)

    # --- Reading the body --------------------------------------------------------------------

    async def _read_sse(
        self, response: httpx.Response, attempts: int
    ) -> AsyncGenerator[BackendEvent, None]:
        finish_reason: str | None = None
        usage: dict[str, int] | None = None
        model: str | None = None
        done = False
        async with aclosing(EventSource(response).aiter_sse()) as events:
            async for event in events:
                if event.data == DONE:
                    done = True
                    break
                if not event.data:
                    continue
                fields = read_chunk(event.data)
                if fields.content:
                    yield TextDelta(fields.content)
                finish_reason = fields.finish_reason or finish_reason
                usage = fields.usage or usage
                model = fields.model or model
        if not done and finish_reason is None:
            raise StreamInterrupted(
                f"stream from {self.url} ended without [DONE] or a finish reason",
                backend=self.name,
                attempts=attempts,
            )
        yield self._end(ChunkFields("", finish_reason, usage, model), usage, attempts)

    def _end(self, fields: ChunkFields, usage: dict[str, int] | None, attempts: int) -> StreamEnd:
        return StreamEnd(
            model_id=fields.model or self.model_id,
            finish_reason=fields.finish_reason,
            usage=(
                TokenUsage(
                    prompt_tokens=usage["prompt_tokens"],
                    completion_tokens=usage["completion_tokens"],
                )
                if usage
                else None
            ),
            attempts=attempts,
        )

    @contextmanager
    def _translated(self, attempts: int) -> Iterator[None]:
        """The one place where transport and format errors become BackendErrors."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise BackendTimeout(
                f"{self.url} stopped sending for {self._timeout.read}s mid-answer",
                backend=self.name,
                attempts=attempts,
            ) from exc
        except httpx.TransportError as exc:
            raise StreamInterrupted(
                f"connection to {self.url} broke mid-answer: {type(exc).__name__}: {exc}",
                backend=self.name,
                attempts=attempts,
            ) from exc
        except ServerReportedError as exc:
            raise BackendUnavailable(
                self._redact(str(exc)), backend=self.name, attempts=attempts
            ) from exc
        except (WireFormatError, SSEError) as exc:
            raise BadBackendResponse(
                f"unreadable answer from {self.url}: {self._redact(str(exc))}",
                backend=self.name,
                attempts=attempts,
            ) from exc

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, transport=self._transport)
        return self._client
