"""`python -m eval latency`: the service's latency percentiles, and the P95 < 2 s check.

The first `--warmup` requests are reported apart as cold (a container or cache waking up);
the service target applies to the warm ones. The session cache is bypassed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

from suggestions import LlamaRequest, SuggestionService
from suggestions.backends import Backend
from suggestions.errors import BackendError

from .metrics.latency import PERCENTILES, percentiles


@dataclass(frozen=True)
class Sample:
    cold: bool
    ok: bool
    ttft_ms: float | None
    total_ms: float


async def measure(
    backend: Backend,
    texts: Sequence[LlamaRequest],
    *,
    requests: int,
    concurrency: int,
    warmup: int,
) -> list[Sample]:
    """`warmup` requests one at a time, then `requests` with `concurrency` in flight."""
    service = SuggestionService({backend.name: backend}, usage=None)
    cycle = itertools.cycle(texts)
    samples: list[Sample] = []

    async def one(cold: bool) -> None:
        request = next(cycle)
        started = time.perf_counter()
        try:
            response = await service.suggest(request, backend=backend.name, use_cache=False)
            samples.append(Sample(cold, True, response.time_to_first_token_ms, response.latency_ms))
        except BackendError:
            samples.append(Sample(cold, False, None, (time.perf_counter() - started) * 1000))

    try:
        for _ in range(warmup):
            await one(cold=True)
        slots = asyncio.Semaphore(concurrency)

        async def bounded() -> None:
            async with slots:
                await one(cold=False)

        await asyncio.gather(*(bounded() for _ in range(requests)))
    finally:
        await service.aclose()
    return samples


def table(samples: Sequence[Sample]) -> str:
    header = f"{'requests':10} {'n':>5} {'errors':>6} {'metric':>8} " + " ".join(
        f"{'P' + str(q):>9}" for q in PERCENTILES
    )
    lines = [header]
    for label, cold in (("cold", True), ("warm", False)):
        group = [s for s in samples if s.cold == cold]
        if not group:
            continue
        ok = [s for s in group if s.ok]
        errors = len(group) - len(ok)
        for metric in ("ttft_ms", "total_ms"):
            # A failed request counts at the time it took (a timeout is a slow answer).
            counted = group if metric == "total_ms" else ok
            values = [v for s in counted if (v := getattr(s, metric)) is not None]
            cells = " ".join(
                f"{value:9.0f}" if value is not None else f"{'-':>9}"
                for value in percentiles(values).values()
            )
            name = "TTFT" if metric == "ttft_ms" else "total"
            lines.append(f"{label:10} {len(group):5d} {errors:6d} {name:>8} {cells}")
    return "\n".join(lines)


def warm_p95_total(samples: Sequence[Sample]) -> float | None:
    """Failed requests count at their elapsed time: dropping them would hide timeouts."""
    values = [s.total_ms for s in samples if not s.cold]
    return percentiles(values)["p95"] if values else None
