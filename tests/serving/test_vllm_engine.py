"""The vLLM engine for real, on this CPU: SmolLM2-135M-Instruct as the base and LoRA adapters as
further model ids, behind our server, read by the official OpenAI SDK.

One engine serves the whole module (a start costs 25-45 s). It is started with the adapter
shipped in the repository as `writing-llama`; a second, deliberately different adapter (random
LoRA weights) stands in for a newly promoted run.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rapidfuzz import fuzz

from modal_backend.serving.engines.base import Delta, Finished, SamplingParams
from modal_backend.serving.local_bases import SMOLLM2_MODEL_ID, ensure_smollm2
from modal_backend.serving.promotion_follower import PromotionFollower
from modal_backend.serving.registry import Registry
from modal_backend.serving.server import ServiceLimits
from modal_backend.serving.shipped_adapter import verified_adapter
from suggestions.prompts import build_messages
from tests.model_service_support import API_KEY, GRAMMAR_REQUEST, auth, running_service

pytest.importorskip("vllm", reason="vLLM is installed by `make test` on Linux x86-64 only")
from modal_backend.serving.engines.vllm_engine import VLLMEngine, VLLMSettings

pytestmark = pytest.mark.timeout(600)
TUNED = "writing-llama"
MESSAGES = build_messages(GRAMMAR_REQUEST)


@pytest.fixture(scope="module")
def base_folder() -> Path:
    return ensure_smollm2(progress=False)


@pytest.fixture(scope="module")
def other_adapter(base_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA whose answers are nothing like the shipped run's: random, non-zero B matrices."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"])
    tuned = get_peft_model(model, config)
    with torch.no_grad():
        for name, weight in tuned.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.05)
    folder = tmp_path_factory.mktemp("adapter") / "other"
    tuned.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def engine(base_folder: Path) -> Iterator[VLLMEngine]:
    shipped = verified_adapter()
    engine = VLLMEngine(
        base_folder,
        model_id=SMOLLM2_MODEL_ID,
        version="stock",
        adapters={TUNED: (shipped.path, shipped.version)},
        settings=VLLMSettings(max_model_len=1024, max_num_seqs=8),
    )
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def url(engine: VLLMEngine) -> Iterator[str]:
    with running_service(engine) as base_url:
        yield base_url


def answer(engine: VLLMEngine, model: str | None, max_tokens: int = 48) -> tuple[str, Finished]:
    async def collect() -> tuple[str, Finished]:
        text, finished = "", None
        async for event in engine.stream(MESSAGES, SamplingParams(max_tokens=max_tokens), model):
            if isinstance(event, Delta):
                text += event.text
            else:
                finished = event
        assert finished is not None
        return text, finished

    return asyncio.run(collect())


def test_streams_deltas_with_exact_usage_through_the_openai_sdk(
    engine: VLLMEngine, url: str
) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key=API_KEY)
    stream = client.chat.completions.create(
        model=TUNED,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=48,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 2, "one delta per step, not one lump"
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.prompt_tokens == len(engine.prompt_ids(MESSAGES))
    text = "".join(pieces)
    completion = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert abs(usage.completion_tokens - len(completion)) <= 1  # +1: the end-of-turn token
    assert all(c.model == TUNED for c in chunks)


def test_base_and_adapter_are_two_ids_with_different_answers(engine: VLLMEngine, url: str) -> None:
    models = httpx.get(f"{url}/v1/models", headers=auth()).json()["data"]
    versions = {m["id"]: m["version"] for m in models}
    assert versions == {SMOLLM2_MODEL_ID: "stock", TUNED: verified_adapter().version}
    health = httpx.get(f"{url}/health").json()
    assert health["models"] == versions and health["engine"] == "vllm"
    tuned, _ = answer(engine, TUNED)
    stock, _ = answer(engine, None)
    assert tuned != stock
    # Our run answers with the edited passage alone; its base talks about it.
    assert len(tuned) < 1.5 * len(GRAMMAR_REQUEST.text) < len(stock), (tuned, stock)


def test_the_engine_reports_its_batch_ceiling_and_its_kv_cache(engine: VLLMEngine) -> None:
    assert engine.max_concurrency == 8  # max_num_seqs: how many fit is admission's call
    assert engine.kv_token_capacity is not None
    assert engine.kv_token_capacity >= engine.settings.max_model_len


def test_a_real_overload_gets_503_with_retry_after_never_a_500(engine: VLLMEngine) -> None:
    limits = ServiceLimits(first_token_budget_s=1.0, finish_budget_s=3.0)

    async def burst(url: str) -> list[httpx.Response]:
        body = {"model": TUNED, "messages": MESSAGES, "max_tokens": 256}
        async with httpx.AsyncClient(timeout=120) as client:
            calls = [
                client.post(f"{url}/v1/chat/completions", json=body, headers=auth())
                for _ in range(24)
            ]
            return list(await asyncio.gather(*calls))

    with running_service(engine, limits) as url:
        replies = asyncio.run(burst(url))
        health = httpx.get(f"{url}/health").json()["admission"]
    statuses = sorted(reply.status_code for reply in replies)
    assert set(statuses) == {200, 503}, statuses  # some answered, some refused, nothing else
    for reply in replies:
        if reply.status_code == 503:
            assert int(reply.headers["retry-after"]) >= 1
            assert reply.json()["error"]["code"] == "overloaded"
        else:
            assert reply.json()["choices"][0]["message"]["content"]
    assert health["refused"] == statuses.count(503)
    assert health["running"] == health["waiting"] == 0


def test_a_prompt_longer_than_the_context_is_a_413(url: str) -> None:
    reply = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": TUNED, "messages": [{"role": "user", "content": "word " * 1500}]},
        headers=auth(),
        timeout=60,
    )
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "context_length_exceeded"


def test_a_client_that_leaves_aborts_its_request(engine: VLLMEngine, url: str) -> None:
    body = {
        "model": SMOLLM2_MODEL_ID,
        "messages": [{"role": "user", "content": "Write a very long story about the sea."}],
        "max_tokens": 900,
        "temperature": 1.0,
        "seed": 1,
        "stream": True,
    }
    before = engine.tokens_generated
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers=auth(), timeout=60
    ) as reply:
        for count, _ in enumerate(reply.iter_lines()):
            if count > 5:
                break
    time.sleep(2)
    spent = engine.tokens_generated - before
    time.sleep(2)
    assert engine.tokens_generated - before == spent, "generation went on after the client left"
    assert spent < 300
    assert engine._engine.get_num_unfinished_requests() == 0


def test_a_promotion_lets_the_request_in_flight_finish_on_the_old_adapter(
    engine: VLLMEngine, other_adapter: Path, tmp_path: Path
) -> None:
    shipped = verified_adapter()
    old_solo, _ = answer(engine, TUNED, max_tokens=64)
    root = tmp_path / "weights"
    registry = Registry(root)
    run_dir = registry.run_dir("run-new")
    (run_dir / "adapter").mkdir(parents=True)
    for item in other_adapter.iterdir():
        (run_dir / "adapter" / item.name).write_bytes(item.read_bytes())
    registry.write_manifest("run-new", {"run_id": "run-new", "version": "v-new"})
    follower = PromotionFollower(engine, root, model_id=TUNED)
    assert follower.check() is False  # nothing promoted yet: nothing changes

    in_flight: dict[str, str] = {}
    started = threading.Event()

    async def slow_reader() -> None:
        text = ""
        stream = engine.stream(MESSAGES, SamplingParams(max_tokens=64), TUNED)
        async for event in stream:
            if isinstance(event, Delta):
                text += event.text
                started.set()
                await asyncio.sleep(0.05)
        in_flight["text"] = text

    reader = threading.Thread(target=lambda: asyncio.run(slow_reader()))
    reader.start()
    try:
        assert started.wait(60)
        registry.promote("run-new", reason="test")
        assert follower.check() is True
        assert engine.models()[TUNED] == "v-new"
        new_text, _ = answer(engine, TUNED, max_tokens=64)
    finally:
        reader.join(120)
    assert fuzz.ratio(in_flight["text"], old_solo) > 90, (in_flight, old_solo)
    assert fuzz.ratio(new_text, old_solo) < 60, (new_text, old_solo)
    assert engine.status()["adapters"][TUNED]["swaps"] >= 1

    # Back again: a rollback is a swap like any other, and a broken adapter changes nothing.
    assert engine.set_adapter(TUNED, shipped.path, shipped.version)
    assert not engine.set_adapter(TUNED, tmp_path / "missing", "v-broken")
    assert engine.models()[TUNED] == shipped.version
    assert "v-broken" in engine.status()["adapters"][TUNED]["error"]
    back, _ = answer(engine, TUNED, max_tokens=64)
    assert fuzz.ratio(back, old_solo) > 90


def test_two_columns_stream_at_the_same_time(url: str) -> None:
    """The reviewer app's custom and baseline columns on one engine: both are generated
    together (continuous batching), not one after the other."""
    from app.compare import stream_columns
    from suggestions import ChatBackend, SuggestionService
    from suggestions.prompts import build_baseline_messages

    common = {"base_url": url, "api_key": API_KEY}
    service = SuggestionService(
        {
            "custom": ChatBackend(name="custom", model=TUNED, label="run", **common),
            "baseline": ChatBackend(
                name="baseline",
                model=SMOLLM2_MODEL_ID,
                label="stock",
                build_prompt=build_baseline_messages,
                **common,
            ),
        }
    )

    async def last_snapshot() -> tuple[object, ...]:
        final: tuple[object, ...] = ()
        async for snapshot in stream_columns(service, ("custom", "baseline"), GRAMMAR_REQUEST):
            final = snapshot
        return final

    custom, baseline = asyncio.run(last_snapshot())
    assert custom.status == "done", custom  # type: ignore[attr-defined]
    # The stock base often talks on to its token limit (a truncated answer): it still streamed.
    assert baseline.ttft_ms is not None, baseline  # type: ignore[attr-defined]
    firsts = [custom.ttft_ms, baseline.ttft_ms]  # type: ignore[attr-defined]
    ends = [custom.elapsed_ms, baseline.elapsed_ms]  # type: ignore[attr-defined]
    assert max(firsts) < min(ends), f"first tokens {firsts} ms, ends {ends} ms: one waited"
    assert abs(firsts[0] - firsts[1]) < 2000, firsts
