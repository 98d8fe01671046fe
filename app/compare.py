"""Several backends answering one request at once, as a stream of column snapshots.

Each backend runs in its own task, so a slow column never holds a fast one back, and a failing
one only fails itself. Closing the stream (the stop button, a closed tab) cancels every task,
which closes each upstream HTTP stream, which stops generation on the model server.

`ModelVersions` asks a backend's server which version of its model it serves, so a blind vote
can say which version answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any, Literal

import httpx

from suggestions.backends import Backend, ChatBackend
from suggestions.backends.base import TextDelta
from suggestions.contract import LlamaRequest, LlamaResponse
from suggestions.errors import BackendError
from suggestions.prompts import estimate_tokens
from suggestions.service import SuggestionService

from .votes import UNKNOWN_VERSION, UNVERSIONED

logger = logging.getLogger(__name__)

Status = Literal["waiting", "streaming", "done", "failed", "cancelled"]
FINAL_STATUSES: frozenset[Status] = frozenset({"done", "failed", "cancelled"})
# While anything is still running, the clocks in the UI move at least this often.
TICK_S = 0.1
LOST = "This backend stopped without an answer."


@dataclass(frozen=True)
class Column:
    """One backend's progress on one request, as the UI shows it."""

    backend: str
    label: str
    model_id: str
    status: Status = "waiting"
    text: str = ""
    response: LlamaResponse | None = None
    error: str | None = None
    ttft_ms: float | None = None
    elapsed_ms: float = 0.0
    version: str | None = None  # the model's version, once looked up (the blind tab does)

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def tokens_per_s(self) -> float | None:
        """Decode speed: server-counted tokens at the end, an estimate from the text before."""
        if self.ttft_ms is None:
            return None
        if self.response is not None and self.response.cached:
            return None
        tokens = (
            self.response.usage.completion_tokens
            if self.response is not None
            else estimate_tokens(self.text)
        )
        decode_s = (self.elapsed_ms - self.ttft_ms) / 1000
        return tokens / decode_s if decode_s > 0.05 and tokens > 1 else None


@dataclass(frozen=True)
class _Event:
    index: int
    delta: str | None = None
    response: LlamaResponse | None = None
    error: str | None = None


async def stream_columns(
    service: SuggestionService,
    backends: Sequence[str],
    request: LlamaRequest,
    *,
    use_cache: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> AsyncGenerator[tuple[Column, ...], None]:
    """Snapshots of every column, yielded whenever something changed (and on a clock tick).

    The last snapshot has every column finished. Updates that arrive together are merged into
    one snapshot so a fast stream does not flood a slow browser.
    """
    started = clock()
    columns = [
        Column(
            backend=name,
            label=service.backend(name).label,
            model_id=service.backend(name).model_id,
        )
        for name in backends
    ]
    events: asyncio.Queue[_Event] = asyncio.Queue()
    tasks = [
        asyncio.create_task(_run_one(service, name, index, request, use_cache, events))
        for index, name in enumerate(backends)
    ]
    try:
        yield tuple(columns)
        while not all(column.finished for column in columns):
            batch: list[_Event] = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    batch.append(await events.get())
            while not events.empty():
                batch.append(events.get_nowait())
            now_ms = (clock() - started) * 1000
            for event in batch:
                columns[event.index] = _apply(columns[event.index], event, now_ms)
            for index, task in enumerate(tasks):  # a task that ended without a word failed
                if task.done() and events.empty() and not columns[index].finished:
                    columns[index] = _apply(columns[index], _Event(index, error=LOST), now_ms)
            columns = [
                column if column.finished else replace(column, elapsed_ms=now_ms)
                for column in columns
            ]
            yield tuple(columns)
    finally:
        for task in tasks:
            task.cancel()
        # Wait, so each upstream stream is really closed before the caller moves on. A cancel
        # aimed at the caller while waiting still reaches it.
        await asyncio.gather(*tasks, return_exceptions=True)


def _apply(column: Column, event: _Event, now_ms: float) -> Column:
    if event.delta is not None:
        return replace(
            column,
            status="streaming",
            text=column.text + event.delta,
            ttft_ms=column.ttft_ms if column.ttft_ms is not None else now_ms,
        )
    if event.response is not None:
        response = event.response
        return replace(
            column,
            status="done",
            response=response,
            model_id=response.model_id,
            text=response.revised_text,
            ttft_ms=response.time_to_first_token_ms if not response.cached else None,
            elapsed_ms=response.latency_ms,
        )
    return replace(column, status="failed", error=event.error, elapsed_ms=now_ms)


async def _run_one(
    service: SuggestionService,
    backend: str,
    index: int,
    request: LlamaRequest,
    use_cache: bool,
    events: asyncio.Queue[_Event],
) -> None:
    try:
        async with aclosing(
            service.stream(request, backend=backend, use_cache=use_cache)
        ) as stream:
            async for item in stream:
                if isinstance(item, TextDelta):
                    events.put_nowait(_Event(index, delta=item.text))
                else:
                    events.put_nowait(_Event(index, response=item))
    except BackendError as exc:
        logger.warning("compare: %s", exc.log_line())
        events.put_nowait(_Event(index, error=exc.user_message))
    except Exception:  # a bug in one column must not take the others down
        logger.exception("compare: backend %s failed unexpectedly", backend)
        events.put_nowait(_Event(index, error="This backend failed unexpectedly."))


# --- which version answered -----------------------------------------------------------------

VERSION_TIMEOUT_S = 5.0


class ModelVersions:
    """Each model's version, from `GET /v1/models/{id}` on the backend's own server, asked with
    the backend's own key and headers (`ChatBackend.model_card`).

    Never cached: a promotion swaps the served adapter without a restart, and a cached version
    would credit the new one's votes to the old. A backend that is not a chat server (the mock)
    or a server that names no version gives `UNVERSIONED`; a failed lookup gives
    `UNKNOWN_VERSION` (logged), never an error.
    """

    def __init__(self, *, timeout_s: float = VERSION_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s

    async def version(self, backend: Backend, model_id: str | None = None) -> str:
        """The version the backend's server serves `model_id` (the backend's own by default)."""
        if not isinstance(backend, ChatBackend):
            return UNVERSIONED
        model = model_id or backend.model_id
        try:
            return _version_of(await backend.model_card(model, timeout_s=self.timeout_s))
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning("version of %s on %s unknown: %s", model, backend.name, _short(exc))
            return UNKNOWN_VERSION

    async def of(
        self, service: SuggestionService, names: Sequence[str], models: Sequence[str] = ()
    ) -> tuple[str, ...]:
        """The versions of several backends at once (`models`: the ids that answered, if known)."""
        ids: list[str | None] = list(models) or [None] * len(names)
        lookups = (self.version(service.backend(n), m) for n, m in zip(names, ids, strict=True))
        return tuple(await asyncio.gather(*lookups))


def settled(
    columns: Sequence[Column], before: Sequence[str], after: Sequence[str]
) -> tuple[Column, ...]:
    """Each column with the version its model had before and after answering; a promotion in
    between leaves the answer's version unknown."""
    return tuple(
        replace(column, version=first if first == last else UNKNOWN_VERSION)
        for column, first, last in zip(columns, before, after, strict=True)
    )


def _version_of(card: Any) -> str:
    if not isinstance(card, dict):
        raise ValueError("the model card is not a JSON object")
    version = card.get("version")
    if version is None or (isinstance(version, str) and not version.strip()):
        return UNVERSIONED
    if not isinstance(version, str):
        raise ValueError(f"the model card's version is {version!r}, not text")
    return version.strip()


def _short(exc: Exception) -> str:
    """The error's first line, for the log: httpx's status errors add a help link after it."""
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
