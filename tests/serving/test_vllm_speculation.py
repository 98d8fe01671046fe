"""n-gram (prompt-lookup) speculation must not change what a greedy request answers: drafts are
only kept where the model would have chosen the same tokens. Checked with the engine's default
draft settings (those `bench/speculation.py` chose) on grammar, clarity and style rows of our
eval set, through the fine-tuned adapter and the stock base, with speculation off and then on."""

from __future__ import annotations

import asyncio
from dataclasses import replace
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
from modal_backend.serving.engines.vllm_engine import Speculation, VLLMEngine, VLLMSettings

pytestmark = pytest.mark.timeout(900)
ROWS = {"grammar": 4, "clarity": 1, "style": 1}
TUNED = "writing-llama"
BASE_ROWS = 2
"""The stock base rambles to its token limit: two requests are enough to cover it."""


def requests() -> list[LlamaRequest]:
    rows = load_dataset(resolve_path(DEFAULT_EVAL_SET))
    picked: list[LlamaRequest] = []
    for kind, count in ROWS.items():
        of_kind = [e for e in rows if e.type == kind][:count]
        picked += [LlamaRequest(text=e.source, type=e.type) for e in of_kind]
    return picked


def greedy_answers(folder: Path, speculative: Speculation) -> tuple[list[str], int]:
    shipped = verified_adapter()
    engine = VLLMEngine(
        folder,
        model_id=SMOLLM2_MODEL_ID,
        adapters={TUNED: (shipped.path, shipped.version)},
        settings=VLLMSettings(max_model_len=1024, max_num_seqs=4, speculative=speculative),
    )
    work = [(TUNED, r) for r in requests()] + [(None, r) for r in requests()[:BASE_ROWS]]

    async def one(model: str | None, request: LlamaRequest) -> str:
        params = SamplingParams(max_tokens=max_output_tokens(request))
        text = ""
        async for event in engine.stream(build_messages(request), params, model):
            if isinstance(event, Delta):
                text += event.text
        return text

    async def each() -> list[str]:
        return [await one(model, request) for model, request in work]  # batch-1 decoding

    try:
        return asyncio.run(each()), engine.tokens_generated
    finally:
        engine.close()


def test_drafts_stop_above_the_batch_limit() -> None:
    settings = VLLMSettings(
        max_num_seqs=8, speculative="ngram", num_speculative_tokens=6, speculative_max_batch=4
    )
    assert settings.speculative_config() == {
        "method": "ngram",
        "num_speculative_tokens": 6,
        "prompt_lookup_min": VLLMSettings.prompt_lookup_min,
        "prompt_lookup_max": VLLMSettings.prompt_lookup_max,
        "num_speculative_tokens_per_batch_size": [(1, 4, 6), (5, 8, 0)],
    }
    for any_batch in (0, 8):
        config = replace(settings, speculative_max_batch=any_batch).speculative_config()
        assert config is not None and "num_speculative_tokens_per_batch_size" not in config
    assert replace(settings, speculative="off").speculative_config() is None
    with pytest.raises(ValueError, match="must not exceed"):
        VLLMSettings(prompt_lookup_min=5, prompt_lookup_max=4)


def test_speculation_gives_the_same_greedy_text() -> None:
    folder = ensure_smollm2(progress=False)
    plain, plain_tokens = greedy_answers(folder, "off")
    drafted, drafted_tokens = greedy_answers(folder, "ngram")
    assert all(plain), plain
    assert drafted == plain
    assert drafted_tokens == plain_tokens
