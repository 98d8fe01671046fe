import pytest

from suggestions.contract import SUGGESTION_TYPES, LlamaRequest, parse_request
from suggestions.prompts import (
    MAX_OUTPUT_TOKENS,
    TASK_INSTRUCTIONS,
    build_baseline_messages,
    build_messages,
    build_training_messages,
    max_output_tokens,
)

ORIGINAL = "She go to school yesterday and buyed a books."
REVISED = "She went to school yesterday and bought books."


@pytest.mark.parametrize("kind", SUGGESTION_TYPES)
def test_each_type_has_its_own_instruction_and_the_passage_verbatim(kind: str) -> None:
    request = LlamaRequest(text="  Two  spaces.\n", type=kind)  # type: ignore[arg-type]
    system, user = build_messages(request)
    assert system["role"] == "system" and TASK_INSTRUCTIONS[kind] in system["content"]
    assert user == {"role": "user", "content": "Passage:\n  Two  spaces.\n"}


def test_context_is_given_but_marked_as_not_to_edit() -> None:
    request = LlamaRequest(text="He left.", type="clarity", context="It rained all day.")
    user = build_messages(request)[1]["content"]
    assert user == (
        "Context (for reference, do not edit):\nIt rained all day.\n\nPassage:\nHe left."
    )


def test_training_messages_are_the_served_prompt_plus_the_target() -> None:
    request = LlamaRequest(text=ORIGINAL, type="grammar")
    assert build_training_messages(request, REVISED) == [
        *build_messages(request),
        {"role": "assistant", "content": REVISED},
    ]


def test_baseline_keeps_the_generic_prompt() -> None:
    system, user = build_baseline_messages(LlamaRequest(text=ORIGINAL, type="style"))
    assert system["content"] == "You are a helpful assistant."
    assert user["content"].startswith("Improve the style of the following text.")
    assert user["content"].endswith(ORIGINAL)


def test_output_budget_grows_with_the_text_and_is_capped() -> None:
    short = max_output_tokens(LlamaRequest(text="Hi.", type="grammar"))
    long = max_output_tokens(LlamaRequest(text="word " * 1000, type="grammar"))
    huge = max_output_tokens(
        parse_request({"text": "字" * 20_000, "type": "grammar"}, max_text_chars=20_000)
    )
    assert 64 < short < long < huge == MAX_OUTPUT_TOKENS


def test_output_budget_counts_cjk_characters_as_tokens() -> None:
    japanese = LlamaRequest(
        text="今日は雨が降っていたので、私たちは家で本を読みました。" * 15, type="grammar"
    )
    english = LlamaRequest(text="Today it rained, so we stayed in and read." * 10, type="grammar")
    assert max_output_tokens(japanese) > 2 * len(japanese.text)
    assert max_output_tokens(english) < len(english.text)
