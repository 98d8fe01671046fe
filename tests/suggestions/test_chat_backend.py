"""ChatBackend against a real HTTP server on loopback, scripted to misbehave."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from suggestions import ChatBackend, LlamaRequest, LlamaResponse, RetryPolicy, TextDelta
from suggestions.errors import (
    AuthenticationFailed,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadBackendResponse,
    ConfigurationError,
    OutputTruncated,
    RateLimited,
    RequestRejected,
    StreamInterrupted,
)
from suggestions.prompts import build_messages, estimate_tokens
from suggestions.service import SuggestionService
from suggestions.testing import Reply, ScriptedServer, error_reply, json_reply, sse_reply
from suggestions.usage import UsageStore

KEY = "sk-test-0123456789abcdef"
REVISED = "She went to school yesterday and bought books."
DELTAS = ["She went", " to school", " yesterday and", " bought books."]


@pytest.fixture
def server() -> AsyncIterator[ScriptedServer]:
    with ScriptedServer() as running:
        yield running


class Harness:
    """A service with one ChatBackend (slot `custom`) aimed at the scripted server."""

    def __init__(self, server: ScriptedServer, state: Path, **backend_options: object) -> None:
        self.sleeps: list[float] = []
        options: dict = {
            "timeout": httpx.Timeout(2.0, connect=1.0),
            "retry": RetryPolicy(max_retries=2, base_delay_s=0.01, max_delay_s=0.05),
        } | backend_options
        self.backend = ChatBackend(
            name="custom",
            base_url=options.pop("base_url", server.url),
            model="writing-llama",
            label="scripted",
            api_key=KEY,
            sleep=self._sleep,
            **options,
        )
        self.usage = UsageStore(state / "usage.db")
        self.service = SuggestionService({"custom": self.backend}, usage=self.usage)

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def run(self, request: LlamaRequest) -> tuple[list[str], LlamaResponse]:
        deltas: list[str] = []
        response = None
        async for item in self.service.stream(request):
            if isinstance(item, TextDelta):
                deltas.append(item.text)
            else:
                response = item
        await self.service.aclose()  # writes the usage rows and closes the connection pool
        assert response is not None
        return deltas, response

    async def fail(
        self, request: LlamaRequest, error: type[BackendError]
    ) -> tuple[list[str], BackendError]:
        deltas: list[str] = []
        with pytest.raises(error) as caught:
            async for item in self.service.stream(request):
                if isinstance(item, TextDelta):
                    deltas.append(item.text)
        await self.service.aclose()
        return deltas, caught.value

    def usage_rows(self) -> list[tuple]:
        with sqlite3.connect(self.usage.path) as db:
            return db.execute(
                "SELECT backend, outcome, error_kind, prompt_tokens, completion_tokens, "
                "tokens_estimated, cached FROM usage_events ORDER BY id"
            ).fetchall()


@pytest.fixture
def harness(server: ScriptedServer, isolated_env: Path) -> Callable[..., Harness]:
    def make(**options: object) -> Harness:
        return Harness(server, isolated_env, **options)

    return make


async def test_streams_deltas_and_reports_exact_usage(
    server, harness, grammar_request, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    server.enqueue(sse_reply(DELTAS, model="writing-llama-v3", usage=(57, 11)))
    h = harness()
    deltas, response = await h.run(grammar_request)

    assert deltas == DELTAS
    assert response.revised_text == REVISED
    assert [(s.original, s.replacement) for s in response.suggestions] == [
        ("go", "went"),
        ("buyed a", "bought"),
    ]
    assert response.model_id == "writing-llama-v3"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (57, 11)
    assert response.usage.estimated is False
    assert response.time_to_first_token_ms is not None
    assert 0 < response.time_to_first_token_ms <= response.latency_ms

    [sent] = server.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.headers["Accept"] == "text/event-stream"
    assert sent.body["model"] == "writing-llama"
    assert sent.body["messages"] == build_messages(grammar_request)
    assert sent.body["stream"] is True and sent.body["temperature"] == 0.0
    assert h.usage_rows() == [("custom", "ok", None, 57, 11, 0, 0)]
    assert KEY not in caplog.text


@pytest.mark.parametrize("split_every", [1, 2, 3, 7])
async def test_survives_any_chunk_boundary_even_inside_a_utf8_character(
    server, harness, split_every: int
) -> None:
    text = ["Café ", "naïve ", "東京 ", "😀—", "done."]
    server.enqueue(sse_reply(text, split_every=split_every, pause_s=0.0005))
    deltas, response = await harness().run(
        LlamaRequest(text="Cafe naive Tokyo :) done", type="style")
    )
    assert deltas == text
    assert response.revised_text == "Café naïve 東京 😀—done."


async def test_ignores_comments_keep_alives_and_crlf_framing(
    server, harness, grammar_request
) -> None:
    body = (
        b": keep-alive\r\n\r\n"
        b'data: {"choices":[{"delta":{"role":"assistant"}}]}\r\n\r\n'
        b": ping\n\n"
        b'data: {"choices":[{"delta":{"content":"She went to school yesterday"}}]}\r\n\r\n'
        b'event: message\ndata: {"choices":[{"delta":{"content":" and bought books."},'
        b'"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    server.enqueue(Reply(headers={"Content-Type": "text/event-stream"}, parts=[body]))
    deltas, response = await harness().run(grammar_request)
    assert deltas == ["She went to school yesterday", " and bought books."]
    assert response.revised_text == REVISED


async def test_429_with_retry_after_is_honoured_then_succeeds(
    server, harness, grammar_request
) -> None:
    server.enqueue(error_reply(429, "slow down", headers={"Retry-After": "1"}), sse_reply(DELTAS))
    h = harness()
    _, response = await h.run(grammar_request)
    assert response.revised_text == REVISED
    assert len(server.requests) == 2
    assert h.sleeps == [1.0]


async def test_503_until_retries_are_spent(server, harness, grammar_request, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    server.default = error_reply(503, "model is loading")
    h = harness()
    deltas, error = await h.fail(grammar_request, BackendUnavailable)

    assert len(server.requests) == 3 == error.attempts
    assert deltas == []
    assert str(error) == (
        "Writing suggestions are temporarily unavailable. Please try again in a moment."
    )
    assert error.status_code == 503 and "model is loading" in error.detail
    assert len(h.sleeps) == 2
    assert 0.005 <= h.sleeps[0] <= 0.01 and 0.01 <= h.sleeps[1] <= 0.02  # backoff with jitter
    assert len(h.service.cache) == 0
    assert h.usage_rows() == [("custom", "error", "unavailable", 0, 0, 0, 0)]
    assert "kind=unavailable" in caplog.text and KEY not in caplog.text


async def test_retry_after_longer_than_we_wait_gives_up_at_once(
    server, harness, grammar_request
) -> None:
    server.enqueue(error_reply(429, headers={"Retry-After": "3600"}))
    h = harness()
    _, error = await h.fail(grammar_request, RateLimited)
    assert len(server.requests) == 1 and h.sleeps == []
    assert str(error) == "Writing suggestions are busy right now. Please try again in a moment."


async def test_drop_mid_stream_is_an_error_and_never_retried(
    server, harness, grammar_request
) -> None:
    server.enqueue(sse_reply(DELTAS, complete=False, done=False, finish_reason=None))
    h = harness()
    deltas, error = await h.fail(grammar_request, StreamInterrupted)
    assert deltas == DELTAS  # the caller saw the partial text...
    assert len(server.requests) == 1  # ...so it is not replayed
    assert len(h.service.cache) == 0  # ...and never cached
    assert str(error) == "The suggestion was interrupted before it finished. Please try again."
    prompt = estimate_tokens("".join(m["content"] for m in build_messages(grammar_request)))
    spent = ("custom", "error", "interrupted", prompt, estimate_tokens("".join(DELTAS)), 1, 0)
    assert h.usage_rows() == [spent]  # what the model did before the drop, estimated


async def test_clean_end_without_done_or_finish_reason_is_an_error(
    server, harness, grammar_request
) -> None:
    server.enqueue(sse_reply(DELTAS, done=False, finish_reason=None))
    h = harness()
    _, error = await h.fail(grammar_request, StreamInterrupted)
    assert "without [DONE] or a finish reason" in error.detail
    assert len(h.service.cache) == 0


async def test_a_finish_reason_without_done_is_enough(server, harness, grammar_request) -> None:
    server.enqueue(sse_reply(DELTAS, done=False))
    _, response = await harness().run(grammar_request)
    assert response.revised_text == REVISED


async def test_stall_before_headers_times_out_without_retry(
    server, harness, grammar_request
) -> None:
    server.enqueue(Reply(pause_before_headers_s=1.0, parts=[b"late"]))
    h = harness(timeout=httpx.Timeout(0.2, connect=1.0))
    _, error = await h.fail(grammar_request, BackendTimeout)
    assert len(server.requests) == 1
    assert str(error) == "Writing suggestions took too long to respond. Please try again."
    assert h.usage_rows()[0][1:3] == ("error", "timeout")


async def test_stall_mid_stream_times_out(server, harness, grammar_request) -> None:
    reply = sse_reply(DELTAS)
    reply.parts.insert(3, 1.0)  # after the role chunk and two deltas
    server.enqueue(reply)
    h = harness(timeout=httpx.Timeout(0.2, connect=1.0))
    deltas, _ = await h.fail(grammar_request, BackendTimeout)
    assert deltas == DELTAS[:2]
    assert len(h.service.cache) == 0


async def test_malformed_chunk_is_a_bad_response(server, harness, grammar_request) -> None:
    reply = sse_reply(DELTAS)
    reply.parts.insert(2, b"data: {not json\n\n")
    server.enqueue(reply)
    h = harness()
    deltas, error = await h.fail(grammar_request, BadBackendResponse)
    assert deltas == DELTAS[:1]
    assert "not JSON" in error.detail
    assert str(error) == "Writing suggestions sent an answer we could not read. Please try again."
    assert len(server.requests) == 1 and len(h.service.cache) == 0


async def test_an_error_object_in_the_stream_is_reported(server, harness, grammar_request) -> None:
    reply = sse_reply(DELTAS)
    reply.parts.insert(2, b'data: {"error": {"message": "CUDA out of memory"}}\n\n')
    server.enqueue(reply)
    _, error = await harness().fail(grammar_request, BackendUnavailable)
    assert "CUDA out of memory" in error.detail


async def test_401_is_not_retried_and_never_shows_the_key(
    server, harness, grammar_request, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    server.enqueue(error_reply(401, f"invalid key {KEY}"))
    h = harness()
    _, error = await h.fail(grammar_request, AuthenticationFailed)
    assert len(server.requests) == 1
    assert "MODAL_API_KEY" in error.detail
    for text in (str(error), error.detail, error.log_line(), repr(h.backend), caplog.text):
        assert KEY not in text
    assert "[redacted]" in error.detail


@pytest.mark.parametrize(
    ("status", "error"), [(400, RequestRejected), (413, RequestRejected), (500, BackendUnavailable)]
)
async def test_other_errors_are_not_retried(
    server, harness, grammar_request, status, error
) -> None:
    server.enqueue(error_reply(status, "no"))
    await harness().fail(grammar_request, error)
    assert len(server.requests) == 1


async def test_connection_refused_is_retried_then_reported(harness, grammar_request) -> None:
    with ScriptedServer() as gone:
        url = gone.url
    h = harness(base_url=url)
    _, error = await h.fail(grammar_request, BackendUnavailable)
    assert error.attempts == 3 and len(h.sleeps) == 2


async def test_length_finish_is_truncation_and_not_cached(server, harness, grammar_request) -> None:
    server.enqueue(sse_reply(DELTAS[:2], finish_reason="length"))
    h = harness()
    _, error = await h.fail(grammar_request, OutputTruncated)
    assert str(error) == "This passage is too long to revise in one go. Try a shorter selection."
    assert len(h.service.cache) == 0


async def test_missing_usage_is_estimated_and_flagged(server, harness, grammar_request) -> None:
    server.enqueue(sse_reply(DELTAS, usage=None))
    h = harness()
    _, response = await h.run(grammar_request)
    assert response.usage.estimated is True
    assert response.usage.completion_tokens == len(REVISED) // 4 + 1
    await h.service.flush_usage()
    assert h.usage_rows()[0][5] == 1


async def test_non_streaming_json_gives_the_same_result(server, harness, grammar_request) -> None:
    server.enqueue(sse_reply(DELTAS), json_reply(REVISED))
    _, streamed = await harness().run(grammar_request)
    deltas, plain = await harness(streaming=False).run(grammar_request)
    assert deltas == [REVISED]
    assert plain.revised_text == streamed.revised_text
    assert plain.suggestions == streamed.suggestions
    assert server.requests[1].body["stream"] is False


async def test_second_identical_request_comes_from_the_cache(
    server, harness, grammar_request
) -> None:
    server.enqueue(sse_reply(DELTAS))
    h = harness()
    _, first = await h.run(grammar_request)
    deltas, second = await h.run(grammar_request)
    assert len(server.requests) == 1
    assert second.cached is True and first.cached is False
    assert deltas == [REVISED]
    assert second.suggestions == first.suggestions
    await h.service.flush_usage()
    assert [row[6] for row in h.usage_rows()] == [0, 1]


async def test_a_consumer_that_stops_early_is_recorded_as_cancelled(
    server, harness, grammar_request
) -> None:
    server.enqueue(sse_reply(DELTAS, pause_s=0.05))
    h = harness()
    stream = h.service.stream(grammar_request)
    first = await anext(stream)
    assert first == TextDelta(DELTAS[0])
    await stream.aclose()
    await h.service.aclose()
    prompt = estimate_tokens("".join(m["content"] for m in build_messages(grammar_request)))
    spent = estimate_tokens(DELTAS[0])
    assert h.usage_rows() == [("custom", "cancelled", None, prompt, spent, 1, 0)]
    assert len(h.service.cache) == 0
    for _ in range(100):  # the server notices the closed connection at its next write
        if server.disconnects:
            break
        await asyncio.sleep(0.02)
    assert server.disconnects == 1


async def test_a_key_with_a_trailing_newline_is_sent_trimmed(
    server, isolated_env, grammar_request
) -> None:
    server.enqueue(sse_reply(DELTAS))
    backend = ChatBackend(
        name="custom", base_url=server.url, model="m", label="scripted", api_key=f"{KEY}\n"
    )
    service = SuggestionService({"custom": backend})
    await service.suggest(grammar_request)
    await service.aclose()
    assert server.requests[0].headers["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("bad_key", [f"{KEY[:8]} {KEY[8:]}", f"{KEY}\x00", f"{KEY}é"])
def test_a_key_a_header_cannot_carry_is_refused_without_echoing_it(bad_key: str) -> None:
    with pytest.raises(ConfigurationError, match="MODAL_API_KEY contains spaces") as caught:
        ChatBackend(name="custom", base_url="http://x", model="m", label="l", api_key=bad_key)
    assert KEY[8:] not in str(caught.value)


async def test_no_part_of_the_key_survives_in_a_long_error_body(
    server, harness, grammar_request
) -> None:
    server.enqueue(error_reply(401, "x" * 480 + f" rejected key {KEY} " + "y" * 400))
    _, error = await harness().fail(grammar_request, AuthenticationFailed)
    assert KEY[:6] not in error.detail
    assert len(error.detail) < 600


@pytest.mark.parametrize(
    ("finish_reason", "error"),
    [
        ("content_filter", RequestRejected),
        ("abort", BadBackendResponse),
        ("length", OutputTruncated),
    ],
)
async def test_an_answer_that_stopped_early_is_an_error_and_not_cached(
    server, harness, grammar_request, finish_reason, error
) -> None:
    server.enqueue(sse_reply(DELTAS[:1], finish_reason=finish_reason))
    h = harness()
    _, raised = await h.fail(grammar_request, error)
    assert finish_reason in raised.detail
    assert len(h.service.cache) == 0


async def test_keep_alives_cannot_stretch_a_call_past_its_deadline(
    server, harness, grammar_request
) -> None:
    reply = sse_reply(DELTAS[:1], finish_reason=None, done=False)
    for _ in range(60):
        reply.parts += [0.05, b": keep-alive\n\n"]
    server.enqueue(reply)
    h = harness(timeout=httpx.Timeout(0.3, connect=1.0), total_timeout_s=0.5)
    started = asyncio.get_running_loop().time()
    deltas, error = await h.fail(grammar_request, BackendTimeout)
    assert deltas == DELTAS[:1]
    assert "within 0.5s" in error.detail
    assert asyncio.get_running_loop().time() - started < 2.0


@pytest.mark.parametrize(
    "chunk",
    [
        b'data: {"choices": {"0": {"delta": {"content": "x"}}}}\n\n',
        b'data: {"choices": [{"delta": "x"}]}\n\n',
        b'data: {"choices": [{"delta": {"content": 5}}]}\n\n',
        b"data: [1, 2]\n\n",
    ],
)
async def test_odd_shaped_chunks_are_bad_responses(server, harness, grammar_request, chunk) -> None:
    reply = sse_reply(DELTAS)
    reply.parts.insert(2, chunk)
    server.enqueue(reply)
    await harness().fail(grammar_request, BadBackendResponse)


async def test_a_non_string_model_id_falls_back_to_the_configured_one(
    server, harness, grammar_request
) -> None:
    body = (
        b'data: {"model": 7, "choices": [{"delta": {"content": "She went to school yesterday '
        b'and bought books."}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'
    )
    server.enqueue(Reply(headers={"Content-Type": "text/event-stream"}, parts=[body]))
    _, response = await harness().run(grammar_request)
    assert response.model_id == "writing-llama"


async def test_a_redirect_is_reported_not_followed(server, harness, grammar_request) -> None:
    server.enqueue(Reply(status=307, headers={"Location": "https://elsewhere.example/v1"}))
    _, error = await harness().fail(grammar_request, BackendUnavailable)
    assert "redirects (307) to https://elsewhere.example/v1" in error.detail
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "usage",
    [b'{"prompt_tokens": -1, "completion_tokens": 2}', b'{"prompt_tokens": "many"}', b"{}", b"7"],
)
async def test_malformed_usage_is_estimated_instead_of_failing(
    server, harness, grammar_request, usage, caplog
) -> None:
    body = (
        b'data: {"choices": [{"delta": {"content": "She went to school yesterday and bought '
        b'books."}, "finish_reason": "stop"}], "usage": ' + usage + b"}\n\ndata: [DONE]\n\n"
    )
    server.enqueue(Reply(headers={"Content-Type": "text/event-stream"}, parts=[body]))
    _, response = await harness().run(grammar_request)
    assert response.revised_text == REVISED
    assert response.usage.estimated is True
    assert "ignoring malformed usage" in caplog.text


@pytest.mark.parametrize("finish_reason", ["stop", "eos", "eos_token", "end_turn"])
async def test_normal_finish_reasons_of_common_servers_are_complete(
    server, harness, grammar_request, finish_reason
) -> None:
    server.enqueue(sse_reply(DELTAS, finish_reason=finish_reason))
    _, response = await harness().run(grammar_request)
    assert response.revised_text == REVISED


async def test_an_undecodable_body_is_a_bad_response(server, harness, grammar_request) -> None:
    server.enqueue(
        Reply(
            headers={"Content-Type": "text/event-stream", "Content-Encoding": "gzip"},
            parts=[b"this is not gzip at all"],
        )
    )
    await harness().fail(grammar_request, BadBackendResponse)


async def test_a_retry_that_would_outlast_the_deadline_reports_the_real_failure(
    server, harness, grammar_request
) -> None:
    server.enqueue(error_reply(429, headers={"Retry-After": "5"}))
    h = harness(total_timeout_s=2.0)
    await h.fail(grammar_request, RateLimited)
    assert h.sleeps == []
    assert len(server.requests) == 1


async def test_the_deadline_also_bounds_a_plain_json_answer(
    server, harness, grammar_request
) -> None:
    reply = json_reply(REVISED)
    reply.parts.insert(0, 1.0)  # headers at once, then the body stalls past the deadline
    server.enqueue(reply)
    h = harness(streaming=False, total_timeout_s=0.4)
    _, error = await h.fail(grammar_request, BackendTimeout)
    assert "within 0.4s" in error.detail


async def test_cancelling_the_caller_mid_read_is_a_cancellation_not_a_timeout(
    server, harness, grammar_request
) -> None:
    server.enqueue(sse_reply(DELTAS, pause_s=0.5))
    h = harness(total_timeout_s=30.0)
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for _ in h.service.stream(grammar_request):
            first_delta.set()

    task = asyncio.create_task(consume())
    await first_delta.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await h.service.aclose()
    assert h.usage_rows()[0][1] == "cancelled"


async def test_a_truncated_answer_records_the_tokens_the_server_reported(
    server, harness, grammar_request
) -> None:
    server.enqueue(sse_reply(DELTAS[:2], finish_reason="length", usage=(122, 68)))
    h = harness()
    await h.fail(grammar_request, OutputTruncated)
    assert h.usage_rows() == [("custom", "error", "truncated", 122, 68, 0, 0)]


async def test_a_dropped_stream_records_an_estimate_of_what_was_spent(
    server, harness, grammar_request
) -> None:
    server.enqueue(sse_reply(DELTAS[:2], finish_reason=None, done=False))
    h = harness()
    await h.fail(grammar_request, StreamInterrupted)
    prompt = estimate_tokens("".join(m["content"] for m in build_messages(grammar_request)))
    streamed = estimate_tokens("".join(DELTAS[:2]))
    assert h.usage_rows() == [("custom", "error", "interrupted", prompt, streamed, 1, 0)]


async def test_a_refused_call_records_no_tokens(server, harness, grammar_request) -> None:
    server.enqueue(error_reply(401, "bad key"))
    h = harness()
    await h.fail(grammar_request, AuthenticationFailed)
    assert h.usage_rows() == [("custom", "error", "auth", 0, 0, 0, 0)]


async def test_the_payload_is_the_wire_request_the_server_validates(
    server, harness, grammar_request
) -> None:
    """One request model for both sides: what the client sends reads back unchanged."""
    from suggestions.wire import ChatCompletionRequest

    server.enqueue(sse_reply(DELTAS))
    await harness().service.suggest(grammar_request)
    sent = server.requests[0].body
    assert ChatCompletionRequest.model_validate(sent).body() == sent
    assert sent["messages"] == build_messages(grammar_request)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


HOSTILE_KINDS = json.loads((Path(__file__).parents[1] / "hostile_kinds.json").read_text())
"""Each hostile case and the error kind it must give: the TypeScript client's tests
(clients/typescript/test/hostile.test.ts) read the same table, so both clients agree."""


def _hostile_reply(case: str) -> Reply | None:
    stalled = sse_reply(DELTAS)
    stalled.parts.insert(3, 1.0)
    malformed = sse_reply(DELTAS)
    malformed.parts.insert(2, b"data: {not json\n\n")
    return {
        "rate_limited": error_reply(429, headers={"Retry-After": "3600"}),
        "server_error": error_reply(503, "down"),
        "stall_before_headers": Reply(pause_before_headers_s=1.0, parts=[b"late"]),
        "stall_mid_stream": stalled,
        "drop_mid_stream": sse_reply(DELTAS, complete=False, done=False, finish_reason=None),
        "malformed_chunk": malformed,
        "unauthorized": error_reply(401, "no"),
        "rejected": error_reply(422, "text: too long"),
        "connection_refused": None,
    }[case]


@pytest.mark.parametrize("case", sorted(HOSTILE_KINDS))
async def test_each_hostile_case_gives_the_kind_both_clients_share(
    server, harness, grammar_request, case: str
) -> None:
    reply = _hostile_reply(case)
    options: dict[str, object] = {"timeout": httpx.Timeout(0.2, connect=1.0)}
    if reply is None:
        with ScriptedServer() as gone:
            options["base_url"] = gone.url
    else:
        server.default = reply
    _, error = await harness(**options).fail(grammar_request, BackendError)
    assert error.kind == HOSTILE_KINDS[case]
