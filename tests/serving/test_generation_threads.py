"""Where the engines generate: `ThreadedStream` over an engine's long-lived `GenerationThreads`.

The transformers engine generates in threads it keeps (set up once for the model's device) rather
than in a new thread per request; the stream hands events over without waking the reader's
event loop for each one; and an engine dropped without `close()` leaves no thread or model behind.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from pathlib import Path

from modal_backend.serving.engines.base import (
    Delta,
    Emit,
    Finished,
    GenerationThreads,
    SamplingParams,
    StopFlag,
    ThreadedStream,
)
from modal_backend.serving.engines.transformers_engine import TransformersEngine
from tests.model_service_support import tiny_model_dir

MESSAGES = [{"role": "user", "content": "Passage:\nShe go to school yesterday."}]


def answer(text: str) -> list[Delta | Finished]:
    return [Delta(text), Finished("stop", 3, 1)]


async def read(stream: ThreadedStream) -> list[object]:
    try:
        return [event async for event in stream]
    finally:
        await stream.aclose()


async def test_requests_are_generated_one_after_another_in_one_long_lived_thread() -> None:
    threads = GenerationThreads(1, name="one")
    seen: list[int] = []

    def work(emit: Emit, stop: StopFlag) -> None:
        seen.append(threading.get_ident())
        for event in answer("Hi."):
            emit(event)

    try:
        for _ in range(3):
            assert await read(ThreadedStream(work, threads)) == answer("Hi.")
    finally:
        threads.close()
    assert len(set(seen)) == 1 and seen[0] != threading.get_ident()


async def test_a_reader_that_is_not_waiting_is_not_woken_for_every_event() -> None:
    threads = GenerationThreads(1)
    finished = threading.Event()

    def work(emit: Emit, stop: StopFlag) -> None:
        for index in range(100):
            emit(Delta(f"{index} "))
        emit(Finished("length", 3, 100))
        finished.set()

    stream = ThreadedStream(work, threads)
    await asyncio.to_thread(finished.wait, 10)  # all emitted before the first read
    events = await read(stream)
    threads.close()
    assert "".join(e.text for e in events if isinstance(e, Delta)) == "".join(
        f"{i} " for i in range(100)
    )
    assert isinstance(events[-1], Finished)
    assert stream.wakeups == 1  # the end only, not 101 wake-ups


async def test_a_request_closed_before_its_turn_is_never_generated() -> None:
    threads = GenerationThreads(1)
    gate = threading.Event()
    ran: list[str] = []

    def busy(emit: Emit, stop: StopFlag) -> None:
        gate.wait(10)
        emit(Finished("stop", 1, 0))

    first = ThreadedStream(busy, threads)
    second = ThreadedStream(lambda emit, stop: ran.append("second"), threads)
    closing = asyncio.create_task(second.aclose())  # waits until the one thread reaches it
    await asyncio.sleep(0.05)
    assert not closing.done()
    gate.set()
    await first.aclose()
    await asyncio.wait_for(closing, 10)
    threads.close()
    assert ran == []


def test_work_here_runs_the_jobs_in_the_calling_thread_after_its_setup() -> None:
    calls: list[str] = []
    threads = GenerationThreads(0, setup=lambda: calls.append("setup"))
    done = threading.Event()
    ran: list[int] = []

    def job() -> None:
        ran.append(threading.get_ident())
        done.set()

    threads.submit(job)
    threads.work_here(done)
    threads.close()
    assert ran == [threading.get_ident()] and calls == ["setup"]


async def test_the_engine_thread_is_set_up_and_ends_with_an_engine_dropped_unclosed(
    tmp_path: Path,
) -> None:
    import torch

    engine = TransformersEngine.load(tiny_model_dir(tmp_path, "rambling"), model_id="dropped")
    events = await read(engine.stream(MESSAGES, SamplingParams(max_tokens=6)))  # type: ignore[arg-type]
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.completion_tokens == 6
    deltas = [e for e in events if isinstance(e, Delta)]
    assert sum(d.tokens for d in deltas) <= 6 and all(d.tokens >= 1 for d in deltas)
    grad: list[bool] = []
    checked = threading.Event()

    def check() -> None:
        grad.append(torch.is_grad_enabled())
        checked.set()

    engine.threads.submit(check)
    await asyncio.to_thread(checked.wait, 10)
    assert grad == [False]  # the thread's own set-up turned autograd off, once
    (thread,) = [t for t in threading.enumerate() if t.name == "generate-dropped"]
    model = weakref.ref(engine.model)
    del engine, events
    gc.collect()
    await asyncio.to_thread(thread.join, 10)  # its jobs queue was told to end
    assert not thread.is_alive()
    assert model() is None
