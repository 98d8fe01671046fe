"""n-gram (prompt-lookup) speculation must not change what a greedy request answers: drafts are
only kept where the model would have chosen the same tokens. Checked on grammar rows of our
eval set, through the fine-tuned adapter, with speculation off and then on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from eval.data import load_dataset
from modal_backend.serving.engines.base import Delta, SamplingParams
from modal_backend.serving.local_bases import SMOLLM2_MODEL_ID, ensure_smollm2
from modal_backend.serving.shipped_adapter import verified_adapter
from modal_backend.training.config import DEFAULT_EVAL_SET, resolve_path
from suggestions import LlamaRequest
from suggestions.prompts import build_messages, max_output_tokens

pytest.importorskip("vllm", reason="vLLM is installed by `make test` on Linux x86-64 only")
from modal_backend.serving.engines.vllm_engine import VLLMEngine, VLLMSettings

pytestmark = pytest.mark.timeout(900)
ROWS = 6


def greedy_answers(folder: Path, speculative: str) -> tuple[list[str], int]:
    rows = [e for e in load_dataset(resolve_path(DEFAULT_EVAL_SET)) if e.type == "grammar"]
    requests = [LlamaRequest(text=e.source, type="grammar") for e in rows[:ROWS]]
    shipped = verified_adapter()
    engine = VLLMEngine(
        folder,
        model_id=SMOLLM2_MODEL_ID,
        adapters={"writing-llama": (shipped.path, shipped.version)},
        settings=VLLMSettings(max_model_len=1024, max_num_seqs=4, speculative=speculative),  # type: ignore[arg-type]
    )

    async def one(request: LlamaRequest) -> str:
        params = SamplingParams(max_tokens=max_output_tokens(request))
        text = ""
        async for event in engine.stream(build_messages(request), params, "writing-llama"):
            if isinstance(event, Delta):
                text += event.text
        return text

    async def each() -> list[str]:
        return [await one(request) for request in requests]  # one at a time: batch-1 decoding

    try:
        return asyncio.run(each()), engine.tokens_generated
    finally:
        engine.close()


def test_speculation_gives_the_same_greedy_text() -> None:
    folder = ensure_smollm2(progress=False)
    plain, plain_tokens = greedy_answers(folder, "off")
    drafted, drafted_tokens = greedy_answers(folder, "ngram")
    assert all(plain), plain
    assert drafted == plain
    assert drafted_tokens == plain_tokens
