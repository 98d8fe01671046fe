"""A PEFT adapter written as a GGUF LoRA and served by llama.cpp beside its stock base.

The proof is the greedy tokens: llama.cpp with the written adapter against transformers + PEFT
on the dequantized base (SmolLM2-135M, a Llama architecture, so the query and key rows must be
permuted as its GGUF stores them). One llama.cpp server then answers as the stock model and as
`writing-llama`, in parallel slots, and a promotion swaps the adapter without a restart.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from modal_backend.serving.engines.base import Delta, Finished, SamplingParams
from modal_backend.serving.engines.llamacpp_engine import LlamaCppEngine
from modal_backend.serving.gguf_lora import GgufLoraError, adapter_version, write_gguf_lora
from modal_backend.serving.gguf_lora_check import PROMPTS, compare_greedy
from modal_backend.serving.local_bases import SMOLLM2, ensure_hf_base
from modal_backend.serving.model_parts import ensure_model
from suggestions import LlamaRequest
from suggestions.prompts import build_messages
from tests.model_service_support import GRAMMAR_REQUEST, auth, running_service

pytestmark = pytest.mark.timeout(600)
SHIPPED = Path(__file__).resolve().parents[2] / "models" / "writing-smollm2-lora"
BASE_ID = "smollm2-135m-instruct"
TUNED = "writing-llama"
MESSAGES = build_messages(GRAMMAR_REQUEST)


@pytest.fixture(scope="module")
def base_gguf() -> Path:
    return ensure_model(SMOLLM2.gguf, progress=False)


@pytest.fixture(scope="module")
def engine(base_gguf: Path) -> LlamaCppEngine:
    return LlamaCppEngine(
        base_gguf,
        model_id=BASE_ID,
        version="stock",
        adapters={TUNED: (SHIPPED, "shipped")},
        parallel=2,
        context_tokens=1024,
    )


def zeroed_copy(adapter: Path, folder: Path) -> Path:
    """The adapter with every B matrix zero: it must answer exactly as the stock base."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = load_file(adapter / "adapter_model.safetensors")
    zeroed = {k: np.zeros_like(v) if "lora_B" in k else v for k, v in tensors.items()}
    save_file(zeroed, folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    return folder


def answer(engine: LlamaCppEngine, model: str | None, max_tokens: int = 48) -> str:
    async def run() -> str:
        parts = []
        async for event in engine.stream(MESSAGES, SamplingParams(max_tokens), model=model):
            if isinstance(event, Delta):
                parts.append(event.text)
        return "".join(parts)

    return asyncio.run(run())


def test_greedy_tokens_equal_transformers_and_peft(base_gguf: Path) -> None:
    results = compare_greedy(
        ensure_hf_base(SMOLLM2), SHIPPED, base_gguf, requests=PROMPTS[:4], tokens=32
    )
    tuned = [r for r in results if r.scale == 1.0]
    assert all(r.explained for r in results), results  # any parting is a quantization near-tie
    assert sum(r.gap_at_divergence is None for r in tuned) >= 3, tuned
    assert all(r.matched_tokens >= 5 for r in tuned), tuned


def test_the_file_says_what_it_is(base_gguf: Path, tmp_path: Path) -> None:
    from gguf import GGUFReader

    out = write_gguf_lora(SHIPPED, base_gguf, tmp_path / "lora.gguf", version="v7")
    reader = GGUFReader(out)
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["general.architecture"].contents() == "llama"
    config = json.loads((SHIPPED / "adapter_config.json").read_text())
    assert reader.fields["adapter.lora.alpha"].contents() == config["lora_alpha"]
    assert adapter_version(out) == "v7"
    names = {tensor.name for tensor in reader.tensors}
    assert "blk.0.attn_q.weight.lora_a" in names and "blk.29.ffn_down.weight.lora_b" in names
    assert len(names) == len(load_file(SHIPPED / "adapter_model.safetensors"))
    assert not list(tmp_path.glob(".*partial"))


def test_an_adapter_missing_a_half_is_refused(base_gguf: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    tensors = load_file(SHIPPED / "adapter_model.safetensors")
    dropped = next(name for name in tensors if "lora_B" in name)
    del tensors[dropped]
    save_file(tensors, broken / "adapter_model.safetensors")
    (broken / "adapter_config.json").write_text((SHIPPED / "adapter_config.json").read_text())
    with pytest.raises(GgufLoraError, match="only one of its LoRA halves"):
        write_gguf_lora(broken, base_gguf, tmp_path / "out.gguf", version="x")
    assert not (tmp_path / "out.gguf").exists()


def test_a_base_of_another_architecture_is_refused(tmp_path: Path) -> None:
    import gguf

    other = tmp_path / "other.gguf"
    writer = gguf.GGUFWriter(other, "gemma3")
    writer.add_block_count(1)
    writer.add_head_count(1)
    writer.add_head_count_kv(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(GgufLoraError, match="no GGUF LoRA writer for the 'gemma3'"):
        write_gguf_lora(SHIPPED, other, tmp_path / "out.gguf", version="x")


def test_one_server_answers_as_the_base_and_as_the_run(engine: LlamaCppEngine) -> None:
    with running_service(engine) as url:
        listed = httpx.get(f"{url}/v1/models", headers=auth()).json()["data"]
        assert {m["id"] for m in listed} >= {BASE_ID, TUNED}
        health = httpx.get(f"{url}/health").json()
        assert health["adapters"][TUNED]["version"] == "shipped", health
        replies = {}
        for model in (BASE_ID, TUNED):
            reply = httpx.post(
                f"{url}/v1/chat/completions",
                json={"model": model, "messages": MESSAGES, "max_tokens": 48},
                headers=auth(),
                timeout=120,
            ).json()
            replies[model] = reply["choices"][0]["message"]["content"]
    assert replies[TUNED].strip() == "She went to school yesterday.", replies
    assert replies[BASE_ID] != replies[TUNED]  # the stock base rambles on


def test_the_two_ids_generate_at_the_same_time(engine: LlamaCppEngine) -> None:
    passage = (
        "She go to school yesterday. Her brother have a new bike and he ride it every days. "
        "They was happy about the weather."
    )
    messages = build_messages(LlamaRequest(text=passage, type="grammar"))  # a while to stream

    async def timed(model: str) -> tuple[float, float]:
        start = time.perf_counter()
        first = None
        async for event in engine.stream(messages, SamplingParams(64), model=model):
            if isinstance(event, Delta) and first is None:
                first = time.perf_counter() - start
            if isinstance(event, Finished):
                break
        assert first is not None
        return first, time.perf_counter() - start

    async def both() -> list[tuple[float, float]]:
        return list(await asyncio.gather(timed(BASE_ID), timed(TUNED)))

    (base_first, base_end), (tuned_first, tuned_end) = asyncio.run(both())
    assert max(base_first, tuned_first) < min(base_end, tuned_end), (
        f"first tokens {base_first:.2f}/{tuned_first:.2f} s, ends {base_end:.2f}/{tuned_end:.2f} s"
    )


def test_a_promotion_swaps_the_adapter_without_a_restart(base_gguf: Path, tmp_path: Path) -> None:
    engine = LlamaCppEngine(
        base_gguf, model_id=BASE_ID, adapters={TUNED: (SHIPPED, "v1")}, context_tokens=1024
    )
    try:
        stock = answer(engine, BASE_ID)
        first = answer(engine, TUNED)
        in_flight: list[str] = []
        started = threading.Event()

        async def long_answer() -> None:
            stream = engine.stream(MESSAGES, SamplingParams(48), model=TUNED)
            parts = []
            async for event in stream:
                started.set()
                if isinstance(event, Delta):
                    parts.append(event.text)
            in_flight.append("".join(parts))

        worker = threading.Thread(target=lambda: asyncio.run(long_answer()))
        worker.start()
        assert started.wait(60)
        assert engine.set_adapter(TUNED, zeroed_copy(SHIPPED, tmp_path / "zero"), "v2")
        worker.join(120)
        assert in_flight == [first]  # the request in flight finished on the old adapter
        assert engine.models()[TUNED] == "v2"
        assert answer(engine, TUNED) == stock  # the new (zero) adapter answers as the base
        assert not engine.set_adapter(TUNED, tmp_path / "missing", "v3")
        assert engine.models()[TUNED] == "v2"  # a failed load keeps the one serving
        status = engine.status()["adapters"][TUNED]
        assert status["swaps"] == 1 and "could not load version v3" in status["error"]
    finally:
        engine.close()


def test_the_serve_cli_serves_the_shipped_adapter_on_the_gguf(tmp_path: Path) -> None:
    """The command the laptop flow starts for a llama.cpp pair (`laptop.serve_args`)."""
    from modal_backend.serving.local import LocalModelServer
    from modal_backend.serving.registry import Run
    from modal_backend.serving.shipped_adapter import verified_adapter
    from modal_backend.training.laptop import LaptopBase, serve_args

    run = Run(run_id="shipped", path=SHIPPED.parent, manifest={})
    pair = LaptopBase(SMOLLM2, (), "llamacpp", tmp_path / "export")
    model, args = serve_args(pair, run)
    args = [a.replace(str(run.adapter_path), str(SHIPPED)) for a in args]
    with LocalModelServer(api_key="k" * 24, model=model, extra_args=args) as server:
        health = httpx.get(f"{server.url}/health").json()
        assert health["models"] == {
            SMOLLM2.gguf.model_id: "local",
            TUNED: verified_adapter(SHIPPED).version,
        }
        reply = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": TUNED, "messages": MESSAGES, "max_tokens": 48},
            headers={"Authorization": f"Bearer {'k' * 24}"},
            timeout=120,
        ).json()
    assert reply["choices"][0]["message"]["content"].strip() == "She went to school yesterday."
