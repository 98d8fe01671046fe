"""Serving overhead and local speed, measured in one run on this machine.

    python bench/serving.py [--model default|tiny|PATH.gguf] [--runs 20]

The same model instance and the same 40-word grammar request, `--runs` times each, alternating
between calling the engine directly and going through the whole service path (our
`ChatBackend` client -> HTTP/SSE over loopback -> the server -> the engine). Prints the medians
of time to first token and of decode speed, and the two overhead figures with their targets:
the HTTP/SSE path adds at most 10 ms to time to first token and 3 % to total time.

Identical prompts let llama.cpp reuse its prompt cache after the first run; the "fresh
passage" line shows time to first token when the passage is new and only the system prompt is
cached, which is what a real author's request costs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from modal_backend.serving.engines.base import Delta, Engine, Finished, SamplingParams
from modal_backend.serving.local import serve_in_thread
from modal_backend.serving.model_parts import LOCAL_DEFAULT, ensure_model
from modal_backend.serving.server import create_app
from suggestions import ChatBackend, LlamaRequest
from suggestions.backends.base import StreamEnd, TextDelta
from suggestions.prompts import build_messages, max_output_tokens

KEY = "bench-key"
PASSAGE = (
    "She go to school yesterday and buyed a books. Their going to the libary tomorow, but the "
    "weather are bad and nobody have a umbrella. We was hoping for sun, but it rain all week "
    "and the roads is flooded now again."
)
FRESH = (
    "The committe have decided that the new park will opened next spring. Many neighbour was "
    "exited about it, though some worries that the noise will be to loud at night for there "
    "children and the old peoples who lives nearby the gates."
)


@dataclass(frozen=True)
class Run:
    ttft_s: float
    total_s: float
    tokens: int

    @property
    def decode_tokens_per_s(self) -> float:
        return (self.tokens - 1) / max(self.total_s - self.ttft_s, 1e-9)


async def direct(engine: Engine, request: LlamaRequest) -> Run:
    params = SamplingParams(max_tokens=max_output_tokens(request))
    started = time.perf_counter()
    first: float | None = None
    async for event in engine.stream(build_messages(request), params):
        if isinstance(event, Delta) and first is None:
            first = time.perf_counter() - started
        if isinstance(event, Finished):
            tokens = event.completion_tokens
    return Run(first or 0.0, time.perf_counter() - started, tokens)


async def through_http(client: ChatBackend, request: LlamaRequest) -> Run:
    started = time.perf_counter()
    first: float | None = None
    async for event in client.stream(request):
        if isinstance(event, TextDelta) and first is None:
            first = time.perf_counter() - started
        if isinstance(event, StreamEnd):
            tokens = event.usage.completion_tokens if event.usage else 0
    return Run(first or 0.0, time.perf_counter() - started, tokens)


def load_engine(model: str, workdir: Path) -> Engine:
    if model == "tiny":
        from modal_backend.serving.engines.transformers_engine import TransformersEngine
        from modal_backend.serving.testing import build_tiny_llama

        return TransformersEngine.load(build_tiny_llama(workdir / "tiny"), model_id="tiny")
    from modal_backend.serving.engines.llamacpp_engine import LlamaCppEngine

    path = ensure_model(LOCAL_DEFAULT) if model == "default" else Path(model)
    model_id = LOCAL_DEFAULT.model_id if model == "default" else path.stem
    return LlamaCppEngine(path, model_id=model_id)


def median(values: list[float]) -> float:
    return statistics.median(values)


async def main(model: str, runs: int) -> None:
    request = LlamaRequest(text=PASSAGE, type="grammar")
    with tempfile.TemporaryDirectory() as workdir:
        engine = load_engine(model, Path(workdir))
        print(f"model {engine.model_id}; {len(PASSAGE.split())}-word grammar request; {runs} runs")
        cold = await direct(engine, request)
        fresh = await direct(engine, LlamaRequest(text=FRESH, type="grammar"))
        with serve_in_thread(create_app(engine, api_key=KEY)) as url:
            client = ChatBackend(
                name="custom",
                base_url=url,
                model=engine.model_id,
                label="bench",
                api_key=KEY,
                key_env_var="MODAL_API_KEY",
                build_prompt=build_messages,
            )
            await through_http(client, request)  # warm the connection and the server
            results: dict[str, list[Run]] = {"direct": [], "http": []}
            for _ in range(runs):
                results["direct"].append(await direct(engine, request))
                results["http"].append(await through_http(client, request))
            await client.aclose()
        engine.close()

    print(f"\nfirst request after load: time to first token {cold.ttft_s * 1000:7.0f} ms")
    print(f"fresh passage (system prompt cached): {fresh.ttft_s * 1000:7.0f} ms\n")
    print(f"{'path':8} {'ttft p50 ms':>12} {'total p50 s':>12} {'decode tok/s':>13} {'tokens':>7}")
    for name, rows in results.items():
        print(
            f"{name:8} {median([r.ttft_s for r in rows]) * 1000:12.1f}"
            f" {median([r.total_s for r in rows]):12.3f}"
            f" {median([r.decode_tokens_per_s for r in rows]):13.1f}"
            f" {median([float(r.tokens) for r in rows]):7.0f}"
        )
    added_ttft = (
        median([r.ttft_s for r in results["http"]]) - median([r.ttft_s for r in results["direct"]])
    ) * 1000
    total_ratio = median([r.total_s for r in results["http"]]) / median(
        [r.total_s for r in results["direct"]]
    )
    verdict = {True: "meets", False: "MISSES"}
    print(
        f"\nHTTP/SSE adds {added_ttft:+.1f} ms to time to first token "
        f"(target <= 10 ms: {verdict[added_ttft <= 10]})"
    )
    print(
        f"HTTP/SSE total / direct total = {total_ratio:.3f} "
        f"(target <= 1.03: {verdict[total_ratio <= 1.03]})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="default, tiny, or a .gguf path")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.model, args.runs))
