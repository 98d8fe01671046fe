from hypothesis import example, given, settings
from hypothesis import strategies as st

from suggestions.diff import apply_suggestions, diff_suggestions, tokenize

# Words, spaces and punctuation drawn from several scripts, so edits line up with real tokens.
pieces = st.sampled_from(
    [
        "She",
        "go",
        "went",
        "a",
        "books",
        " ",
        "  ",
        "\n",
        ",",
        ".",
        "’",
        "é",
        "naïve",
        "東京",
        "😀",
        "\u0301",
        "\r\n",
        "\t",
        "-",
        "Σ",
        "ß",
    ]
)
texts = st.lists(pieces, max_size=30).map("".join)


@given(original=st.text(), revised=st.text())
@example(original="", revised="New text.")
@example(original="Old text.", revised="")
@example(original="e\u0301", revised="é")
@settings(max_examples=300, deadline=None)
def test_applying_all_suggestions_gives_the_revised_text_for_any_unicode(
    original: str, revised: str
) -> None:
    suggestions = diff_suggestions(original, revised, "grammar")
    assert apply_suggestions(original, suggestions) == revised
    for s in suggestions:
        assert original[s.start : s.end] == s.original


@given(original=texts, revised=texts)
@settings(max_examples=300, deadline=None)
def test_suggestions_are_ordered_disjoint_and_real_edits(original: str, revised: str) -> None:
    suggestions = diff_suggestions(original, revised, "style")
    assert apply_suggestions(original, suggestions) == revised
    ends = [-1]
    for s in suggestions:
        assert s.start >= ends[-1]
        assert s.original != s.replacement
        ends.append(s.end)
    assert (suggestions == []) == (original == revised)


@given(st.text())
def test_tokens_join_back_to_the_text(text: str) -> None:
    assert "".join(tokenize(text)) == text


def test_word_level_edits_with_offsets() -> None:
    original = "She go to school yesterday and buyed a books."
    suggestions = diff_suggestions(
        original, "She went to school yesterday and bought books.", "grammar"
    )
    assert [(s.original, s.replacement, s.start, s.end) for s in suggestions] == [
        ("go", "went", 4, 6),
        ("buyed a", "bought", 31, 38),
    ]
    assert all(s.type == "grammar" for s in suggestions)


def test_an_insertion_has_an_empty_span() -> None:
    [insertion] = diff_suggestions("I went home", "I went home.", "grammar")
    assert (insertion.original, insertion.replacement, insertion.start, insertion.end) == (
        "",
        ".",
        11,
        11,
    )


def test_identical_texts_give_no_suggestions() -> None:
    assert diff_suggestions("Fine as it is.", "Fine as it is.", "clarity") == []


def test_repetitive_text_at_the_length_limit_diffs_correctly() -> None:
    original = "ha " * 2666
    revised = "ha, " * 2000
    suggestions = diff_suggestions(original, revised, "grammar")
    assert apply_suggestions(original, suggestions) == revised


def test_suggestions_do_not_carry_shared_edge_whitespace() -> None:
    [s] = diff_suggestions(
        "Due to the fact that it rained, we left.", "Because it rained, we left.", "clarity"
    )
    assert (s.original, s.replacement) == ("Due to the fact that", "Because")
