"""The end-of-turn token comes from each tokenizer's chat template, for Llama 3 and ChatML
alike: the engine stops there, training teaches it and cuts what follows, and a trained
folder's generation config stops there too. A ChatML model (SmolLM2's format) whose generation
config names only end-of-text is the case that used to ramble to the token limit."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Literal

import pytest

from modal_backend.serving.end_of_turn import end_of_turn_id, end_of_turn_token
from modal_backend.serving.engines.base import Delta, Finished, SamplingParams
from modal_backend.serving.engines.transformers_engine import TransformersEngine
from modal_backend.training.data import TrainingExample
from modal_backend.training.formatting import IGNORE_INDEX, tokenize_example
from modal_backend.training.trainer import stop_at_end_of_turn
from suggestions.prompts import build_messages
from tests.model_service_support import GRAMMAR_ANSWER, GRAMMAR_REQUEST, tiny_model_dir

END_OF_TURN = {"llama3": "<|eot_id|>", "chatml": "<|im_end|>"}
EXAMPLE = TrainingExample(
    id="ours:g-1",
    type="grammar",
    source="She go to school yesterday.",
    target="She went to school yesterday.",
)


def tokenizer_of(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module", params=["llama3", "chatml"])
def taught(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("turns"), "taught", request.param)


def chat_format(folder: Path) -> Literal["llama3", "chatml"]:
    return "chatml" if folder.name.endswith("chatml") else "llama3"


def test_the_token_is_read_from_the_template(taught: Path) -> None:
    tokenizer = tokenizer_of(taught)
    expected = END_OF_TURN[chat_format(taught)]
    assert end_of_turn_token(tokenizer) == expected
    assert end_of_turn_id(tokenizer) == tokenizer.convert_tokens_to_ids(expected)
    assert end_of_turn_token(tokenizer) != tokenizer.eos_token  # not end-of-text in either


def test_without_a_template_end_of_text_ends_the_turn(taught: Path) -> None:
    tokenizer = tokenizer_of(taught)
    tokenizer.chat_template = None
    assert end_of_turn_token(tokenizer) == tokenizer.eos_token


def test_the_engine_stops_at_the_end_of_turn(taught: Path) -> None:
    engine = TransformersEngine.load(taught, model_id="tiny")

    async def answer() -> tuple[str, Finished]:
        pieces, finished = [], None
        stream = engine.stream(build_messages(GRAMMAR_REQUEST), SamplingParams(max_tokens=64))
        async for event in stream:
            if isinstance(event, Delta):
                pieces.append(event.text)
            elif isinstance(event, Finished):
                finished = event
        assert finished is not None
        return "".join(pieces), finished

    text, finished = asyncio.run(answer())
    assert text.strip() == GRAMMAR_ANSWER
    assert finished.finish_reason == "stop", "it ran past its end of turn"
    assert finished.completion_tokens < 64


def test_training_teaches_the_end_of_turn_and_cuts_what_follows(taught: Path) -> None:
    tokenizer = tokenizer_of(taught)
    tokenized = tokenize_example(tokenizer, EXAMPLE)
    end_of_turn = end_of_turn_id(tokenizer)
    assert tokenized.input_ids[-1] == end_of_turn  # ChatML's newline after it is cut
    answer = tokenized.labels[tokenized.prompt_tokens :]
    assert IGNORE_INDEX not in answer and answer[-1] == end_of_turn
    text = tokenizer.decode(answer)
    assert text == f"{EXAMPLE.target}{END_OF_TURN[chat_format(taught)]}"


def test_a_trained_folder_stops_at_the_end_of_turn(taught: Path, tmp_path: Path) -> None:
    tokenizer = tokenizer_of(taught)
    (tmp_path / "generation_config.json").write_text(
        json.dumps({"eos_token_id": tokenizer.eos_token_id})
    )
    stop_at_end_of_turn(tmp_path, tokenizer)
    stops = json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"]
    assert stops == [tokenizer.eos_token_id, end_of_turn_id(tokenizer)]
