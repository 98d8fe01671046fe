"""Examples as token ids and labels: the served prompt through the model's own chat template,
with the loss on the answer only.

The messages come from `suggestions.prompts.build_training_messages`, the function serving's
`build_messages` is part of, so the model is trained on exactly the prompt it will be sent. The
template is the tokenizer's (Llama 3.1's for our base). The prompt is tokenized with the
generation prompt (`<|start_header_id|>assistant<|end_header_id|>\\n\\n`), which must be a prefix
of the whole conversation's tokens; every prompt token is labelled -100 (no loss), so the model
learns the answer and the end-of-turn token that ends it (`<|eot_id|>` for Llama 3,
`<|im_end|>` for ChatML; read from the template), not to predict our instructions. What a
template writes after that token (ChatML's newline) is not part of the answer and is cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from modal_backend.serving.end_of_turn import end_of_turn_id, end_of_turn_token
from suggestions.contract import LlamaRequest, describe_validation_error
from suggestions.prompts import build_messages, build_training_messages
from suggestions.wire import ChatMessage

from .data import DataError, TrainingExample

IGNORE_INDEX = -100
"""The label PyTorch's cross-entropy skips."""


class FormattingError(DataError):
    """An example the prompt contract rejects, or a chat template that cannot produce
    response-only labels for it."""


@dataclass(frozen=True)
class TokenizedExample:
    id: str
    input_ids: list[int]
    labels: list[int]
    prompt_tokens: int

    def as_row(self) -> dict[str, list[int]]:
        """What the trainer batches: ids and labels, nothing to re-tokenize or re-mask."""
        return {"input_ids": self.input_ids, "labels": self.labels}


def request_for(example: TrainingExample) -> LlamaRequest:
    """The request serving would get for this passage (so the same length limits apply)."""
    try:
        return LlamaRequest(text=example.source, type=example.type)
    except ValidationError as exc:
        problem = describe_validation_error(exc).replace("\n", "; ")
        raise FormattingError(f"{example.id}: {problem}") from exc


def prompt_messages(example: TrainingExample) -> list[ChatMessage]:
    """What serving sends for this example's passage."""
    return build_messages(request_for(example))


def training_messages(example: TrainingExample) -> list[ChatMessage]:
    return build_training_messages(request_for(example), example.target)


_FROM_TEMPLATE = -1
"""`end_of_turn` not given: read it from the chat template (a token id is never negative)."""


def tokenize_example(
    tokenizer: Any, example: TrainingExample, *, end_of_turn: int | None = _FROM_TEMPLATE
) -> TokenizedExample:
    """Input ids of the whole conversation up to its end-of-turn token; labels -100 up to and
    including the assistant header, then the target's tokens and the end-of-turn token."""
    if not getattr(tokenizer, "chat_template", None):
        raise FormattingError("the tokenizer has no chat template; use an instruct model's")
    prompt = _ids(tokenizer, prompt_messages(example), add_generation_prompt=True)
    full = _ids(tokenizer, training_messages(example), add_generation_prompt=False)
    if full[: len(prompt)] != prompt or len(full) <= len(prompt):
        raise FormattingError(
            f"{example.id}: the chat template's prompt is not a prefix of the conversation, so "
            "the answer cannot be told from the prompt"
        )
    if end_of_turn == _FROM_TEMPLATE:  # read from the template, unless the caller already did
        end_of_turn = end_of_turn_id(tokenizer)
    if end_of_turn is not None:
        answer = full[len(prompt) :]
        if end_of_turn not in answer:
            raise FormattingError(
                f"{example.id}: the chat template does not end the answer with "
                f"{end_of_turn_token(tokenizer)}, so the model would not learn to stop"
            )
        last = len(answer) - 1 - answer[::-1].index(end_of_turn)
        full = full[: len(prompt) + last + 1]  # what follows the turn's end is not the answer
    labels = [IGNORE_INDEX] * len(prompt) + full[len(prompt) :]
    return TokenizedExample(example.id, full, labels, len(prompt))


def tokenize_all(
    tokenizer: Any, examples: Sequence[TrainingExample], *, max_length: int
) -> tuple[list[TokenizedExample], list[str]]:
    """Every example that fits in `max_length` tokens, and the ids of those that do not.

    Long examples are dropped rather than cut: a cut answer would teach the model to stop
    mid-passage, or never to emit the end-of-turn token.
    """
    kept: list[TokenizedExample] = []
    too_long: list[str] = []
    end_of_turn = end_of_turn_id(tokenizer)  # once: it renders the chat template
    for example in examples:
        tokenized = tokenize_example(tokenizer, example, end_of_turn=end_of_turn)
        if len(tokenized.input_ids) > max_length:
            too_long.append(example.id)
        else:
            kept.append(tokenized)
    return kept, too_long


def _ids(tokenizer: Any, messages: list[ChatMessage], *, add_generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=False
    )
    return [int(token) for token in ids]
