import pytest

from suggestions.contract import SUGGESTION_TYPES, LlamaRequest, parse_request
from suggestions.prompts import (
    TASK_INSTRUCTIONS,
    build_baseline_messages,
    build_messages,
    build_training_messages,
    extract_revised_text,
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
        parse_request({"text": "w" * 20_000, "type": "grammar"}, max_text_chars=20_000)
    )
    assert 64 < short < long < huge == 4096


@pytest.mark.parametrize(
    "output",
    [
        REVISED,
        f"  {REVISED}  \n",
        f"Here is the corrected text:\n\n{REVISED}",
        f"Sure! Here's the revised version:\n{REVISED}",
        f"Certainly.\n{REVISED}",
        f"Corrected: {REVISED}",
        f'"{REVISED}"',
        f"\u201c{REVISED}\u201d",
        f"```\n{REVISED}\n```",
        f"```text\n{REVISED}\n```",
        f"Here is the corrected text:\n```\n{REVISED}\n```",
        f"{REVISED}\n\nExplanation: 'go' becomes 'went' because the sentence is in the past.",
        f"{REVISED}\n\nI corrected the verb tenses and removed the article.",
        f"{REVISED}\n\n**Changes made:**\n- go -> went\n- buyed -> bought",
        f'Here is the corrected text:\n\n"{REVISED}"\n\nLet me know if you need more help!',
    ],
)
def test_extracts_the_passage_from_chatty_answers(output: str) -> None:
    assert extract_revised_text(output, ORIGINAL) == REVISED


def test_keeps_the_original_leading_and_trailing_whitespace() -> None:
    assert extract_revised_text("Fixed text.", "\n  Fixed txt. \n") == "\n  Fixed text. \n"


def test_keeps_quotes_and_labels_that_belong_to_the_passage() -> None:
    quoted = '"Come here," she said.'
    assert extract_revised_text(quoted, '"Come here" she said.') == quoted
    label = "Corrected: the file was fixed."
    assert extract_revised_text(label, "Corrected: the file was fixd.") == label


def test_keeps_a_closing_paragraph_the_original_had() -> None:
    original = "I went home.\n\nI made a cake and eated it."
    answer = "I went home.\n\nI made a cake and ate it."
    assert extract_revised_text(answer, original) == answer


def test_empty_answer_gives_empty_text() -> None:
    assert extract_revised_text("   \n", ORIGINAL) == ""


@pytest.mark.parametrize(
    ("original", "answer"),
    [
        # a first line that reads like a preamble or an acknowledgement but is the passage
        ("Okay so we lost\nthe map was gone.", "Okay, so we lost.\nThe map was gone."),
        (
            "Oklahoma was dry that year\nwe left in may.",
            "Oklahoma was dry that year.\nWe left in May.",
        ),
        ("Surely not\nshe said.", "Surely not!\nShe said."),
        ("Updated plan for friday\n- leave at six", "Updated plan for Friday:\n- leave at six"),
        (
            "The revized draft is short:\nit fits one page.",
            "The revised draft is short:\nit fits one page.",
        ),
        ("output 12 pages a day.", "Output: 12 pages a day."),
        # a first-person paragraph the model split off the passage
        (
            "We reached the hut at dusk and I made a fire and we ate.",
            "We reached the hut at dusk.\n\nI made a fire, and we ate.",
        ),
        # an opening quote the model added to dialogue
        ('Wait here," he said. "Please."', '"Wait here," he said. "Please."'),
    ],
)
def test_never_cuts_text_that_belongs_to_the_passage(original: str, answer: str) -> None:
    assert extract_revised_text(answer, original) == answer


def test_a_real_note_after_a_split_paragraph_is_still_removed() -> None:
    original = "We reached the hut at dusk and I made a fire and we ate."
    answer = (
        "We reached the hut at dusk.\n\nI made a fire, and we ate.\n\n"
        "I have split the long sentence and added a comma."
    )
    assert extract_revised_text(answer, original) == (
        "We reached the hut at dusk.\n\nI made a fire, and we ate."
    )


def test_output_budget_counts_cjk_characters_as_tokens() -> None:
    japanese = LlamaRequest(
        text="今日は雨が降っていたので、私たちは家で本を読みました。" * 15, type="grammar"
    )
    english = LlamaRequest(text="Today it rained, so we stayed in and read." * 10, type="grammar")
    assert max_output_tokens(japanese) > 2 * len(japanese.text)
    assert max_output_tokens(english) < len(english.text)
