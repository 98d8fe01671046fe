"""`Admission`: which requests the engine takes now, which wait, and which get a prompt 503.

A fixed number of slots is wrong both ways. Sized for every request at the full context it
turns away a burst of short grammar requests the engine could batch; sized by memory alone it
lets a slow model take more work than it can finish before its clients give up, so every stream
times out mid-way and nobody gets an answer. Admission here follows what the engine can really
do, from two things it measures as it serves:

- each request's real cost: its prompt plus its `max_tokens` against the KV cache, and the
  output it will probably produce (`max_tokens` times the share of it recent answers used);
- the engine's speed: seconds per generated token per request at each batch size, learnt from
  the streams themselves. Where a batch size has not been seen yet it is extrapolated from the
  nearest one seen, as if batching gained nothing, so a slow engine is never overloaded on a
  guess; the guess is replaced by a measurement as soon as that batch size runs.

A request joins the batch (first come, first served) when the batch is below the engine's ceiling,
its tokens fit the KV cache, and at the new batch size it is predicted to finish within
`finish_budget_s`; the first `always_admitted` (2) are taken whatever the estimates say. A
request that waits is refused at once, with a `Retry-After` that says when the work ahead should
be done, as soon as even the engine's best measured throughput would start it after
`first_token_budget_s` or finish it after `finish_budget_s`; one that is still waiting when the
first-token budget runs out is refused then. A client that leaves gives its place back at once
(the server cancels `admit`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_SMOOTHING = 0.2
"""Weight of a new measurement in the running averages: recent enough to follow a change of
load, smooth enough that one slow step does not refuse a burst."""
_PRIOR_OUTPUT_SHARE = 0.5
_OPTIMISTIC_OUTPUT_SHARE = 0.1
_ANSWERS_BEFORE_REFUSING = 3
"""A refusal rests on measured answer lengths: until this many answers have finished, a waiting
request is judged as if answers used a tenth of their `max_tokens`, so the start of a burst is
not refused on a guess (the first-token budget still bounds its wait)."""
_PUMP_INTERVAL_S = 0.05
"""Between two looks at the queue caused by streamed tokens (a release always looks)."""


class Overloaded(Exception):
    """The request cannot be served in time now; retry after `retry_after_s`."""

    def __init__(self, retry_after_s: int, reason: str) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s
        self.reason = reason


@dataclass(frozen=True)
class AdmissionLimits:
    """What the clients will wait for. The defaults sit inside our client's patience (30 s to
    the first byte, 120 s in all), so a refusal comes while a retry can still succeed."""

    first_token_budget_s: float = 25.0
    finish_budget_s: float = 60.0
    always_admitted: int = 2
    """Requests the batch takes whatever the estimates say (within the ceiling and the KV
    cache): a side-by-side comparison streams its columns at once, and a second request never
    waits on a guess."""
    min_retry_after_s: int = 1
    max_retry_after_s: int = 60


@dataclass(frozen=True)
class RequestCost:
    prompt_tokens: int
    max_tokens: int

    @property
    def kv_tokens(self) -> int:
        return self.prompt_tokens + self.max_tokens


@dataclass(eq=False)
class Ticket:
    """One request's place: waiting, then running, with what it has produced so far."""

    cost: RequestCost
    enqueued_at: float
    future: asyncio.Future[None]
    admitted_at: float | None = None
    cohort: int = 1
    """Requests admitted at the same moment as this one: their prompts are read together."""
    last_token_at: float | None = None
    generated: int = 0
    released: bool = False

    def expected(self, share: float) -> float:
        """Tokens it will probably produce if answers use `share` of their `max_tokens`."""
        return max(1.0, self.cost.max_tokens * share)

    def remaining(self, share: float) -> float:
        """Tokens still to come, as far as anyone can tell: a request past its expected length
        is counted as a quarter of it from now."""
        expected = self.expected(share)
        return max(expected - self.generated, 0.25 * expected)


class SpeedModel:
    """Seconds per generated token per request, by batch size, and the time to a first token."""

    def __init__(self) -> None:
        self.per_token: dict[int, float] = {}
        self.first_token_s: float | None = None
        """From admission to first token for a request admitted alone. A burst admitted at once
        reads its prompts together, and a request that joins later reads its own: counting the
        burst's wait in full would refuse requests that would be served in time."""
        self.output_share = _PRIOR_OUTPUT_SHARE
        self.answers_seen = 0

    def observe_step(self, batch: int, seconds_per_token: float) -> None:
        old = self.per_token.get(batch)
        self.per_token[batch] = (
            seconds_per_token if old is None else old + _SMOOTHING * (seconds_per_token - old)
        )

    def observe_first_token(self, seconds: float) -> None:
        old = self.first_token_s
        self.first_token_s = seconds if old is None else old + _SMOOTHING * (seconds - old)

    def observe_output(self, completion_tokens: int, max_tokens: int) -> None:
        """The share of `max_tokens` answers use: the mean of the first answers (the prior is
        dropped at the first), then the running average."""
        share = min(1.0, completion_tokens / max(1, max_tokens))
        self.answers_seen += 1
        weight = max(1 / self.answers_seen, _SMOOTHING)
        self.output_share += weight * (share - self.output_share)

    def refusal_share(self) -> float:
        """The output share a refusal is judged by (see `_ANSWERS_BEFORE_REFUSING`)."""
        if self.answers_seen >= _ANSWERS_BEFORE_REFUSING:
            return self.output_share
        return min(self.output_share, _OPTIMISTIC_OUTPUT_SHARE)

    def pessimistic(self, batch: int) -> float | None:
        """Seconds per token at `batch`: measured, or extrapolated as if batching gained
        nothing beyond the nearest smaller batch seen (and never above a larger one seen)."""
        if batch in self.per_token:
            return self.per_token[batch]
        below = [b for b in self.per_token if b < batch]
        above = [b for b in self.per_token if b > batch]
        guesses: list[float] = []
        if below:
            nearest = max(below)
            guesses.append(self.per_token[nearest] * batch / nearest)
        if above:
            guesses.append(self.per_token[min(above)])
        return min(guesses) if guesses else None

    def optimistic_throughput(self, lanes: int) -> float | None:
        """Tokens per second over `lanes` requests at best: measured at that batch size, or as
        if batching scaled perfectly from the nearest smaller batch seen."""
        if lanes in self.per_token:
            return lanes / self.per_token[lanes]
        below = [b for b in self.per_token if b < lanes]
        if below:
            return lanes / self.per_token[max(below)]
        above = [b for b in self.per_token if b > lanes]
        return lanes / self.per_token[min(above)] if above else None


@dataclass
class Admission:
    """The engine's batch, its queue, and the decisions between them (all on one event loop)."""

    max_sequences: int
    kv_tokens: int | None = None
    fixed_slots: bool = False
    """An engine whose `max_sequences` slots each hold a context of their own, sized at start
    (llama.cpp, transformers): every slot is taken; only the queue beyond them is judged."""
    limits: AdmissionLimits = field(default_factory=AdmissionLimits)
    clock: Callable[[], float] = time.monotonic
    speed: SpeedModel = field(default_factory=SpeedModel)
    refused: int = 0

    def __post_init__(self) -> None:
        self._running: list[Ticket] = []
        self._waiting: deque[Ticket] = deque()
        self._reserved = 0
        self._pumped_at = -math.inf

    # -- the request's side ---------------------------------------------------------------

    async def admit(self, cost: RequestCost) -> Ticket:
        """Wait for a place in the batch; raises `Overloaded` when none comes in time."""
        now = self.clock()
        ticket = Ticket(
            cost,
            enqueued_at=now,
            future=asyncio.get_running_loop().create_future(),
        )
        self._waiting.append(ticket)
        self.pump()
        try:
            async with asyncio.timeout(self.limits.first_token_budget_s):
                await asyncio.shield(ticket.future)  # a cancel must not cancel the decision
        except TimeoutError:
            self._drop_waiting(ticket)
            raise self._refuse(
                self._predicted_start(ticket, self.speed.refusal_share()) or 0.0,
                "no place in the batch within the budget",
            ) from None
        except asyncio.CancelledError:  # the client left: give its place back
            if ticket.future.done() and not ticket.future.cancelled():
                if ticket.future.exception() is None:
                    self.release(ticket)
            else:
                self._drop_waiting(ticket)
            raise
        return ticket

    def tokens(self, ticket: Ticket, count: int) -> None:
        """A stream produced `count` tokens: learn the engine's speed at this batch size."""
        now = self.clock()
        if ticket.last_token_at is None:
            if ticket.admitted_at is not None:  # a cohort's shared wait, per request of it
                self.speed.observe_first_token((now - ticket.admitted_at) / ticket.cohort)
        elif count > 0:
            self.speed.observe_step(len(self._running), (now - ticket.last_token_at) / count)
        ticket.last_token_at = now
        ticket.generated += count
        if self._waiting and now - self._pumped_at >= _PUMP_INTERVAL_S:
            self.pump()

    def finished(self, ticket: Ticket, completion_tokens: int) -> None:
        self.speed.observe_output(completion_tokens, ticket.cost.max_tokens)

    def release(self, ticket: Ticket) -> None:
        """The request is over (answered, failed or abandoned): its place goes to the queue."""
        if ticket.released or ticket not in self._running:
            return
        ticket.released = True
        self._running.remove(ticket)
        self._reserved -= ticket.cost.kv_tokens
        self.pump()

    # -- decisions --------------------------------------------------------------------------

    def pump(self) -> None:
        """Admit from the head of the queue while it fits; refuse those that cannot be served
        in time."""
        now = self._pumped_at = self.clock()
        cohort: list[Ticket] = []
        while self._waiting and self._fits(self._waiting[0], now):
            ticket = self._waiting.popleft()
            ticket.admitted_at = now
            cohort.append(ticket)
            self._running.append(ticket)
            self._reserved += ticket.cost.kv_tokens
            if not ticket.future.done():
                ticket.future.set_result(None)
        for ticket in cohort:
            ticket.cohort = len(cohort)
        share = self.speed.refusal_share()
        for ticket in list(self._waiting):
            start = self._predicted_start(ticket, share)
            if start is None or not self._running:
                continue
            waited = now - ticket.enqueued_at
            first = waited + start + (self.speed.first_token_s or 0.0)
            per_token = self.speed.pessimistic(max(1, len(self._running)))
            finish = first + ticket.expected(share) * (per_token or 0.0)
            if first > self.limits.first_token_budget_s:
                reason = f"the work ahead would delay its first token to {first:.0f} s"
            elif finish > self.limits.finish_budget_s:
                reason = f"it would finish after {finish:.0f} s"
            else:
                continue
            self._drop_waiting(ticket)
            if not ticket.future.done():
                ticket.future.set_exception(self._refuse(start, reason))

    def _fits(self, ticket: Ticket, now: float) -> bool:
        batch = len(self._running)
        if batch == 0:
            return True
        if batch >= self.max_sequences:
            return False
        if self.kv_tokens is not None and self._reserved + ticket.cost.kv_tokens > self.kv_tokens:
            return False
        if self.fixed_slots or batch < self.limits.always_admitted:
            return True
        per_token = self.speed.pessimistic(batch + 1)
        if per_token is None:  # no measurement yet: one request shows the engine's speed
            return False
        waited = now - ticket.enqueued_at
        finish = (
            waited
            + (self.speed.first_token_s or 0.0)
            + ticket.expected(self.speed.output_share) * per_token
        )
        return finish <= self.limits.finish_budget_s

    def _lanes(self, ticket: Ticket, share: float) -> int:
        """How many requests the batch would hold at most: the ceiling, the KV cache at the
        current mix of sizes, and the batch size at which a request like this still finishes
        in time on the pessimistic estimate."""
        lanes = self.max_sequences
        if self.kv_tokens is not None:
            sizes = [t.cost.kv_tokens for t in (*self._running, ticket)]
            lanes = min(lanes, max(1, int(self.kv_tokens * len(sizes) / sum(sizes))))
        first = self.speed.first_token_s or 0.0
        while lanes > 1:
            per_token = self.speed.pessimistic(lanes)
            if per_token is None or first + ticket.expected(share) * per_token <= (
                self.limits.finish_budget_s
            ):
                break
            lanes -= 1
        return lanes

    def _predicted_start(self, ticket: Ticket, share: float) -> float | None:
        """Seconds until this waiting request should get its place: the work of those ahead of it
        (what the running requests have left and the requests queued before it) that must be
        done before a lane frees, at the engine's best measured throughput over its lanes."""
        lanes = self._lanes(ticket, share)
        throughput = self.speed.optimistic_throughput(lanes)
        if throughput is None:
            return None
        ahead = sum(t.remaining(share) for t in self._running)
        count = len(self._running)
        for queued in self._waiting:
            if queued is ticket:
                break
            ahead += queued.expected(share)
            count += 1
        if count < lanes:
            return 0.0
        # It gets a lane once all but lanes - 1 of those ahead are done: their share of the work.
        return ahead * (count - lanes + 1) / count / throughput

    def _refuse(self, start: float, reason: str) -> Overloaded:
        self.refused += 1
        limits = self.limits
        retry = min(limits.max_retry_after_s, max(limits.min_retry_after_s, math.ceil(start)))
        return Overloaded(retry, reason)

    def _drop_waiting(self, ticket: Ticket) -> None:
        if ticket in self._waiting:
            self._waiting.remove(ticket)

    # -- reporting --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What `/health` says about admission: the batch, the queue, and the measured speed."""
        batch = len(self._running)
        per_token = self.speed.pessimistic(max(1, batch))
        return {
            "running": batch,
            "waiting": len(self._waiting),
            "max_sequences": self.max_sequences,
            "kv_tokens_reserved": self._reserved,
            "kv_token_capacity": self.kv_tokens,
            "seconds_per_token": round(per_token, 4) if per_token else None,
            "first_token_s": round(self.speed.first_token_s, 3)
            if self.speed.first_token_s
            else None,
            "output_share": round(self.speed.output_share, 3),
            "refused": self.refused,
        }
