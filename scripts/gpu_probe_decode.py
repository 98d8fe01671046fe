"""The probe's `decode` section: one greedy generation run every way that could explain why the
transformers engine decodes slower in a worker thread than in the main thread (see
`gpu_probe.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any


class Meter:
    """Wall time, and for the calling thread its CPU time, context switches and page faults."""

    def __enter__(self) -> Meter:
        self.started = time.perf_counter()
        self.cpu = time.thread_time()
        self.usage = _thread_usage()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self.started
        self.cpu_s = time.thread_time() - self.cpu
        end = _thread_usage()
        self.counts = {key: end[key] - self.usage[key] for key in end}

    def row(self, tokens: int, text: str) -> dict[str, Any]:
        per = max(tokens, 1)
        return {
            "tokens": tokens,
            "wall_s": round(self.wall_s, 4),
            "tok_s": round(tokens / self.wall_s, 2) if self.wall_s else None,
            "thread_cpu_ms_per_token": round(1000 * self.cpu_s / per, 3),
            "thread_cpu_share": round(self.cpu_s / self.wall_s, 3) if self.wall_s else None,
            **{f"{key}_per_token": round(value / per, 3) for key, value in self.counts.items()},
            "text": text,
        }


def _thread_usage() -> dict[str, int]:
    try:
        import resource

        usage = resource.getrusage(resource.RUSAGE_THREAD)
    except (ImportError, AttributeError, OSError):
        return {}
    return {
        "voluntary_switches": usage.ru_nvcsw,
        "involuntary_switches": usage.ru_nivcsw,
        "minor_faults": usage.ru_minflt,
    }


def thread_state(engine: Any) -> dict[str, Any]:
    """What torch keeps per thread, as the calling thread sees it."""
    import torch

    state: dict[str, Any] = {
        "thread": threading.current_thread().name,
        "grad_enabled": torch.is_grad_enabled(),
        "inference_mode": torch.is_inference_mode_enabled(),
        "torch_threads": torch.get_num_threads(),
    }
    if hasattr(os, "sched_getaffinity"):
        state["affinity_cpus"] = len(os.sched_getaffinity(0))
    if engine.model.device.type == "cuda":
        state["cuda_device"] = torch.cuda.current_device()
        state["cuda_stream"] = str(torch.cuda.current_stream())
    return state


def in_new_thread(function: Callable[[], Any]) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = function()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="probe-new-thread")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def decode_section(
    engine: Any, messages: list[dict[str, str]], tokens: int, repeats: int, failures: list[str]
) -> dict[str, Any]:
    import torch
    from transformers import StoppingCriteriaList

    from modal_backend.serving.engines.base import (
        Delta,
        Finished,
        SamplingParams,
        StopFlag,
        ThreadedStream,
    )
    from modal_backend.serving.engines.transformers_engine import (
        _CountAndStop,
        _EmittingStreamer,
        thread_setup,
    )

    params = SamplingParams(max_tokens=tokens)
    input_ids = engine.prompt_ids(messages)
    prompt_tokens = int(input_ids.shape[-1])
    config = engine.generation_config(params, prompt_tokens)
    tokenizer = engine.tokenizer

    def plain(hooks: bool, inference: bool) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if hooks:
            extra = {
                "streamer": _EmittingStreamer(tokenizer, lambda event: None),
                "stopping_criteria": StoppingCriteriaList([_CountAndStop(engine, StopFlag())]),
            }
        mode = torch.inference_mode() if inference else contextlib.nullcontext()
        with Meter() as meter, mode:
            output = engine.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
                **extra,
            )
        completion = output[0, prompt_tokens:].tolist()
        return meter.row(len(completion), tokenizer.decode(completion, skip_special_tokens=True))

    def engine_call(max_tokens: int = tokens, stop: Any = None) -> dict[str, Any]:
        events: list[Any] = []
        asked = SamplingParams(max_tokens=max_tokens)
        with Meter() as meter:
            engine._generate(messages, asked, events.append, stop or StopFlag())
        return meter.row(*_collected(events))

    def twice() -> dict[str, Any]:
        engine_call()
        return engine_call()

    def with_setup() -> dict[str, Any]:
        thread_setup(engine.model)()
        return engine_call()

    metered: list[dict[str, Any]] = []
    real_generate = engine._generate

    def metered_generate(*args: Any) -> None:
        events: list[Any] = []
        emit = args[2]

        def keep(event: Any) -> None:
            events.append(event)
            emit(event)

        with Meter() as meter:
            real_generate(args[0], args[1], keep, args[3])
        metered.append(meter.row(*_collected(events)))

    def streamed(own_thread: bool) -> dict[str, Any]:
        async def consume() -> tuple[int, str, int]:
            work = lambda emit, stop: engine._generate(messages, params, emit, stop)  # noqa: E731
            stream = ThreadedStream(work) if own_thread else engine.stream(messages, params)
            pieces, completion = [], 0
            try:
                async for event in stream:
                    if isinstance(event, Delta):
                        pieces.append(event.text)
                    elif isinstance(event, Finished):
                        completion = event.completion_tokens
            finally:
                await stream.aclose()
            return completion, "".join(pieces), getattr(stream, "wakeups", 0)

        engine._generate = metered_generate
        try:
            started = time.perf_counter()
            completion, text, wakeups = asyncio.run(consume())
            wall = time.perf_counter() - started
        finally:
            del engine._generate
        row = metered.pop()
        row.update(
            seen_by_reader_tok_s=round(completion / wall, 2),
            loop_wakeups_per_token=round(wakeups / max(completion, 1), 3),
        )
        if row["text"] != text:
            failures.append("decode: the streamed text differs from what the worker emitted")
        return row

    def busy_main(switch_interval: float, short: int, cap_s: float) -> dict[str, Any]:
        """The engine's thread generating while the main thread runs Python (GIL contention,
        the worst an event loop can do): how much the switch interval matters here. Stopped
        after `cap_s`, like a client that leaves."""
        done, stop = threading.Event(), StopFlag()
        box: list[dict[str, Any]] = []

        def job() -> None:
            try:
                box.append(engine_call(short, stop))
            finally:
                done.set()

        previous = sys.getswitchinterval()
        sys.setswitchinterval(switch_interval)
        started, spins = time.perf_counter(), 0
        try:
            engine.threads.submit(job)
            while not done.is_set():
                sum(range(200))
                spins += 1
                if spins % 256 == 0 and time.perf_counter() - started > cap_s:
                    stop.set()
        finally:
            sys.setswitchinterval(previous)
        row = box[0]
        row.update(main_thread_spins=spins, stopped_at_cap=stop.is_set())
        return row

    def on_engine_thread(function: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        done = threading.Event()
        box: dict[str, Any] = {}

        def job() -> None:
            try:
                box["value"] = function()
            except BaseException as exc:
                box["error"] = exc
            finally:
                done.set()

        engine.threads.submit(job)
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]

    candidates: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
        "main_generate": ("model.generate in the main thread", lambda: plain(False, False)),
        "main_generate_hooks": (
            "model.generate with our streamer and stopping criteria, main thread",
            lambda: plain(True, False),
        ),
        "main_generate_hooks_inference_mode": (
            "the same under torch.inference_mode (as _generate runs it)",
            lambda: plain(True, True),
        ),
        "main_engine": ("TransformersEngine._generate in the main thread", engine_call),
        "new_thread_engine": (
            "_generate in a new threading.Thread",
            lambda: in_new_thread(engine_call),
        ),
        "new_thread_engine_second_call": (
            "_generate twice in one new thread; the second call timed (per-thread warm-up)",
            lambda: in_new_thread(twice),
        ),
        "new_thread_engine_setup": (
            "_generate in a new thread after the engine's thread set-up (grad off, device)",
            lambda: in_new_thread(with_setup),
        ),
        "engine_thread": (
            "_generate as a job on the engine's long-lived thread, no event loop",
            lambda: on_engine_thread(engine_call),
        ),
        "stream_own_thread": (
            "ThreadedStream with a thread of its own per request (the engine's old path)",
            lambda: streamed(True),
        ),
        "stream_engine_threads": (
            "engine.stream: the engine's long-lived thread (the engine's path now)",
            lambda: streamed(False),
        ),
    }
    rows: dict[str, Any] = {}
    plain(True, True)  # warm-up: CUDA kernels, cuBLAS, the allocator
    on_engine_thread(engine_call)  # the engine's thread is long-lived: warm after its first job
    for name, (description, run) in candidates.items():
        # No warm-up per row: a new thread's first call is what the old path paid per request.
        runs = [run() for _ in range(max(1, repeats))]
        best = statistics.median(r["tok_s"] for r in runs)
        middle = min(runs, key=lambda r: abs(r["tok_s"] - best))
        rows[name] = {"what": description, **middle, "tok_s_runs": [r["tok_s"] for r in runs]}
        print(f"[probe]   {name}: {middle['tok_s']} tok/s", flush=True)
    texts = {name: row.pop("text") for name, row in rows.items()}
    reference = texts["main_generate"]
    identical = all(text == reference for text in texts.values())
    if not identical:
        differing = sorted(name for name, text in texts.items() if text != reference)
        failures.append(f"decode: texts differ from model.generate's in {differing}")
    fastest = max(row["tok_s"] for row in rows.values())
    for row in rows.values():
        row["of_fastest"] = round(row["tok_s"] / fastest, 3)
    first, second = rows["new_thread_engine"], rows["new_thread_engine_second_call"]
    short, cap_s = min(tokens, 32), 20.0
    contention: dict[str, Any] = {"tokens": short, "cap_s": cap_s}
    contention["engine_thread"] = on_engine_thread(lambda: engine_call(short))
    contention["busy_main_5ms"] = busy_main(0.005, short, cap_s)
    contention["busy_main_0.5ms"] = busy_main(0.0005, short, cap_s)
    quiet = contention["engine_thread"].pop("text")
    for name in ("busy_main_5ms", "busy_main_0.5ms"):
        row = contention[name]
        if row.pop("text") != quiet and not row["stopped_at_cap"]:
            failures.append(f"decode: contention {name} wrote another text")
        print(f"[probe]   contention {name}: {row['tok_s']} tok/s", flush=True)
    return {
        "prompt_tokens": prompt_tokens,
        "max_new_tokens": tokens,
        "repeats": repeats,
        "new_thread_first_call_extra_s": round(first["wall_s"] - second["wall_s"], 4),
        "rows": rows,
        "contention": contention,
        "texts_identical": identical,
        "text_sha256": hashlib.sha256(reference.encode()).hexdigest()[:16],
        "text_start": reference[:120],
        "thread_state": {
            "main": thread_state(engine),
            "new_thread": in_new_thread(lambda: thread_state(engine)),
            "engine_thread": on_engine_thread(lambda: thread_state(engine)),
        },
        "op_counts": op_counts(engine, messages, on_engine_thread),
    }


def _collected(events: list[Any]) -> tuple[int, str]:
    from modal_backend.serving.engines.base import Delta, Finished

    text = "".join(e.text for e in events if isinstance(e, Delta))
    finished = [e for e in events if isinstance(e, Finished)]
    return (finished[-1].completion_tokens if finished else 0), text


def op_counts(
    engine: Any,
    messages: list[dict[str, str]],
    on_engine_thread: Callable[[Callable[[], dict[str, Any]]], dict[str, Any]],
    tokens: int = 8,
) -> dict[str, Any]:
    """The torch operators (and the devices of their tensors) that a short `_generate`
    dispatches in the main thread and in the engine's thread: a thread that took another code
    path (a CPU tensor, an extra copy) shows up here."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from modal_backend.serving.engines.base import SamplingParams, StopFlag

    class Counting(TorchDispatchMode):  # type: ignore[no-untyped-call]
        def __init__(self) -> None:
            super().__init__()  # type: ignore[no-untyped-call]
            self.counts: Counter[str] = Counter()

        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            devices = sorted(
                {a.device.type for a in [*args, *(kwargs or {}).values()] if hasattr(a, "device")}
            )
            self.counts[f"{func.overloadpacket.__name__}[{'+'.join(devices) or '-'}]"] += 1
            return func(*args, **(kwargs or {}))

    def count() -> dict[str, Any]:
        with Counting() as mode:
            params = SamplingParams(max_tokens=tokens)
            engine._generate(messages, params, lambda event: None, StopFlag())
        return dict(mode.counts)

    main, thread = count(), on_engine_thread(count)
    differ = {
        op: {"main": main.get(op, 0), "engine_thread": thread.get(op, 0)}
        for op in sorted(set(main) | set(thread))
        if main.get(op, 0) != thread.get(op, 0)
    }
    return {
        "tokens": tokens,
        "main_total": sum(main.values()),
        "engine_thread_total": sum(thread.values()),
        "differ": differ,
        "top_main": dict(Counter(main).most_common(12)),
    }
