import pytest

from suggestions.extract import extract_revised_text

ORIGINAL = "She go to school yesterday and buyed a books."
REVISED = "She went to school yesterday and bought books."


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


WORDY = (
    "At this point in time, it is important to note that the committee has not yet reached a "
    "final decision with regard to the matter of the new library building."
)
CLEAR = "The committee has not yet decided on the new library building."


@pytest.mark.parametrize(
    "answer",
    [
        f"Here is the revised text:\n\n{CLEAR}",
        f"Sure!\nHere is a clearer version:\n\n{CLEAR}",
        f"Sure, I can help with that.\n\nHere's the revised passage:\n{CLEAR}",
        f"```markdown\n{CLEAR}\n```",
        f"{CLEAR}\n\nI removed the wordy phrases and used the active voice.",
    ],
)
def test_strips_chatter_even_when_the_revision_is_much_shorter(answer: str) -> None:
    assert extract_revised_text(answer, WORDY) == CLEAR


def test_dialogue_with_apostrophes_keeps_its_quotes() -> None:
    original = "'Its late,' she said. 'We better go home now.'"
    answer = "'It's late,' she said. 'We'd better go home now.'"
    assert extract_revised_text(answer, original) == answer


def test_a_real_closing_paragraph_survives_a_trailer_after_it() -> None:
    original = "We walked the beach at dawn.\n\nI kept the shell."
    answer = (
        "We walked along the beach at dawn.\n\nI kept the shell.\n\n"
        "I added 'along' to make the first sentence flow."
    )
    assert extract_revised_text(answer, original) == (
        "We walked along the beach at dawn.\n\nI kept the shell."
    )


def test_a_first_person_paragraph_the_model_extended_is_kept() -> None:
    original = "Note the date.\n\nI changed my mind later."
    answer = "Note the date.\n\nI changed my mind later, once the letters began to arrive."
    assert extract_revised_text(answer, original) == answer
