"""Admission's decisions, driven by a fake clock and fed speeds as a real engine would feed them.

The server-level behaviour (a real overload is a 503 with Retry-After, never a 500) is in
test_server.py; the figures (a burst of 64, a slow model) in bench/admission.py.
"""

from __future__ import annotations

import asyncio

import pytest

from modal_backend.serving.admission import (
    Admission,
    AdmissionLimits,
    Overloaded,
    RequestCost,
    SpeedModel,
    Ticket,
)

GRAMMAR = RequestCost(prompt_tokens=250, max_tokens=120)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def admission(clock: Clock, **kwargs: object) -> Admission:
    """Admission with only the first request taken unconditionally, so that the estimates
    decide from the second on."""
    options: dict[str, object] = {
        "max_sequences": 32,
        "clock": clock,
        "limits": AdmissionLimits(always_admitted=1),
    }
    return Admission(**(options | kwargs))  # type: ignore[arg-type]


def run_steps(
    a: Admission, clock: Clock, tickets: list[Ticket], per_token_s: float, n: int
) -> None:
    """`n` decode steps of the running batch, one token each, `per_token_s` apart."""
    for _ in range(n):
        clock.now += per_token_s
        for ticket in tickets:
            a.tokens(ticket, 1)


async def pending(a: Admission, cost: RequestCost = GRAMMAR) -> asyncio.Task[Ticket]:
    task = asyncio.create_task(a.admit(cost))
    await settle()  # let it queue (and be decided, if it can be at once)
    return task


async def settle() -> None:
    """Let the requests' tasks see what admission decided."""
    await asyncio.sleep(0.01)


async def test_an_idle_engine_takes_a_request_at_once() -> None:
    a = admission(Clock())
    ticket = await a.admit(RequestCost(prompt_tokens=10_000, max_tokens=10_000))
    assert a.status()["running"] == 1 and ticket.admitted_at is not None


async def test_two_requests_always_run_at_once_a_side_by_side_comparison() -> None:
    clock = Clock()
    a = Admission(max_sequences=8, clock=clock)  # the default limits
    first = await a.admit(RequestCost(prompt_tokens=100, max_tokens=10_000))
    a.tokens(first, 1)
    run_steps(a, clock, [first], 1.0, 2)  # slow: 5,000 expected tokens would take 83 minutes
    second = await pending(a, RequestCost(prompt_tokens=100, max_tokens=10_000))
    third = await pending(a, RequestCost(prompt_tokens=100, max_tokens=10_000))
    assert second.done() and not second.exception()
    assert third.done() and isinstance(third.exception(), Overloaded)


async def test_an_engine_with_fixed_slots_fills_them_whatever_the_estimates() -> None:
    clock = Clock()
    a = admission(clock, max_sequences=3, fixed_slots=True)
    tasks = [await pending(a) for _ in range(4)]
    assert [task.done() for task in tasks] == [True, True, True, False]


async def test_until_the_engine_has_shown_its_speed_one_request_runs() -> None:
    clock = Clock()
    a = admission(clock)
    first = await a.admit(GRAMMAR)
    second = await pending(a)
    assert not second.done()  # no measurement yet: no guess either
    a.tokens(first, 1)  # first token
    run_steps(a, clock, [first], 0.05, 2)  # now its speed at batch 1 is known
    await settle()
    assert (await asyncio.wait_for(second, 1)).admitted_at is not None


async def test_a_fast_engine_fills_its_batch_up_to_the_ceiling() -> None:
    clock = Clock()
    a = admission(clock, max_sequences=4)
    first = await a.admit(GRAMMAR)
    a.tokens(first, 1)
    run_steps(a, clock, [first], 0.01, 3)
    waiting = [await pending(a) for _ in range(5)]
    assert [task.done() for task in waiting] == [True, True, True, False, False]
    assert a.status()["running"] == 4
    a.release(first)
    await settle()
    assert waiting[3].done() and not waiting[4].done()


async def test_requests_are_counted_at_their_real_size_against_the_kv_cache() -> None:
    clock = Clock()
    a = admission(clock, kv_tokens=1_000)
    first = await a.admit(RequestCost(prompt_tokens=300, max_tokens=300))
    a.tokens(first, 1)
    run_steps(a, clock, [first], 0.01, 3)
    small = await pending(a, RequestCost(prompt_tokens=200, max_tokens=100))
    large = await pending(a, RequestCost(prompt_tokens=300, max_tokens=300))
    assert small.done() and not large.done()  # 600 + 300 fits 1,000; another 600 does not
    assert a.status()["kv_tokens_reserved"] == 900
    a.release(first)
    await settle()
    assert large.done()


async def test_a_slow_engine_refuses_at_once_what_it_cannot_finish_in_time() -> None:
    clock = Clock()
    a = admission(
        clock,
        limits=AdmissionLimits(first_token_budget_s=25, finish_budget_s=60, always_admitted=1),
    )
    for _ in range(3):  # answers have used half of their max_tokens: 60 tokens
        answered = await a.admit(GRAMMAR)
        a.finished(answered, 60)
        a.release(answered)
    first = await a.admit(GRAMMAR)
    a.tokens(first, 1)
    run_steps(a, clock, [first], 0.6, 4)  # 0.6 s a token: 36 s for one answer alone
    # Two at once would take 72 s each if batching gained nothing: not admitted. Waiting, it
    # would start when the first is done (in about 34 s): past the 25 s first-token budget.
    with pytest.raises(Overloaded) as refused:
        await asyncio.wait_for(a.admit(GRAMMAR), 1)
    assert 20 <= refused.value.retry_after_s <= 35
    assert "first token" in refused.value.reason
    assert a.status()["refused"] == 1 and a.status()["waiting"] == 0


async def test_batching_that_pays_off_is_measured_and_used() -> None:
    clock = Clock()
    a = admission(clock, limits=AdmissionLimits(finish_budget_s=32, always_admitted=1))
    first = await a.admit(GRAMMAR)
    a.tokens(first, 1)
    run_steps(a, clock, [first], 0.2, 3)  # 0.2 s a token: 12 s for an answer alone
    second = await pending(a)
    third = await pending(a)
    assert second.done() and not third.done()  # 3 at once if batching gained nothing: 36 s
    tickets = [first, second.result()]
    a.tokens(tickets[1], 1)
    run_steps(a, clock, tickets, 0.21, 1)  # ... but two cost hardly more than one:
    assert a.speed.per_token[2] == pytest.approx(0.21)
    await settle()
    assert third.done()  # three at once is now guessed at 0.315 s a token: 19 s, in budget


async def test_a_waiting_request_is_refused_when_its_first_token_budget_runs_out() -> None:
    a = admission(Clock(), limits=AdmissionLimits(first_token_budget_s=0.05, always_admitted=1))
    await a.admit(GRAMMAR)  # running, never measured: the second cannot be judged
    with pytest.raises(Overloaded):
        await a.admit(GRAMMAR)
    assert a.status()["waiting"] == 0


async def test_a_client_that_leaves_while_waiting_gives_its_place_back() -> None:
    clock = Clock()
    a = admission(clock, max_sequences=1)
    first = await a.admit(GRAMMAR)
    leaving = await pending(a)
    staying = await pending(a)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert a.status()["waiting"] == 1
    a.release(first)
    await settle()
    assert staying.done() and a.status()["running"] == 1


async def test_a_client_that_leaves_just_as_it_was_admitted_frees_the_place() -> None:
    clock = Clock()
    a = admission(clock, max_sequences=1)
    first = await a.admit(GRAMMAR)
    leaving = await pending(a)
    a.release(first)  # admitted now, but the request's task has not run since
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert a.status()["running"] == 0


async def test_the_expected_output_follows_what_answers_really_use() -> None:
    a = admission(Clock())
    for _ in range(20):
        ticket = await a.admit(GRAMMAR)
        a.finished(ticket, 30)  # a quarter of max_tokens
        a.release(ticket)
    assert a.speed.output_share == pytest.approx(0.25, abs=0.01)
    ticket = await a.admit(GRAMMAR)
    assert ticket.expected(a.speed.output_share) == pytest.approx(30, abs=1)


async def test_no_refusal_rests_on_a_guessed_answer_length() -> None:
    clock = Clock()
    a = admission(clock, limits=AdmissionLimits(first_token_budget_s=0.2, always_admitted=1))
    first = await a.admit(GRAMMAR)
    a.tokens(first, 1)
    run_steps(a, clock, [first], 0.6, 4)  # slow, but no answer has finished yet
    waiting = await pending(a)
    assert not waiting.done()  # judged as if answers were short: it waits ...
    with pytest.raises(Overloaded):
        await waiting  # ... within its first-token budget
    assert a.speed.refusal_share() == pytest.approx(0.1)


def test_unseen_batch_sizes_are_guessed_pessimistically_between_measurements() -> None:
    speed = SpeedModel()
    assert speed.pessimistic(4) is None and speed.optimistic_throughput(4) is None
    speed.observe_step(2, 0.1)
    speed.observe_step(8, 0.2)
    assert speed.pessimistic(4) == pytest.approx(0.2)  # never above what 8 at once cost
    assert speed.pessimistic(1) == pytest.approx(0.1)  # nothing smaller seen: the next larger
    assert speed.pessimistic(16) == pytest.approx(0.4)  # as if batching gained nothing more
    assert speed.optimistic_throughput(16) == pytest.approx(80)  # as if it scaled perfectly
    assert speed.optimistic_throughput(8) == pytest.approx(40)


async def test_a_cohort_admitted_together_counts_its_shared_first_token_wait_once() -> None:
    """Requests that join together read their prompts together: one that joins alone later
    would not wait as long, and must not be refused for the cohort's wait."""
    clock = Clock()
    a = admission(clock)
    first = await a.admit(GRAMMAR)
    queued = [await pending(a) for _ in range(3)]  # no speed measured yet: they wait
    assert not any(task.done() for task in queued)
    clock.now += 1.0
    a.tokens(first, 1)  # a first token 1 s after admission
    run_steps(a, clock, [first], 0.05, 20)  # the speed at batch 1; the queue is pumped
    await settle()
    cohort = [task.result() for task in queued]
    assert [ticket.cohort for ticket in cohort] == [3, 3, 3]
    clock.now += 3.0  # their prompts, read together
    for ticket in cohort:
        a.tokens(ticket, 1)
    waits = [clock.now - ticket.admitted_at for ticket in cohort]  # type: ignore[operator]
    assert min(waits) >= 3.0
    expected = SpeedModel()
    for seconds in (1.0, *(wait / 3 for wait in waits)):  # the shared wait, a third each
        expected.observe_first_token(seconds)
    assert a.speed.first_token_s == pytest.approx(expected.first_token_s)
    assert a.speed.first_token_s < 1.5


def test_the_first_answers_replace_the_prior_output_share() -> None:
    """Three short answers are what a refusal is judged by: not the prior pulled a little way
    towards them."""
    speed = SpeedModel()
    for completion in (12, 18, 15):
        speed.observe_output(completion, max_tokens=120)
    assert speed.output_share == pytest.approx(45 / 360)
    assert speed.refusal_share() == pytest.approx(45 / 360)
    for _ in range(20):  # then a running average that follows a change
        speed.observe_output(120, max_tokens=120)
    assert speed.output_share > 0.95
