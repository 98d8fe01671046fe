"""Which token ends an assistant turn, read from the tokenizer's own chat template.

Chat models stop on a template-specific token, not on end-of-text: Llama 3 closes a turn with
`<|eot_id|>`, ChatML models (SmolLM2, Qwen) with `<|im_end|>`, Gemma with `<end_of_turn>`. A
model that is not told to stop there rambles on, and a fine-tune that does not learn it never
stops. Rendering a short conversation through the template and taking the special token right
after the answer finds it for any template, so training, its checks and the engines agree.
"""

from __future__ import annotations

from typing import Any

ANSWER_MARK = "Answer-mark-7d1c"
"""A stand-in answer no template changes (no spaces to trim, nothing to escape)."""


def end_of_turn_token(tokenizer: Any) -> str | None:
    """The special token the chat template writes after an assistant's answer; the tokenizer's
    end-of-sequence token when there is no template or it writes none."""
    template = getattr(tokenizer, "chat_template", None)
    if template:
        conversation = [
            {"role": "user", "content": "Hello."},
            {"role": "assistant", "content": ANSWER_MARK},
        ]
        rendered = str(tokenizer.apply_chat_template(conversation, tokenize=False))
        if ANSWER_MARK in rendered:
            after = rendered[rendered.rindex(ANSWER_MARK) + len(ANSWER_MARK) :]
            special = set(getattr(tokenizer, "all_special_ids", ())) | set(
                getattr(tokenizer, "added_tokens_decoder", {})
            )
            for token_id in tokenizer(after, add_special_tokens=False)["input_ids"]:
                if token_id in special:
                    return str(tokenizer.convert_ids_to_tokens(token_id))
    eos = getattr(tokenizer, "eos_token", None)
    return str(eos) if eos else None


def stop_ids(tokenizer: Any, configured: Any = None) -> tuple[int, ...]:
    """The ids generation stops on: `configured` (a generation config's EOS, an id or a list),
    the tokenizer's EOS, and the end-of-turn token; a chat model that is not told to stop at
    the end of its turn rambles on."""
    ids: list[int] = []
    for candidate in (
        *(configured if isinstance(configured, list) else [configured]),
        getattr(tokenizer, "eos_token_id", None),
        end_of_turn_id(tokenizer),
    ):
        if isinstance(candidate, int) and candidate not in ids:
            ids.append(candidate)
    if not ids:
        raise ValueError("the model has no end-of-sequence token to stop on")
    return tuple(ids)


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The id of `end_of_turn_token`, or None when the tokenizer has neither."""
    token = end_of_turn_token(tokenizer)
    if token is None or token not in tokenizer.get_vocab():
        return None
    return int(tokenizer.convert_tokens_to_ids(token))
