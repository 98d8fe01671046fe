"""`Pacer`: how many requests an eval run keeps in flight, set by what the server can take.

`--concurrency` is a ceiling, not a promise the server made. A model server that refuses work it
cannot finish in time (503 + Retry-After) or a model too slow to answer before the client's
timeout would otherwise fail most of a run: every pair retried at once, refused again. So the run
halves its concurrency when the server says it is overloaded (503, 429) or does not answer in
time, waits, and asks again; each success grows it back by a share of one (additive increase,
multiplicative decrease, as TCP paces a network). A run against a slow server then finishes, at
the pace the server sets, instead of failing at the pace the client chose.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

OVERLOAD_STATUSES = frozenset({429, 503})
MAX_PACED_TRIES = 8
"""Asks per pair when the server is overloaded (each after a pause), before the failure is
recorded; `eval run --resume` asks again later."""
MAX_PAUSE_S = 30.0


def overloaded(row: dict[str, Any]) -> bool:
    """Whether a failed row says the server was too busy (rather than broken or unreachable)."""
    if row.get("ok"):
        return False
    return row.get("status") in OVERLOAD_STATUSES or row.get("error_kind") == "timeout"


def pause_s(tries: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before asking again after `tries` overloaded answers: 1, 2, 4 ... 30, with
    jitter so that the pairs refused together do not come back together."""
    ceiling = min(MAX_PAUSE_S, 2.0 ** (tries - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)


class Pacer:
    """At most `limit` requests in flight, `limit` moving between 1 and `ceiling`."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = float(self.ceiling)
        self.in_flight = 0
        self.lowest = self.limit
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1
        try:
            yield
        finally:
            async with self._changed:
                self.in_flight -= 1
                self._changed.notify_all()

    async def succeeded(self) -> None:
        async with self._changed:
            self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)
            self._changed.notify_all()

    async def overloaded(self) -> None:
        async with self._changed:
            self.limit = max(1.0, self.limit / 2)
            self.lowest = min(self.lowest, self.limit)
