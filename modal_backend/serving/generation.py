"""One admitted request from its first event to its last byte: `Generation` streams it (SSE) or
collects it (JSON), feeds `Admission` the engine's speed as tokens arrive, and gives the request's
place back exactly once, however it ends: finished, failed, or abandoned by its client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

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

from .admission import Admission, Ticket
from .engines.base import (
    Delta,
    Engine,
    EngineError,
    EngineEvent,
    EngineStream,
    Finished,
    PromptTooLong,
)
from .openai_schema import ApiError
from .request_log import RequestRecord, ms_since

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Generation:
    """One admitted request: its engine stream, timing, and the place it must give back."""

    def __init__(
        self,
        engine: Engine,
        model: str,
        chat: ChatCompletionRequest,
        record: RequestRecord,
        admission: Admission,
        ticket: Ticket,
    ) -> None:
        self.engine = engine
        self.model = model
        self.chat = chat
        self.record = record
        self.admission = admission
        self.ticket = ticket
        self.events: EngineStream | None = None
        self.closed = False

    async def start(self, params: Any) -> EngineEvent:
        """The first event, read before the response starts, so that a request the engine
        refuses (a prompt longer than its context) still gets an error status. Closes the
        generation (giving its place back) if anything goes wrong, the client leaving
        included."""
        try:
            self.events = self.engine.stream(self.chat.chat_messages(), params, self.model)
            return await self._next()
        except PromptTooLong as exc:
            await self.close()
            raise ApiError(413, str(exc), code="context_length_exceeded") from exc
        except EngineError as exc:
            await self.close()
            raise engine_failed(exc) from exc
        except BaseException:
            await self.close()
            raise

    async def _next(self) -> EngineEvent:
        assert self.events is not None
        try:
            event = await anext(self.events)
        except StopAsyncIteration:
            raise EngineError("the engine ended without a finish event") from None
        if isinstance(event, Delta):
            if self.record.ttft_ms is None:
                self.record.ttft_ms = ms_since(self.record.started)
            self.admission.tokens(self.ticket, event.tokens)
        else:
            self.admission.finished(self.ticket, event.completion_tokens)
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
        gone = asyncio.create_task(disconnected(request))
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
            raise engine_failed(exc) from exc
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
        """Stop the engine (if it is still generating) and give the place back, exactly once."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.events is not None:
                await self.events.aclose()
        finally:
            self.admission.release(self.ticket)


class ClosingStreamingResponse(StreamingResponse):
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


async def disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class ClientGone(Exception):
    """The client disconnected before its answer started."""


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """`work`'s result, or `_ClientGone` (with `work` cancelled) if the client leaves first:
    a request that waits for a place or a first token must not hold either for nobody."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientGone
    return task.result()


def engine_failed(exc: EngineError) -> ApiError:
    logger.error("generation failed: %s", exc, exc_info=exc)
    return ApiError(
        500, "the model failed on this request", type="server_error", code="engine_error"
    )
