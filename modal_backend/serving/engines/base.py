"""The engine seam: chat messages and sampling settings in, text deltas and exact usage out.

Engines generate in a worker thread (both libraries block). `ThreadedStream` bridges that thread to
an async iterator, and closing it (a client that went away) sets the stop flag that the
worker checks between tokens, so an abandoned request stops costing compute.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from suggestions.wire import ChatMessage

Message = ChatMessage
"""The wire's chat message: what the engines are given."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Greedy (temperature 0) unless asked: the same text gives the same suggestions."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Delta:
    text: str
    tokens: int = 1
    """Tokens behind this text (more than one when speculation accepts drafts); the server's
    admission learns the engine's speed from them."""


@dataclass(frozen=True, slots=True)
class Finished:
    """The end of a generation: why it stopped and the tokenizer's own counts."""

    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int


EngineEvent = Delta | Finished


@dataclass
class AdapterState:
    """What `/health` says of one adapter id: the version serving and the last load error."""

    version: str
    path: str
    error: str | None = None
    swaps: int = 0


class EngineError(RuntimeError):
    """The engine failed on a request it accepted (the server answers 500)."""


class PromptTooLong(EngineError):
    """The prompt and the requested output do not fit the model's context (the server answers
    413)."""


class EngineStream(Protocol):
    def __aiter__(self) -> EngineStream: ...

    async def __anext__(self) -> EngineEvent: ...

    async def aclose(self) -> None:
        """Stop generating (if still going) and return once the engine is idle."""
        ...


class Engine(Protocol):
    """What the server needs from an inference engine."""

    model_id: str
    """The model a request gets when it names none (or an alias)."""
    version: str
    max_concurrency: int
    """How many generations the engine runs at once; the server queues the rest."""

    def models(self) -> dict[str, str]:
        """Every model id this engine answers as, with its version, the default first. The
        versions may change while it runs (a promoted adapter is swapped in)."""
        ...

    def stream(
        self, messages: list[Message], params: SamplingParams, model: str | None = None
    ) -> EngineStream:
        """Deltas, then exactly one `Finished`. `aclose()` stops generation early. `model` is
        one of `models()`, or None for the default."""
        ...

    def status(self) -> dict[str, Any]:
        """What `/health` adds about the engine (adapters, their load errors); may be empty."""
        ...

    def close(self) -> None: ...


class SingleModel:
    """The `models` and `status` of an engine that serves one model id."""

    model_id: str
    version: str

    def models(self) -> dict[str, str]:
        return {self.model_id: self.version}

    def status(self) -> dict[str, Any]:
        return {}


@dataclass
class StopFlag:
    """Set by the consumer when it no longer wants tokens; read by the worker between tokens."""

    _event: threading.Event = field(default_factory=threading.Event)

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


Emit = Callable[[EngineEvent], None]
_END = object()


class ThreadedStream:
    """Runs `work(emit, stop)` in a thread and iterates over what it emits.

    `aclose()` sets the stop flag and waits for the thread to finish, however often it is called
    and even after the reading task was cancelled, so the engine is idle again by the time the
    caller gives back its slot.
    """

    def __init__(self, work: Callable[[Emit, StopFlag], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._finished = asyncio.Event()
        self._stop = StopFlag()
        self._work = work
        self._ended = False
        threading.Thread(target=self._run, name="engine-generate", daemon=True).start()

    def _emit(self, event: EngineEvent) -> None:
        self._hand_over(self._queue.put_nowait, event)

    def _hand_over(self, callback: Callable[..., None], *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the reader's loop is closed: nobody is listening any more
            self._stop.set()

    def _run(self) -> None:
        try:
            self._work(self._emit, self._stop)
        except BaseException as exc:  # handed to the reader, which raises it as EngineError
            self._hand_over(self._queue.put_nowait, exc)
        finally:
            self._hand_over(self._end)

    def _end(self) -> None:
        self._queue.put_nowait(_END)
        self._finished.set()

    def __aiter__(self) -> ThreadedStream:
        return self

    async def __anext__(self) -> EngineEvent:
        if self._ended:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _END:
            self._ended = True
            raise StopAsyncIteration
        if isinstance(item, EngineError):
            raise item
        if isinstance(item, BaseException):
            raise EngineError(f"generation failed: {item}") from item
        return item  # type: ignore[return-value]

    async def aclose(self) -> None:
        self._stop.set()
        await self._finished.wait()
