"""The model service end to end: our client, real HTTP over loopback, the server, and the
transformers engine running a tiny Llama built here and loaded through the real loading code."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from modal_backend.serving.engines.base import Delta, SamplingParams, SingleModel, ThreadedStream
from modal_backend.serving.engines.transformers_engine import TransformersEngine
from modal_backend.serving.local import serve_in_thread
from modal_backend.serving.server import ServiceLimits, create_app
from suggestions import LlamaResponse, SuggestionService
from suggestions.backends.chat import ChatBackend
from suggestions.prompts import build_messages
from tests.model_service_support import (
    API_KEY,
    GRAMMAR_ANSWER,
    GRAMMAR_REQUEST,
    auth,
    running_service,
    tiny_model_dir,
)

MESSAGES = [
    {"role": "system", "content": "You are a careful editor."},
    {"role": "user", "content": "Passage:\nShe go to school yesterday."},
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("models"), "rambling")


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> TransformersEngine:
    return TransformersEngine.load(model_dir, model_id="tiny-llama", version="test-1")


@pytest.fixture(scope="module")
def service_url(engine: TransformersEngine) -> Iterator[str]:
    with running_service(engine) as url:
        yield url


def chat(url: str, **body: object) -> httpx.Response:
    payload = {"messages": MESSAGES, "max_tokens": 24, **body}
    return httpx.post(f"{url}/v1/chat/completions", json=payload, headers=auth(), timeout=60)


def sse_events(response: httpx.Response) -> list[dict[str, object] | str]:
    events: list[dict[str, object] | str] = []
    for line in response.text.splitlines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def expected_generation(engine: TransformersEngine, max_tokens: int) -> tuple[int, list[int]]:
    """Prompt length and generated ids from `model.generate` called directly, as the reference."""
    import torch

    ids = engine.prompt_ids(MESSAGES)  # type: ignore[arg-type]
    with torch.inference_mode():
        output = engine.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_tokens,
            do_sample=False,
            eos_token_id=list(engine.stop_token_ids),
            pad_token_id=engine.tokenizer.pad_token_id,
        )
    return ids.shape[-1], output[0, ids.shape[-1] :].tolist()


def test_streaming_and_json_give_the_same_text_and_exact_usage(
    service_url: str, engine: TransformersEngine
) -> None:
    plain = chat(service_url).json()
    streamed = chat(service_url, stream=True)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed)
    assert events[-1] == "[DONE]"
    chunks = [event for event in events[:-1] if isinstance(event, dict)]
    text = "".join(
        chunk["choices"][0]["delta"].get("content", "")  # type: ignore[index]
        for chunk in chunks
        if chunk["choices"]
    )
    assert text == plain["choices"][0]["message"]["content"]
    assert len(chunks) > 2
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "length"  # type: ignore[index]
    assert final["usage"] == plain["usage"]

    prompt_tokens, generated = expected_generation(engine, 24)
    assert plain["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(generated),
        "total_tokens": prompt_tokens + len(generated),
    }
    assert text == engine.tokenizer.decode(generated, skip_special_tokens=True)
    assert plain["model"] == "tiny-llama"


async def test_our_client_gets_a_real_correction_from_the_server(tmp_path: Path) -> None:
    engine = TransformersEngine.load(tiny_model_dir(tmp_path, "taught"), model_id="tiny-llama")
    with running_service(engine) as url:
        response = await _suggest(url)
    assert response.revised_text == GRAMMAR_ANSWER
    assert [(s.original, s.replacement, s.start) for s in response.suggestions] == [
        ("go", "went", 4)
    ]
    assert response.model_id == "tiny-llama"
    assert response.usage is not None and not response.usage.estimated
    assert response.usage.prompt_tokens > 20
    assert response.time_to_first_token_ms is not None


async def _suggest(url: str) -> LlamaResponse:
    backend = ChatBackend(
        name="custom",
        base_url=url,
        model="tiny-llama",
        label="test",
        api_key=API_KEY,
        key_env_var="MODAL_API_KEY",
        build_prompt=build_messages,
    )
    service = SuggestionService({"custom": backend})
    try:
        return await service.suggest(GRAMMAR_REQUEST, backend="custom")
    finally:
        await service.aclose()


def test_a_request_without_or_with_a_wrong_key_is_refused(service_url: str) -> None:
    url = f"{service_url}/v1/chat/completions"
    body = {"messages": MESSAGES}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        response = httpx.post(url, json=body, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["type"] == "authentication_error"
        assert API_KEY not in response.text
    assert httpx.get(f"{service_url}/v1/models").status_code == 401


def test_health_needs_no_key_and_reveals_no_secret(service_url: str) -> None:
    response = httpx.get(f"{service_url}/health")
    assert response.status_code == 200
    body = response.json()
    admission = body.pop("admission")
    assert body == {
        "status": "ready",
        "model": "tiny-llama",
        "version": "test-1",
        "models": {"tiny-llama": "test-1"},
    }
    assert admission["max_sequences"] == 1 and admission["kv_token_capacity"] is None
    assert {"running", "waiting", "seconds_per_token", "refused"} <= admission.keys()
    models = httpx.get(f"{service_url}/v1/models", headers=auth()).json()
    assert [model["id"] for model in models["data"]] == ["tiny-llama"]
    assert models["data"][0]["version"] == "test-1"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
        ({"messages": MESSAGES, "max_tokens": 0}, 400, "max_tokens"),
        ({"messages": MESSAGES, "max_tokens": 16_385}, 400, "at most 16,384"),
        ({"messages": MESSAGES, "temperature": 3}, 400, "temperature"),
        ({"messages": MESSAGES, "stop": ["\n"]}, 400, "stop sequences"),
        ({"messages": MESSAGES, "model": "gpt-4o"}, 404, "tiny-llama"),
        ({"messages": [{"role": "user", "content": "x" * 40_001}]}, 413, "40,000 characters"),
    ],
)
def test_bad_requests_get_openai_shaped_errors(
    service_url: str, body: dict[str, object], status: int, words: str
) -> None:
    response = httpx.post(f"{service_url}/v1/chat/completions", json=body, headers=auth())
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code"}
    assert words in error["message"]


def test_max_tokens_up_to_the_clients_budget_is_accepted(service_url: str) -> None:
    body = {"messages": MESSAGES, "max_tokens": 16_384, "stream": True}
    url = f"{service_url}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=auth()) as response:
        assert response.status_code == 200  # then leave: generation stops


def test_a_body_that_is_not_json_is_a_400(service_url: str) -> None:
    response = httpx.post(
        f"{service_url}/v1/chat/completions", content=b'{"messages"', headers=auth()
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_the_model_stops_on_llama3_end_of_turn(tmp_path: Path) -> None:
    engine = TransformersEngine.load(tiny_model_dir(tmp_path, "mute"), model_id="mute")
    eot = engine.tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert eot in engine.stop_token_ids and eot != engine.tokenizer.eos_token_id

    async def run() -> list[object]:
        return [event async for event in engine.stream(MESSAGES, SamplingParams(max_tokens=50))]  # type: ignore[arg-type]

    events = asyncio.run(run())
    assert len(events) == 1
    finished = events[0]
    assert finished.finish_reason == "stop"  # type: ignore[attr-defined]
    assert finished.completion_tokens == 1  # type: ignore[attr-defined]


def test_a_client_that_disconnects_stops_its_generation(
    service_url: str, engine: TransformersEngine
) -> None:
    before = engine.tokens_generated
    with (
        httpx.Client(timeout=60) as client,
        client.stream(
            "POST",
            f"{service_url}/v1/chat/completions",
            json={"messages": MESSAGES, "max_tokens": 8000, "stream": True},
            headers=auth(),
        ) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: "):
                break
    time.sleep(1.0)
    settled = engine.tokens_generated - before
    time.sleep(0.5)
    assert engine.tokens_generated - before == settled, "generation went on after the disconnect"
    assert settled < 2000, f"{settled} of 8000 tokens were generated for a client that left"


def test_a_json_client_that_disconnects_stops_its_generation(
    service_url: str, engine: TransformersEngine
) -> None:
    before = engine.tokens_generated
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{service_url}/v1/chat/completions",
            json={"messages": MESSAGES, "max_tokens": 8000},
            headers=auth(),
            timeout=httpx.Timeout(5, read=0.3),
        )
    time.sleep(1.0)
    settled = engine.tokens_generated - before
    time.sleep(0.5)
    assert engine.tokens_generated - before == settled
    assert settled < 2000


def test_saturation_answers_503_with_retry_after(engine: TransformersEngine) -> None:
    limits = ServiceLimits(first_token_budget_s=0.3, retry_after_s=3)
    with running_service(engine, limits) as url, httpx.Client(timeout=60) as client:
        with client.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json={"messages": MESSAGES, "max_tokens": 8000, "stream": True},
            headers=auth(),
        ) as busy:
            lines = busy.iter_lines()  # kept: a dropped iterator closes the response
            next(lines)  # the one slot is now taken
            started = time.perf_counter()
            refused = client.post(
                f"{url}/v1/chat/completions", json={"messages": MESSAGES}, headers=auth()
            )
            waited = time.perf_counter() - started
        assert refused.status_code == 503
        assert 3 <= int(refused.headers["retry-after"]) <= 60  # when the work ahead is done
        assert refused.json()["error"]["code"] == "overloaded"
        assert waited < 5  # refused at once, or when the 0.3 s first-token budget ran out
        # The slot is given back once the busy client has gone.
        assert _eventually_ok(lambda: chat(url))


def test_a_client_that_leaves_the_queue_gives_its_place_back(engine: TransformersEngine) -> None:
    limits = ServiceLimits(first_token_budget_s=600, finish_budget_s=3600)  # it would wait
    with (
        running_service(engine, limits) as url,
        httpx.Client(timeout=60) as client,
        client.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json={"messages": MESSAGES, "max_tokens": 8000, "stream": True},
            headers=auth(),
        ) as busy,
    ):
        lines = busy.iter_lines()
        next(lines)  # the one place is taken
        with pytest.raises(httpx.ReadTimeout):
            client.post(
                f"{url}/v1/chat/completions",
                json={"messages": MESSAGES},
                headers=auth(),
                timeout=httpx.Timeout(5, read=0.5),
            )
        health = f"{url}/health"
        assert _eventually(lambda: httpx.get(health).json()["admission"]["waiting"] == 0)
        assert httpx.get(health).json()["admission"]["running"] == 1


def test_health_says_loading_until_the_model_is_loaded(model_dir: Path) -> None:
    release = threading.Event()

    def slow_loader() -> TransformersEngine:
        release.wait(30)
        return TransformersEngine.load(model_dir)  # the app owns (and closes) what it loads

    app = create_app(slow_loader, api_key=API_KEY)
    with serve_in_thread(app) as url:
        loading = httpx.get(f"{url}/health")
        assert loading.status_code == 503
        assert loading.json() == {"status": "loading"}
        refused = chat(url)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "model_loading"
        assert "retry-after" in refused.headers
        release.set()
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert chat(url).status_code == 200


def test_a_model_that_fails_to_load_is_reported_without_detail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_loader() -> TransformersEngine:
        raise OSError("disk /secret/path unreadable")

    app = create_app(broken_loader, api_key=API_KEY)
    with caplog.at_level(logging.ERROR), serve_in_thread(app) as url:
        deadline = time.monotonic() + 10
        while (health := httpx.get(f"{url}/health")).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert health.status_code == 503
        assert health.json() == {"status": "failed"}
        assert "/secret/path" not in chat(url).text
    assert "/secret/path" in caplog.text


def test_one_log_line_per_request_without_text_or_key(
    service_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="modal_backend.requests"):
        response = chat(service_url, stream=True, user="x")
        deadline = time.monotonic() + 5  # the line is written just after the last byte is sent
        while not (lines := _request_lines(caplog)) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        lines = _request_lines(caplog)
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["request_id"] == response.headers["x-request-id"]
    assert record["status"] == 200
    assert record["model"] == "tiny-llama"
    assert record["completion_tokens"] == 24
    assert record["prompt_tokens"] > 0
    assert 0 < record["ttft_ms"] <= record["total_ms"]
    assert "school" not in lines[0] and API_KEY not in lines[0]


def test_the_openai_client_streams_from_our_server(service_url: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{service_url}/v1", api_key=API_KEY, max_retries=0)
    stream = client.chat.completions.create(
        model="tiny-llama",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 24
    assert [m.id for m in client.models.list()] == ["tiny-llama"]
    client.close()


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "modal_backend.requests"]


def _eventually(check: Callable[[], bool], within_s: float = 10) -> bool:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _eventually_ok(call: Callable[[], httpx.Response], within_s: float = 10) -> bool:
    deadline = time.monotonic() + within_s
    while (response := call()).status_code != 200:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return response.status_code == 200


class _BrokenEngine(SingleModel):
    """An engine that fails in a given way: the failure paths of the server, nothing else."""

    model_id = "broken"
    version = "0"
    max_concurrency = 1

    def __init__(self, fail: str) -> None:
        self.fail = fail

    def stream(self, messages: object, params: object, model: object = None) -> ThreadedStream:
        def work(emit: Callable[[object], None], stop: object) -> None:
            emit(Delta("Half an answer"))
            if self.fail == "error":
                raise RuntimeError("CUDA error: device-side assert")
            # "silent": ends without a Finished event

        return ThreadedStream(work)  # type: ignore[arg-type]

    def close(self) -> None:
        pass


@pytest.mark.parametrize("fail", ["error", "silent"])
def test_an_engine_failing_mid_answer_is_an_error_not_a_short_answer(fail: str) -> None:
    with running_service(_BrokenEngine(fail)) as url:  # type: ignore[arg-type]
        streamed = chat(url, stream=True)
        events = sse_events(streamed)
        assert "[DONE]" not in events
        assert isinstance(events[-1], dict) and events[-1]["error"]["type"] == "server_error"  # type: ignore[index]
        plain = chat(url)
        assert plain.status_code == 500
        assert plain.json()["error"]["code"] == "engine_error"
        assert "CUDA" not in plain.text
        assert chat(url, stream=True).status_code == 200  # the slot was given back each time


def test_a_body_over_the_size_cap_is_refused_before_it_is_read(service_url: str) -> None:
    response = httpx.post(
        f"{service_url}/v1/chat/completions",
        content=b"x" * (12 * 40_000 + 65_537),
        headers=auth(),
    )
    assert response.status_code == 413
    assert "40,000 characters" in response.json()["error"]["message"]


def test_a_lora_adapter_is_applied_on_its_base(model_dir: Path, tmp_path: Path) -> None:
    """Base + adapter (PEFT) generates what the merged weights generate, not what the base does."""
    import torch
    from peft import LoraConfig, get_peft_model

    base = TransformersEngine.load(model_dir)
    tuned = get_peft_model(
        base.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"])
    )
    with torch.no_grad():
        torch.manual_seed(1)
        for name, weight in tuned.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.5)  # a freshly made adapter is a no-op; this one is not
    tuned.save_pretrained(tmp_path / "adapter")
    tuned.merge_and_unload().save_pretrained(tmp_path / "merged")
    base.tokenizer.save_pretrained(tmp_path / "merged")

    def answer(engine: TransformersEngine) -> str:
        async def run() -> str:
            stream = engine.stream(MESSAGES, SamplingParams(max_tokens=16))  # type: ignore[arg-type]
            return "".join([e.text async for e in stream if isinstance(e, Delta)])

        return asyncio.run(run())

    with_adapter = TransformersEngine.load(model_dir, adapter_path=tmp_path / "adapter")
    merged = TransformersEngine.load(tmp_path / "merged")
    assert answer(with_adapter) == answer(merged)
    assert answer(with_adapter) != answer(TransformersEngine.load(model_dir))
