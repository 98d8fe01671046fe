"""`SuggestionService`: the one path from a request to a response, for the CLI, app and eval.

request -> session cache -> backend stream -> revised text -> word diff -> response,
with one usage event per call and every failure turned into a `BackendError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing

from .backends import build_backends
from .backends.base import Backend, StreamEnd, TextDelta
from .cache import SessionCache, cache_key
from .config import Settings
from .contract import LlamaRequest, LlamaResponse, TokenUsage
from .diff import diff_suggestions
from .errors import (
    BackendError,
    BadBackendResponse,
    ConfigurationError,
    OutputTruncated,
    RequestRejected,
    UnexpectedFailure,
)
from .extract import extract_revised_text
from .prompts import build_messages, estimate_tokens
from .usage import Outcome, UsageEvent, UsageStore

logger = logging.getLogger(__name__)

StreamItem = TextDelta | LlamaResponse

# A finish reason other than these means the text is not the whole revision, so it is never used.
COMPLETE_FINISH_REASONS = frozenset({None, "stop", "eos", "eos_token", "end_turn", "stop_sequence"})
FINISH_REASON_ERRORS: dict[str | None, type[BackendError]] = {
    "length": OutputTruncated,  # hit the token limit
    "content_filter": RequestRejected,  # the server's filter refused the text
}


class SuggestionService:
    """Streams and caches suggestions from named backends, recording usage as it goes."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        *,
        cache: SessionCache | None = None,
        usage: UsageStore | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.backends = dict(backends)
        self.cache = cache if cache is not None else SessionCache()
        self.usage = usage
        self._clock = clock
        self._pending_usage: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(
        cls, settings: Settings, backend_names: tuple[str, ...] = ("custom", "mock")
    ) -> SuggestionService:
        """The service as configured by the environment, for the named slots."""
        return cls(
            build_backends(backend_names, settings),
            cache=SessionCache(ttl_s=settings.cache_ttl_s, max_entries=settings.cache_max_entries),
            usage=UsageStore(settings.usage_db_path),
        )

    def backend(self, name: str) -> Backend:
        try:
            return self.backends[name]
        except KeyError:
            known = ", ".join(self.backends) or "none"
            raise ConfigurationError(
                f"no backend named {name!r} is configured (configured: {known})"
            ) from None

    async def suggest(
        self, request: LlamaRequest, *, backend: str = "custom", use_cache: bool = True
    ) -> LlamaResponse:
        """The whole response at once (the stream, gathered)."""
        async with aclosing(self.stream(request, backend=backend, use_cache=use_cache)) as items:
            async for item in items:
                if isinstance(item, LlamaResponse):
                    return item
        raise UnexpectedFailure("the suggestion stream ended without a response", backend=backend)

    async def stream(
        self, request: LlamaRequest, *, backend: str = "custom", use_cache: bool = True
    ) -> AsyncGenerator[StreamItem, None]:
        """Text deltas as they arrive, then one final `LlamaResponse`.

        A cache hit yields the revised text as one delta, then the cached response; with
        `use_cache=False` the cache is neither read nor written. Raises
        `BackendError` (with a user-facing message) on any backend failure; nothing partial is
        ever cached.
        """
        target = self.backend(backend)
        started = self._clock()
        key = cache_key(request, target.name, target.model_id)
        if use_cache and (hit := self.cache.get(key)) is not None:
            response = hit.model_copy(
                update={
                    "cached": True,
                    "latency_ms": (self._clock() - started) * 1000,
                    "time_to_first_token_ms": None,
                }
            )
            self._record(request, target, "ok", response=response)
            yield TextDelta(response.revised_text)
            yield response
            return

        parts: list[str] = []
        first_token_at: float | None = None
        end: StreamEnd | None = None
        try:
            async with aclosing(target.stream(request)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        if first_token_at is None:
                            first_token_at = self._clock()
                        parts.append(event.text)
                        yield event
                    else:
                        end = event
            response = self._respond(request, target, "".join(parts), end, started, first_token_at)
        except BackendError as exc:
            exc.backend = exc.backend or target.name
            self._fail(request, target, exc, started, first_token_at, _spent(request, parts, end))
            raise
        except (asyncio.CancelledError, GeneratorExit):
            self._record(
                request,
                target,
                "cancelled",
                started=started,
                first=first_token_at,
                spent=_spent(request, parts, end),
            )
            raise
        except Exception as exc:
            logger.exception("unexpected failure in backend %s", target.name)
            failure = UnexpectedFailure(f"{type(exc).__name__}: {exc}", backend=target.name)
            self._fail(
                request, target, failure, started, first_token_at, _spent(request, parts, end)
            )
            raise failure from exc
        if use_cache:  # a bypass leaves no trace: a blind A/B answer must not surface elsewhere
            self.cache.put(key, response)
        self._record(request, target, "ok", response=response)
        yield response

    def _respond(
        self,
        request: LlamaRequest,
        target: Backend,
        raw: str,
        end: StreamEnd | None,
        started: float,
        first_token_at: float | None,
    ) -> LlamaResponse:
        if end is None:
            raise UnexpectedFailure("backend stream ended without a StreamEnd", backend=target.name)
        if end.finish_reason not in COMPLETE_FINISH_REASONS:
            error_type = FINISH_REASON_ERRORS.get(end.finish_reason, BadBackendResponse)
            raise error_type(
                f"the model stopped early (finish_reason={end.finish_reason!r})",
                backend=target.name,
                attempts=end.attempts,
            )
        revised = extract_revised_text(raw, request.text)
        if not revised.strip():
            raise BadBackendResponse(
                f"the model returned no text ({len(raw)} characters before cleanup)",
                backend=target.name,
                attempts=end.attempts,
            )
        usage = end.usage or _estimated_usage(request, raw)
        now = self._clock()
        return LlamaResponse(
            suggestions=diff_suggestions(request.text, revised, request.type),
            revised_text=revised,
            model_id=end.model_id,
            backend=target.name,
            usage=usage,
            latency_ms=(now - started) * 1000,
            time_to_first_token_ms=(
                None if first_token_at is None else (first_token_at - started) * 1000
            ),
        )

    def _fail(
        self,
        request: LlamaRequest,
        target: Backend,
        error: BackendError,
        started: float,
        first_token_at: float | None,
        spent: TokenUsage | None,
    ) -> None:
        logger.warning("suggestion failed: %s", error.log_line())
        self._record(
            request,
            target,
            "error",
            started=started,
            first=first_token_at,
            error_kind=error.kind,
            spent=spent,
        )

    def _record(
        self,
        request: LlamaRequest,
        target: Backend,
        outcome: Outcome,
        *,
        response: LlamaResponse | None = None,
        started: float | None = None,
        first: float | None = None,
        error_kind: str | None = None,
        spent: TokenUsage | None = None,
    ) -> None:
        """Queue one usage event; the write happens off the request's path."""
        if self.usage is None:
            return
        if response is not None:
            event = UsageEvent(
                backend=target.name,
                model_id=response.model_id,
                outcome=outcome,
                prompt_tokens=0 if response.cached else response.usage.prompt_tokens,
                completion_tokens=0 if response.cached else response.usage.completion_tokens,
                tokens_estimated=response.usage.estimated,
                time_to_first_token_ms=response.time_to_first_token_ms,
                latency_ms=response.latency_ms,
                cached=response.cached,
                suggestion_type=request.type,
                manuscript_id=request.manuscript_id,
            )
        else:
            now = self._clock()
            event = UsageEvent(
                backend=target.name,
                model_id=target.model_id,
                outcome=outcome,
                prompt_tokens=spent.prompt_tokens if spent else 0,
                completion_tokens=spent.completion_tokens if spent else 0,
                tokens_estimated=spent.estimated if spent else False,
                time_to_first_token_ms=None if first is None else (first - (started or now)) * 1000,
                latency_ms=(now - (started or now)) * 1000,
                error_kind=error_kind,
                suggestion_type=request.type,
                manuscript_id=request.manuscript_id,
            )
        task = asyncio.get_running_loop().create_task(self._write_usage(event))
        self._pending_usage.add(task)
        task.add_done_callback(self._pending_usage.discard)

    async def _write_usage(self, event: UsageEvent) -> None:
        assert self.usage is not None
        try:
            await asyncio.to_thread(self.usage.record, event)
        except Exception:  # usage is bookkeeping: it must never break a suggestion
            logger.exception("could not record usage in %s", self.usage.path)

    async def flush_usage(self) -> None:
        """Wait until every queued usage event is written."""
        while self._pending_usage:
            await asyncio.gather(*list(self._pending_usage))

    async def aclose(self) -> None:
        await self.flush_usage()
        for backend in self.backends.values():
            closer = getattr(backend, "aclose", None)
            if closer is not None:
                await closer()


def _estimated_usage(request: LlamaRequest, raw: str) -> TokenUsage:
    return TokenUsage(
        prompt_tokens=estimate_tokens("".join(m["content"] for m in build_messages(request))),
        completion_tokens=estimate_tokens(raw),
        estimated=True,
    )


def _spent(request: LlamaRequest, parts: list[str], end: StreamEnd | None) -> TokenUsage | None:
    """What a call that did not succeed cost, as far as it is known: the server's own counts
    when its stream ended (a truncated answer reports them), else an estimate of the prompt and
    of what streamed, flagged as estimated. None when the model produced nothing: a refused or
    unreachable call costs no tokens we could know of."""
    if end is not None and end.usage is not None:
        return end.usage
    if end is None and not parts:
        return None
    return _estimated_usage(request, "".join(parts))
