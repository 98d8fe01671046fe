"""Batching and speculation on this machine, measured in one run: the numbers behind the engine
choice and Modal's `target_inputs`.

    python bench/batching.py [--rows 32] [--skip-transformers]

SmolLM2-135M-Instruct with our fine-tuned adapter (`writing-llama`, shipped in the repository)
answers grammar rows of our eval set:

1. through our server on the transformers engine (one request at a time) and on vLLM, at
   concurrency 1, 8 and 32: aggregate tokens/s, time to first token and total time (P50/P95);
2. the vLLM engine called directly, with no HTTP, at concurrency 8: what our server adds;
3. n-gram speculation off and on, one request at a time: decode tokens/s and the share of
   drafted tokens vLLM accepted.

Targets: vLLM at concurrency 8 gives at least 4x the aggregate tokens/s of concurrency 1; our
server adds under 5 % over the engine alone at concurrency 8; speculation gives 1.5x at
concurrency 1 on this CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from eval.data import load_dataset
from modal_backend.serving.engines.base import Delta, Engine, Finished, SamplingParams
from modal_backend.serving.local import serve_in_thread
from modal_backend.serving.local_bases import SMOLLM2_MODEL_ID, ensure_smollm2
from modal_backend.serving.server import ServiceLimits, create_app
from modal_backend.serving.shipped_adapter import verified_adapter
from modal_backend.training.config import DEFAULT_EVAL_SET, resolve_path
from suggestions import ChatBackend, LlamaRequest
from suggestions.backends.base import StreamEnd, TextDelta
from suggestions.prompts import build_messages, max_output_tokens

KEY = "bench-key"
TUNED = "writing-llama"


@dataclass(frozen=True)
class Sample:
    ttft_s: float
    total_s: float
    tokens: int


@dataclass(frozen=True)
class Batch:
    label: str
    concurrency: int
    wall_s: float
    samples: list[Sample]

    @property
    def tokens_per_s(self) -> float:
        return sum(s.tokens for s in self.samples) / self.wall_s

    def pct(self, field: str, q: int) -> float:
        values = sorted(getattr(s, field) for s in self.samples)
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1]

    def line(self) -> str:
        return (
            f"{self.label:<34} c={self.concurrency:<3} {self.tokens_per_s:7.1f} tok/s   "
            f"TTFT p50 {self.pct('ttft_s', 50):5.2f} s p95 {self.pct('ttft_s', 95):5.2f} s   "
            f"total p50 {self.pct('total_s', 50):5.2f} s p95 {self.pct('total_s', 95):5.2f} s"
        )


def requests(rows: int) -> list[LlamaRequest]:
    grammar = [e for e in load_dataset(resolve_path(DEFAULT_EVAL_SET)) if e.type == "grammar"]
    return [LlamaRequest(text=e.source, type="grammar") for e in grammar[:rows]]


async def through_server(url: str, model: str, request: LlamaRequest) -> Sample:
    backend = ChatBackend(
        name="custom",
        base_url=url,
        model=model,
        label=model,
        api_key=KEY,
        timeout=httpx.Timeout(900.0),  # a queued request waits its turn: that is measured
        total_timeout_s=900.0,
    )
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    async for event in backend.stream(request):
        if isinstance(event, TextDelta) and first is None:
            first = time.perf_counter() - started
        elif isinstance(event, StreamEnd):
            tokens = event.usage.completion_tokens if event.usage else 0
    total = time.perf_counter() - started
    await backend.aclose()
    return Sample(first or total, total, tokens)


async def direct(engine: Engine, model: str | None, request: LlamaRequest) -> Sample:
    params = SamplingParams(max_tokens=max_output_tokens(request))
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    async for event in engine.stream(build_messages(request), params, model):
        if isinstance(event, Delta) and first is None:
            first = time.perf_counter() - started
        elif isinstance(event, Finished):
            tokens = event.completion_tokens
    total = time.perf_counter() - started
    return Sample(first or total, total, tokens)


async def at_concurrency(
    label: str,
    concurrency: int,
    work: Sequence[LlamaRequest],
    one: Callable[[LlamaRequest], Awaitable[Sample]],
) -> Batch:
    gate = asyncio.Semaphore(concurrency)

    async def guarded(request: LlamaRequest) -> Sample:
        async with gate:
            return await one(request)

    started = time.perf_counter()
    samples = await asyncio.gather(*(guarded(r) for r in work))
    return Batch(label, concurrency, time.perf_counter() - started, list(samples))


def serve(engine: Engine) -> Any:
    limits = ServiceLimits(first_token_budget_s=600, finish_budget_s=3600)  # queueing, not 503s
    return serve_in_thread(create_app(engine, api_key=KEY, limits=limits))


class Acceptance(logging.Handler):
    """Reads vLLM's "SpecDecoding metrics" log record: accepted and drafted tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted = 0
        self.drafted = 0

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("SpecDecoding metrics") and record.args:
            args = record.args if isinstance(record.args, tuple) else ()
            self.accepted += int(args[3])
            self.drafted += int(args[4])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32, help="requests per measurement")
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args(argv)
    from modal_backend.serving.engines.vllm_engine import VLLMEngine, VLLMSettings

    folder = ensure_smollm2(progress=False)
    adapter = verified_adapter()
    work = requests(args.rows)
    batches: list[Batch] = []
    if not args.skip_transformers:
        from modal_backend.serving.engines.transformers_engine import TransformersEngine

        hf = TransformersEngine.load(folder, adapter_path=adapter.path, model_id=TUNED)
        with serve(hf) as url:
            for c in (1, 8, 32):
                batch = asyncio.run(
                    at_concurrency(
                        "transformers, our server",
                        c,
                        work[: max(c, 8)],
                        lambda r, u=url: through_server(u, TUNED, r),
                    )
                )
                print(batch.line(), flush=True)
                batches.append(batch)
        hf.close()

    settings = VLLMSettings(max_model_len=2048, max_num_seqs=32)
    engine = VLLMEngine(
        folder,
        model_id=SMOLLM2_MODEL_ID,
        adapters={TUNED: (adapter.path, adapter.version)},
        settings=settings,
    )
    vllm: dict[int, Batch] = {}
    with serve(engine) as url:
        asyncio.run(through_server(url, TUNED, work[0]))  # warm-up
        for c in (1, 8, 32):
            vllm[c] = asyncio.run(
                at_concurrency(
                    "vLLM, our server",
                    c,
                    work[: max(c, 8) * 2],
                    lambda r, u=url: through_server(u, TUNED, r),
                )
            )
            print(vllm[c].line(), flush=True)
    alone = asyncio.run(
        at_concurrency(
            "vLLM engine alone (no HTTP)", 8, work[:16], lambda r: direct(engine, TUNED, r)
        )
    )
    print(alone.line(), flush=True)
    engine.close()

    handler = Acceptance()
    logging.getLogger("vllm").addHandler(handler)
    decode: dict[str, float] = {}
    for mode in ("off", "ngram"):
        spec = VLLMEngine(
            folder,
            model_id=SMOLLM2_MODEL_ID,
            adapters={TUNED: (adapter.path, adapter.version)},
            settings=VLLMSettings(
                max_model_len=2048,
                max_num_seqs=8,
                speculative=mode,  # type: ignore[arg-type]
                log_stats=True,
            ),
        )
        asyncio.run(direct(spec, TUNED, work[0]))  # warm-up
        batch = asyncio.run(
            at_concurrency(
                f"vLLM, speculation {mode}", 1, work[:16], lambda r, e=spec: direct(e, TUNED, r)
            )
        )
        spec.log_stats()
        time.sleep(1)
        decode[mode] = sum(s.tokens - 1 for s in batch.samples) / sum(
            s.total_s - s.ttft_s for s in batch.samples
        )
        print(batch.line() + f"   decode {decode[mode]:.1f} tok/s", flush=True)
        spec.close()

    scaling = vllm[8].tokens_per_s / vllm[1].tokens_per_s
    overhead = 1 - vllm[8].tokens_per_s / alone.tokens_per_s
    speedup = decode["ngram"] / decode["off"]
    accepted = handler.accepted / handler.drafted if handler.drafted else float("nan")
    print()
    print(f"vLLM c=8 / c=1 aggregate tokens/s: {scaling:.2f}x (target >= 4x)")
    print(f"our server's cost over the engine alone at c=8: {overhead:+.1%} (target < 5 %)")
    print(
        f"n-gram speculation, decode at c=1: {speedup:.2f}x (target 1.5x); "
        f"{accepted:.0%} of {handler.drafted} drafted tokens accepted"
    )
    if batches:
        print(f"vLLM / transformers at c=8: {vllm[8].tokens_per_s / batches[1].tokens_per_s:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
