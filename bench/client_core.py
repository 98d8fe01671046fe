"""Benchmarks of the client core, measured in one run on this machine.

    python bench/client_core.py [--hits 20000] [--runs 30]

1. Cache-hit latency of `SuggestionService.suggest` (target: p99 under 1 ms).
2. The SSE client's overhead: `ChatBackend.stream` (SSE parsing, JSON chunks, events) against a
   raw httpx read of the very same byte stream from a loopback server (target: ratio under 1.05).
   Two streams: one paced like a fast model (a token every 2 ms) and one sent as fast as the
   server can write, the worst case for parsing. A bare httpx-sse + json.loads loop over the same
   stream shows the floor that any SSE client pays, and so what the backend itself adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from httpx_sse import EventSource

from suggestions import ChatBackend, LlamaRequest, MockBackend, SessionCache, UsageStore
from suggestions.service import SuggestionService
from suggestions.testing import ScriptedServer, sse_reply

REQUEST = LlamaRequest(
    text="She go to school yesterday and buyed a books, and then she walk home slowly.",
    type="grammar",
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def bench_cache_hits(hits: int) -> None:
    with tempfile.TemporaryDirectory() as state:
        service = SuggestionService(
            {"mock": MockBackend()},
            cache=SessionCache(),
            usage=UsageStore(Path(state) / "usage.db"),
        )
        await service.suggest(REQUEST, backend="mock")  # the miss that fills the cache
        timings = []
        for index in range(hits):
            started = time.perf_counter()
            response = await service.suggest(REQUEST, backend="mock")
            timings.append((time.perf_counter() - started) * 1000)
            assert response.cached
            if index % 200 == 199:
                await service.flush_usage()  # usage rows are written off the request path
        await service.aclose()
    p50, p99 = percentile(timings, 50), percentile(timings, 99)
    verdict = "meets" if p99 < 1.0 else "MISSES"
    print(
        f"cache hit ({hits} calls, usage tracking on): p50 {p50 * 1000:.0f} us, "
        f"p99 {p99 * 1000:.0f} us -> {verdict} the 1 ms p99 target"
    )


async def read_raw(client: httpx.AsyncClient, url: str) -> int:
    async with client.stream("POST", url + "/v1/chat/completions", json={"stream": True}) as resp:
        total = 0
        async for chunk in resp.aiter_bytes():
            total += len(chunk)
        return total


async def read_parse_floor(client: httpx.AsyncClient, url: str) -> int:
    """The least any SSE client must do: split events and decode each chunk's JSON."""
    chunks = 0
    async with client.stream("POST", url + "/v1/chat/completions", json={"stream": True}) as resp:
        async for event in EventSource(resp).aiter_sse():
            if event.data != "[DONE]":
                json.loads(event.data)
                chunks += 1
    return chunks


async def read_sse(backend: ChatBackend) -> int:
    events = 0
    async for _ in backend.stream(REQUEST):
        events += 1
    return events


async def bench_sse_overhead(label: str, tokens: int, pause_s: float, runs: int) -> None:
    deltas = [f" tok{i}" for i in range(tokens)]
    with ScriptedServer(default=sse_reply(deltas, pause_s=pause_s)) as server:
        # Each side keeps one client, as a running service does; the server closes every
        # connection, so both pay the same TCP set-up per stream.
        backend = ChatBackend(name="bench", base_url=server.url, model="m", label="bench")
        raw_client = httpx.AsyncClient()
        raw_times, floor_times, sse_times = [], [], []
        await read_raw(raw_client, server.url)  # warm-up of both paths
        await read_sse(backend)
        for _ in range(runs):  # interleaved, so drift in machine load hits both alike
            started = time.perf_counter()
            await read_raw(raw_client, server.url)
            raw_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            await read_parse_floor(raw_client, server.url)
            floor_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            events = await read_sse(backend)
            sse_times.append(time.perf_counter() - started)
            assert events == tokens + 1
        await raw_client.aclose()
        await backend.aclose()
    raw, sse = statistics.median(raw_times), statistics.median(sse_times)
    floor = statistics.median(floor_times)
    ratio = sse / raw
    verdict = "meets" if ratio < 1.05 else "MISSES"
    print(
        f"SSE client, {label} ({tokens} chunks, {runs} runs each): raw httpx read "
        f"{raw * 1000:.1f} ms, ChatBackend.stream {sse * 1000:.1f} ms, ratio {ratio:.3f} "
        f"-> {verdict} the 1.05 target; bare httpx-sse + json.loads {floor * 1000:.1f} ms "
        f"(ratio {floor / raw:.3f}), so the backend itself adds "
        f"{(sse - floor) / tokens * 1e6:.1f} us a chunk"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    await bench_cache_hits(args.hits)
    await bench_sse_overhead("paced like a fast model (2 ms/token)", 100, 0.002, args.runs)
    await bench_sse_overhead("unpaced, worst case", 400, 0.0, args.runs)


if __name__ == "__main__":
    asyncio.run(main())
