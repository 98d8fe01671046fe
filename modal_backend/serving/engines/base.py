"""The engine seam: chat messages and sampling settings in, text deltas and exact usage out.

Engines generate in a worker thread (both libraries block): one of the engine's own long-lived
`GenerationThreads`, or a thread per stream. `ThreadedStream` bridges that thread to an async
iterator, and closing it (a client that went away) sets the stop flag that the worker checks
between tokens, so an abandoned request stops costing compute.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from suggestions.wire import ChatMessage

logger = logging.getLogger(__name__)

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


class GenerationThreads:
    """Long-lived threads that run an engine's generations, one job after another each.

    An engine that keeps its own threads pays a thread's start-up once, not per request: what
    torch and CUDA keep per thread (the grad mode and current device, which `setup` sets; what
    the libraries make on a thread's first use) is made once in the thread that generates.
    `size` threads run at most `size` jobs at once; more wait their turn. With `size=0` no
    thread is started and the jobs wait for `work_here`, which runs them in the calling thread
    (the main thread of a process whose server runs elsewhere).

    The threads hold no reference to the engine between jobs, and stop once this object is
    closed or collected.
    """

    def __init__(
        self,
        size: int = 1,
        *,
        name: str = "engine-generate",
        setup: Callable[[], None] | None = None,
    ) -> None:
        self.size = max(0, size)
        self.name = name
        self._setup = setup
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._close = weakref.finalize(self, _stop_threads, self._jobs, self._threads)

    def submit(self, job: Callable[[], None]) -> None:
        """Run `job` in one of the threads, once one is free. `job` must not raise."""
        with self._lock:
            if not self._close.alive:
                raise RuntimeError(f"{self.name}: the generation threads are closed")
            if not self._threads and self.size:
                for index in range(self.size):
                    thread = threading.Thread(
                        target=_work_through,
                        args=(self._jobs, self._setup),
                        name=f"{self.name}-{index}" if self.size > 1 else self.name,
                        daemon=True,
                    )
                    self._threads.append(thread)
                    thread.start()
            self._jobs.put(job)

    def work_here(self, until: threading.Event) -> None:
        """Run submitted jobs in this thread until `until` is set (checked between jobs)."""
        if self._setup is not None:
            self._setup()
        while not until.is_set():
            try:
                job = self._jobs.get(timeout=0.05)
            except queue.Empty:
                continue
            if job is None:
                return
            _run_job(job)
            del job

    def close(self) -> None:
        """Let the threads end once their current job is done; later submits are refused."""
        with self._lock:
            self._close()


def _stop_threads(
    jobs: queue.SimpleQueue[Callable[[], None] | None], threads: list[threading.Thread]
) -> None:
    for _ in range(max(1, len(threads))):  # one for each thread, or for `work_here`
        jobs.put(None)


def _work_through(
    jobs: queue.SimpleQueue[Callable[[], None] | None], setup: Callable[[], None] | None
) -> None:
    if setup is not None:
        try:
            setup()
        except Exception:
            logger.exception("setting up a generation thread failed; generating without it")
    while True:
        job = jobs.get()
        if job is None:
            return
        _run_job(job)
        del job  # nothing of a finished request stays referenced while the thread waits


def _run_job(job: Callable[[], None]) -> None:
    try:
        job()
    except Exception:  # a job hands its own errors to its reader; this is a last resort
        logger.exception("a generation job failed outside its stream")


class ThreadedStream:
    """Runs `work(emit, stop)` in a worker thread and iterates over what it emits.

    The worker is one of `threads` (an engine's long-lived `GenerationThreads`), or a thread of
    its own when none are given. Events pass through a locked deque, and the reader's event
    loop is woken only when the reader is waiting for one (and once at the end), so a worker
    that emits faster than the reader reads does not wake the loop for every event.

    `aclose()` sets the stop flag and waits for the work to finish, however often it is called
    and even after the reading task was cancelled, so the engine is idle again by the time the
    caller gives back its slot.
    """

    def __init__(
        self, work: Callable[[Emit, StopFlag], None], threads: GenerationThreads | None = None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._pending: deque[object] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._finished = asyncio.Event()
        self._stop = StopFlag()
        self._work: Callable[[Emit, StopFlag], None] | None = work
        self._ended = False
        self.wakeups = 0
        """Times the worker woke the reader's event loop (a diagnostic)."""
        if threads is None:
            threading.Thread(target=self._run, name="engine-generate", daemon=True).start()
        else:
            threads.submit(self._run)

    def _emit(self, event: EngineEvent) -> None:
        self._put(event)

    def _put(self, item: object, *, last: bool = False) -> None:
        """Called by the worker: queue `item`, and wake the reader if it is waiting."""
        with self._lock:
            self._pending.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is None and not last:
            if self._loop.is_closed():  # nobody is listening any more
                self._stop.set()
            return
        self.wakeups += 1
        try:
            self._loop.call_soon_threadsafe(self._wake, waiter, last)
        except RuntimeError:  # the reader's loop is closed: nobody is listening any more
            self._stop.set()

    def _wake(self, waiter: asyncio.Future[None] | None, last: bool) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if last:
            self._finished.set()

    def _run(self) -> None:
        try:
            work = self._work
            if work is not None and not self._stop.is_set():
                work(self._emit, self._stop)
        except BaseException as exc:  # handed to the reader, which raises it as EngineError
            self._put(exc)
        finally:
            self._work = None
            self._put(_END, last=True)

    def __aiter__(self) -> ThreadedStream:
        return self

    async def __anext__(self) -> EngineEvent:
        if self._ended:
            raise StopAsyncIteration
        while True:
            with self._lock:
                if self._pending:
                    item = self._pending.popleft()
                    break
                waiter: asyncio.Future[None] = self._loop.create_future()
                self._waiter = waiter
            await waiter
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
