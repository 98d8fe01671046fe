"""`ChatBackend`: any OpenAI-compatible `/v1/chat/completions` server, streamed over SSE.

Used for the custom model on Modal, the baseline, and the local model server. Transport and format
errors become `BackendError`s at one boundary (`_translated`), and every error detail passes
through `_error`, which takes the key out before anything is logged or shown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

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
    UnexpectedFailure,
)
from ..keys import read_api_key
from ..prompts import build_messages, max_output_tokens
from ..retry import RETRYABLE_STATUS, RetryPolicy, parse_retry_after
from ..wire import (
    DONE,
    ChatCompletionRequest,
    ChatMessage,
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
_T = TypeVar("_T")
DEFAULT_TOTAL_TIMEOUT_S = 120.0  # a whole answer, retries included; a stalled read fails sooner
MAX_DETAIL_CHARS = 500


def chat_completions_url(base_url: str) -> str:
    """Accept a server root, a `/v1` root, or the full endpoint."""
    url = base_url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return f"{url}/chat/completions"
    return f"{url}/v1/chat/completions"


@dataclass
class _Call:
    """One call's running state: attempts so far, and its deadline (event-loop time).

    The deadline is one timer per call rather than a timeout per streamed event (which costs
    more than parsing the event): when it fires during a read, it cancels that read, which
    `read` turns into TimeoutError; when it fires between reads, the next read raises at once.
    """

    deadline: float
    attempts: int = 0
    expired: bool = False
    _reader: asyncio.Task[Any] | None = None
    _timer: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        self._timer = asyncio.get_running_loop().call_at(self.deadline, self._expire)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _expire(self) -> None:
        self.expired = True
        if self._reader is not None:
            self._reader.cancel()

    async def read(self, pending: Awaitable[_T]) -> _T:
        if self.expired:
            raise TimeoutError
        self._reader = task = asyncio.current_task()
        try:
            return await pending
        except asyncio.CancelledError:
            if self.expired and task is not None and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            self._reader = None


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
        total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        streaming: bool = True,
        temperature: float = 0.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.model_id = model
        self.label = label
        self.url = chat_completions_url(base_url)
        self.key_env_var = key_env_var
        self.streaming = streaming
        self.temperature = temperature
        self.total_timeout_s = total_timeout_s
        self.retry = retry or RetryPolicy()
        self._api_key = read_api_key(api_key, key_env_var)
        self._extra_headers = dict(extra_headers or {})
        self._secrets = [s for s in (self._api_key, *self._extra_headers.values()) if s]
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

    async def model_card(self, model: str | None = None, *, timeout_s: float = 5.0) -> Any:
        """What this backend's server says of a model (`GET /v1/models/{id}`, this backend's
        model by default), asked with the same key and headers as its answers. Raises
        httpx.HTTPError or ValueError (a body that is not JSON)."""
        base = self.url.removesuffix("/chat/completions")
        url = f"{base}/models/{quote(model or self.model_id, safe='/')}"
        # A client of its own: a lookup is rare, and must not hold the answers' pooled
        # connections (or their event loop) after it.
        async with httpx.AsyncClient(timeout=timeout_s, transport=self._transport) as client:
            response = await client.get(url, headers=self._headers())
        response.raise_for_status()
        return response.json()

    def _headers(self) -> dict[str, str]:
        headers = dict(self._extra_headers)
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    async def stream(self, request: LlamaRequest) -> AsyncGenerator[BackendEvent, None]:
        payload = ChatCompletionRequest.model_validate(
            {
                "model": self.model_id,
                "messages": self._build_prompt(request),
                "max_tokens": max_output_tokens(request),
                "temperature": self.temperature,
                "stream": self.streaming,
                **({"stream_options": {"include_usage": True}} if self.streaming else {}),
            }
        ).body()
        call = _Call(deadline=asyncio.get_running_loop().time() + self.total_timeout_s)
        call.arm()
        response: httpx.Response | None = None
        try:
            with self._translated(call):
                response = await call.read(self._open(payload, call))
                content_type = response.headers.get("content-type", "")
                if self.streaming and "text/event-stream" in content_type:
                    async with aclosing(self._read_sse(response, call)) as events:
                        async for event in events:
                            yield event
                else:
                    fields = read_completion(await call.read(response.aread()))
                    if fields.content:
                        yield TextDelta(fields.content)
                    yield self._end(fields, call)
        finally:
            call.disarm()
            if response is not None:
                await response.aclose()

    # --- Opening the response, with retries --------------------------------------------------

    async def _open(self, payload: dict[str, Any], call: _Call) -> httpx.Response:
        client = self._get_client()
        headers = {
            **self._headers(),
            "Accept": "text/event-stream" if self.streaming else "application/json",
        }
        while True:
            call.attempts += 1
            retry_after: float | None = None
            try:
                request = client.build_request("POST", self.url, json=payload, headers=headers)
                response = await client.send(request, stream=True)
            except httpx.LocalProtocolError as exc:  # our own request is malformed: no retry
                raise self._error(
                    UnexpectedFailure, f"request not sent: {type(exc).__name__}", call
                ) from exc
            except (httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ConnectError) as exc:
                failure = self._error(
                    BackendUnavailable, f"could not connect to {self.url}: {exc!r}", call
                )
            except httpx.TimeoutException as exc:
                raise self._error(
                    BackendTimeout,
                    f"no response within the {self._timeout.read}s read timeout",
                    call,
                ) from exc
            except httpx.TransportError as exc:  # dropped before any response: safe to retry
                failure = self._error(
                    BackendUnavailable, f"could not reach {self.url}: {exc!r}", call
                )
            else:
                if response.status_code < 300:
                    return response
                failure = await self._status_failure(response, call)
                if response.status_code not in RETRYABLE_STATUS:
                    raise failure
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            delay = self.retry.delay_before_retry(call.attempts, retry_after)
            if delay is None or asyncio.get_running_loop().time() + delay >= call.deadline:
                raise failure
            logger.info("retrying %s in %.2fs after %s", self.name, delay, failure.log_line())
            await self._sleep(delay)

    async def _status_failure(self, response: httpx.Response, call: _Call) -> BackendError:
        status = response.status_code
        try:
            message = read_error_message(await response.aread())
        except (httpx.HTTPError, RecursionError) as exc:
            message = f"(error body unreadable: {type(exc).__name__})"
        finally:
            await response.aclose()
        detail = f"{self.url} answered {status}: {message}"
        error_type: type[BackendError] = BackendUnavailable
        if 300 <= status < 400:
            location = response.headers.get("location", "?")
            detail = f"{self.url} redirects ({status}) to {location}: configure the final URL"
        elif status in (401, 403):
            error_type = AuthenticationFailed
            detail += f" (check {self.key_env_var})"
        elif status == 429:
            error_type = RateLimited
        elif status in (400, 413, 422):
            error_type = RequestRejected
        return self._error(error_type, detail, call, status_code=status)

    # --- Reading the body --------------------------------------------------------------------

    async def _read_sse(
        self, response: httpx.Response, call: _Call
    ) -> AsyncGenerator[BackendEvent, None]:
        finish_reason: str | None = None
        usage: dict[str, int] | None = None
        model: str | None = None
        done = False
        async with aclosing(EventSource(response).aiter_sse()) as events:
            while True:
                try:  # under the call's deadline, which keep-alive comments cannot stretch
                    event = await call.read(anext(events))
                except StopAsyncIteration:
                    break
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
            raise self._error(
                StreamInterrupted, "stream ended without [DONE] or a finish reason", call
            )
        yield self._end(ChunkFields("", finish_reason, usage, model), call)

    def _end(self, fields: ChunkFields, call: _Call) -> StreamEnd:
        usage = fields.usage
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
            attempts=call.attempts,
        )

    @contextmanager
    def _translated(self, call: _Call) -> Iterator[None]:
        """The one place where transport and format errors become BackendErrors."""
        try:
            yield
        except TimeoutError as exc:  # the call's total deadline
            raise self._error(
                BackendTimeout, f"no complete answer within {self.total_timeout_s}s", call
            ) from exc
        except httpx.TimeoutException as exc:
            raise self._error(
                BackendTimeout, f"stopped sending for {self._timeout.read}s mid-answer", call
            ) from exc
        except httpx.TransportError as exc:
            raise self._error(
                StreamInterrupted, f"connection broke mid-answer: {exc!r}", call
            ) from exc
        except httpx.DecodingError as exc:  # a body its Content-Encoding cannot decode
            raise self._error(BadBackendResponse, f"undecodable answer: {exc!r}", call) from exc
        except ServerReportedError as exc:
            raise self._error(BackendUnavailable, str(exc), call) from exc
        except (WireFormatError, SSEError) as exc:
            raise self._error(BadBackendResponse, f"unreadable answer: {exc}", call) from exc

    def _error(
        self,
        error_type: type[BackendError],
        detail: str,
        call: _Call,
        *,
        status_code: int | None = None,
    ) -> BackendError:
        """Every error this backend raises is made here: key removed first, then shortened."""
        for secret in self._secrets:
            for form in {secret, repr(secret)[1:-1]}:
                detail = detail.replace(form, "[redacted]")
        if len(detail) > MAX_DETAIL_CHARS:
            detail = detail[:MAX_DETAIL_CHARS] + "..."
        return error_type(
            detail, backend=self.name, status_code=status_code, attempts=max(call.attempts, 1)
        )

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, transport=self._transport)
        return self._client
