"""The offline clarity and style metrics (eval/metrics/clarity.py, eval/metrics/style.py)."""

from __future__ import annotations

import pytest

from eval.metrics.clarity import (
    WORDY_PHRASES,
    Readability,
    clarity_scores,
    count_syllables,
    passive_rate,
    readability,
    wordiness_flags,
)
from eval.metrics.style import (
    MeaningModel,
    edit_rates,
    proselint_count,
    proselint_delta,
    style_scores,
    word_edit_rate,
)

# --- clarity ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "syllables"),
    [
        ("cat", 1),
        ("the", 1),  # a lone final e is the only vowel: not silent
        ("make", 1),  # silent final e
        ("whole", 1),  # -le after a vowel: silent e
        ("table", 2),  # consonant + -le keeps its syllable
        ("simple", 2),
        ("agree", 2),  # final e after a vowel is not silent
        ("water", 2),
        ("beautiful", 3),  # eau is one vowel group
        ("syllable", 3),  # y is a vowel
        ("education", 4),
        ("readability", 5),
        ("Hello,", 2),  # case and punctuation ignored
        ("3", 1),  # minimum 1
    ],
)
def test_count_syllables(word: str, syllables: int) -> None:
    assert count_syllables(word) == syllables


def test_readability_hand_computed() -> None:
    # "The table is beautiful." = The 1 + table 2 + is 1 + beautiful 3 -> 4 words, 7 syllables
    # "We agree."               = We 1 + agree 2                        -> 2 words, 3 syllables
    # words = 6, sentences = 2, syllables = 10; words/sentence = 3, syllables/word = 10/6
    # FRE  = 206.835 - 1.015 * 3 - 84.6 * 10 / 6 = 206.835 - 3.045 - 141.0 = 62.79
    # FKGL = 0.39 * 3 + 11.8 * 10 / 6 - 15.59   = 1.17 + 19.666667 - 15.59 = 5.246667
    result = readability("The table is beautiful. We agree.")
    assert (result.words, result.sentences, result.syllables) == (6, 2, 10)
    assert result.avg_sentence_length == pytest.approx(3.0)
    assert result.flesch_reading_ease == pytest.approx(62.79)
    assert result.flesch_kincaid_grade == pytest.approx(5.246667, abs=1e-6)


@pytest.mark.parametrize("text", ["", "   \n", "..."])
def test_readability_of_no_words_is_zero(text: str) -> None:
    assert readability(text) == Readability(0, 0, 0, 0.0, 0.0, 0.0)


def test_passive_rate() -> None:
    assert passive_rate("The letter was written by the clerk.") == 1.0
    assert passive_rate("The clerk wrote the letter.") == 0.0
    assert passive_rate("The letter was written by the clerk. The clerk wrote the letter.") == 0.5
    assert passive_rate("") == 0.0


def test_wordy_phrases_are_lower_case_and_unique() -> None:
    assert 25 <= len(WORDY_PHRASES) <= 35
    assert len(set(WORDY_PHRASES)) == len(WORDY_PHRASES)
    assert all(phrase == phrase.lower().strip() for phrase in WORDY_PHRASES)


def test_wordiness_flags() -> None:
    text = (
        "Due to the fact that it rained, IN ORDER\nTO stay dry we left. "
        "In order to win, note the fact that we tried. In orderto and reorder to are not flags."
    )
    assert wordiness_flags(text) == [
        "due to the fact that",  # once, not also "the fact that"
        "in order to",  # any case, across a line break
        "in order to",  # every occurrence
        "the fact that",
    ]
    assert wordiness_flags("Keep it short.") == []


def test_clarity_scores_move_the_right_way() -> None:
    source = (
        "Due to the fact that the committee was informed of the problem by a number of residents "
        "at this point in time, a decision was made by the council in order to facilitate an "
        "investigation of the situation."
    )
    output = "Many people told the board of the problem. The board will look into it now."
    scores = clarity_scores(source, output)
    assert set(scores) == {
        "flesch_reading_ease_delta",
        "fk_grade_delta",
        "avg_sentence_length_delta",
        "passive_rate_delta",
        "wordiness_delta",
    }
    assert scores["flesch_reading_ease_delta"] > 0
    assert scores["fk_grade_delta"] < 0
    assert scores["avg_sentence_length_delta"] < 0
    assert scores["passive_rate_delta"] == -1.0
    assert (
        scores["wordiness_delta"] == -4.0
    )  # due to the fact that, a number of, at this..., in order to
    assert all(value == 0 for value in clarity_scores(output, output).values())


# --- style -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def meaning_model() -> MeaningModel:
    model = MeaningModel()
    model.similarity(["warm up"], ["warm up"])  # load MiniLM once for the module
    return model


def test_similarity_identical_and_paraphrase(meaning_model: MeaningModel) -> None:
    sources = ["The cat sat on the mat.", "The meeting was moved to Friday."]
    outputs = [
        "The cat sat on the mat.",
        "The meeting has been rescheduled for Friday.",
    ]
    unrelated = "Photosynthesis converts sunlight into chemical energy."
    identical, paraphrase, other = meaning_model.similarity(
        [*sources, sources[1]], [*outputs, unrelated]
    )
    assert identical > 0.999
    assert paraphrase > other
    assert all(round(value, 6) == value for value in (identical, paraphrase, other))


def test_similarity_edge_cases(meaning_model: MeaningModel) -> None:
    assert meaning_model.similarity([], []) == []
    with pytest.raises(ValueError, match="sources"):
        meaning_model.similarity(["one"], [])


def test_word_edit_rate() -> None:
    reference = "the cat sat on mats"
    assert word_edit_rate(reference, reference) == 0.0
    assert word_edit_rate(reference, "the dog sat on mats") == pytest.approx(1 / 5)  # 1 sub
    assert word_edit_rate(reference, "the big cat sat on mats") == pytest.approx(1 / 5)  # 1 ins
    assert word_edit_rate(reference, "the cat on mats") == pytest.approx(1 / 5)  # 1 del
    assert word_edit_rate("a b", "c d e") == pytest.approx(3 / 2)  # 2 subs + 1 ins
    assert word_edit_rate("", "") == 0.0
    assert word_edit_rate("  ", "something") == 1.0


def test_edit_rates() -> None:
    source = "he go to school every day"
    output = "he goes to school every day"
    references = ["he goes to school daily", "he goes to school every day"]
    against_source, against_reference = edit_rates(source, output, references)
    assert against_source == pytest.approx(1 / 6)  # go -> goes, 6 source words
    assert against_reference == 0.0  # the second reference matches exactly
    assert edit_rates(source, output, [])[1] is None


def test_proselint_count() -> None:
    clean = "The cat sat on the mat."
    messy = "This is very unique. In order to utilize the tool, we must try."
    assert proselint_count(clean) == 0
    assert proselint_count(messy) > proselint_count(clean)
    assert proselint_count("") == 0
    assert proselint_delta(messy, clean) == -proselint_count(messy)
    assert proselint_delta(clean, messy) == proselint_count(messy)


def test_style_scores() -> None:
    source = "This is very unique and we must utilize it."
    output = "This is unique and we must use it."
    scores = style_scores(source, output, [output])
    assert set(scores) == {"edit_rate_source", "edit_rate_reference", "proselint_delta"}
    # 9 source words; "very" deleted, "utilize" -> "use": 2 edits
    assert scores["edit_rate_source"] == pytest.approx(2 / 9)
    assert scores["edit_rate_reference"] == 0.0
    assert scores["proselint_delta"] is not None and scores["proselint_delta"] < 0
    assert style_scores(source, output, [])["edit_rate_reference"] is None
