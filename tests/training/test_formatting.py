"""Training examples as tokens: the served prompt, the Llama-3 chat template, loss on the answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modal_backend.training.data import TrainingExample
from modal_backend.training.formatting import (
    IGNORE_INDEX,
    FormattingError,
    prompt_messages,
    tokenize_all,
    tokenize_example,
)
from modal_backend.training.trainer import PaddingCollator
from suggestions import LlamaRequest
from suggestions.prompts import build_messages

ASSISTANT_HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"
EXAMPLE = TrainingExample(
    id="ours:g-1",
    type="grammar",
    source="She go to school yesterday and buyed a books.",
    target="She went to school yesterday and bought some books.",
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modal_backend.serving.testing import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("formatting") / "tiny")


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def test_the_target_follows_the_assistant_header_and_only_it_carries_loss(tokenizer: Any) -> None:
    tokenized = tokenize_example(tokenizer, EXAMPLE)
    text = tokenizer.decode(tokenized.input_ids)
    assert text.endswith(f"{ASSISTANT_HEADER}{EXAMPLE.target}<|eot_id|>")
    prompt, answer = (
        tokenized.input_ids[: tokenized.prompt_tokens],
        tokenized.input_ids[tokenized.prompt_tokens :],
    )
    assert tokenizer.decode(prompt).endswith(ASSISTANT_HEADER)  # the header is in the prompt
    assert tokenizer.decode(answer) == f"{EXAMPLE.target}<|eot_id|>"
    assert tokenized.labels[: tokenized.prompt_tokens] == [IGNORE_INDEX] * len(prompt)
    assert tokenized.labels[tokenized.prompt_tokens :] == answer
    assert len(tokenized.labels) == len(tokenized.input_ids)


def test_the_prompt_is_exactly_what_the_server_sends(model_dir: Path, tokenizer: Any) -> None:
    from modal_backend.serving.engines.transformers_engine import TransformersEngine

    request = LlamaRequest(text=EXAMPLE.source, type=EXAMPLE.type)
    assert prompt_messages(EXAMPLE) == build_messages(request)
    engine = TransformersEngine.load(model_dir)
    served = engine.prompt_ids(build_messages(request))[0].tolist()
    tokenized = tokenize_example(tokenizer, EXAMPLE)
    assert tokenized.input_ids[: tokenized.prompt_tokens] == served


@pytest.mark.parametrize("kind", ["grammar", "clarity", "style"])
def test_each_type_gets_its_own_instructions(tokenizer: Any, kind: str) -> None:
    example = TrainingExample(id="x", type=kind, source="A passage.", target="A text.")  # type: ignore[arg-type]
    tokenized = tokenize_example(tokenizer, example)
    prompt = tokenizer.decode(tokenized.input_ids[: tokenized.prompt_tokens])
    assert f"Task: {kind}." in prompt
    assert "Passage:\nA passage." in prompt


def test_examples_longer_than_the_limit_are_dropped_not_cut(tokenizer: Any) -> None:
    long = TrainingExample(id="ours:long", type="style", source="word " * 200, target="Words.")
    limit = len(tokenize_example(tokenizer, EXAMPLE).input_ids)
    kept, too_long = tokenize_all(tokenizer, [EXAMPLE, long], max_length=limit)
    assert [row.id for row in kept] == [EXAMPLE.id]
    assert too_long == ["ours:long"]
    assert kept[0].input_ids[-1] == tokenizer.convert_tokens_to_ids("<|eot_id|>")


def test_a_tokenizer_without_a_chat_template_is_refused(tokenizer: Any) -> None:
    import copy

    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    with pytest.raises(FormattingError, match="no chat template"):
        tokenize_example(bare, EXAMPLE)


def test_a_template_that_does_not_end_the_turn_is_refused(tokenizer: Any) -> None:
    import copy

    rambling = copy.deepcopy(tokenizer)
    rambling.chat_template = tokenizer.chat_template.replace("<|eot_id|>", "\n")
    with pytest.raises(FormattingError, match="does not end the answer"):
        tokenize_example(rambling, EXAMPLE)


def test_a_passage_serving_would_refuse_is_refused_here(tokenizer: Any) -> None:
    huge = TrainingExample(id="ours:huge", type="style", source="x" * 8_001, target="X.")
    with pytest.raises(FormattingError, match=r"ours:huge: text: text is 8,001 characters"):
        tokenize_example(tokenizer, huge)


def test_batches_pad_ids_labels_and_mask_on_the_right() -> None:
    batch = PaddingCollator(pad_token_id=7)(
        [
            {"input_ids": [1, 2, 3], "labels": [IGNORE_INDEX, 2, 3]},
            {"input_ids": [4], "labels": [4]},
        ]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 7, 7]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 2, 3], [4, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
