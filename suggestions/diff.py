"""Suggestions derived from a word-level diff, so their offsets are always valid for the input.

Text is cut into words, whitespace runs and single punctuation marks; the tokens concatenate back
to the text exactly, which is what makes `apply_suggestions(text, diff_suggestions(text, revised))`
return `revised` for any input. The token alignment is rapidfuzz's Indel (a longest common
subsequence, bit-parallel, in C): it keeps unchanged words unchanged, where Levenshtein would pair
unrelated words; and difflib's SequenceMatcher goes cubic on repetitive text ("ha ha ha" ->
"ha, ha, ha"), stalling the event loop for minutes on a passage at the length limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rapidfuzz.distance import Indel

from .contract import LlamaSuggestion, SuggestionType

_TOKEN = re.compile(r"\s+|\w+|[^\w\s]", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Words, whitespace runs and single other characters; `"".join(tokenize(t)) == t`."""
    return _TOKEN.findall(text)


def diff_suggestions(
    original: str, revised: str, suggestion_type: SuggestionType
) -> list[LlamaSuggestion]:
    """The edits that turn `original` into `revised`, in order, never overlapping.

    Edits separated only by whitespace are merged ("buyed a books" -> "bought books" is one
    suggestion, not two), which reads the way a person would propose it.
    """
    source, target = tokenize(original), tokenize(revised)
    offsets = _offsets(source)
    spans: list[list[int]] = []  # [i1, i2, j1, j2] token ranges
    for op in Indel.opcodes(source, target):
        if op.tag == "equal":
            continue
        if spans and _only_whitespace(source[spans[-1][1] : op.src_start]):
            # the gap is whitespace, equal on both sides: one suggestion, not two
            spans[-1][1], spans[-1][3] = op.src_end, op.dest_end
            continue
        spans.append([op.src_start, op.src_end, op.dest_start, op.dest_end])
    return [
        LlamaSuggestion(
            original="".join(source[i1:i2]),
            replacement="".join(target[j1:j2]),
            start=offsets[i1],
            end=offsets[i2],
            type=suggestion_type,
        )
        for i1, i2, j1, j2 in (_trim(span, source, target) for span in spans)
    ]


def apply_suggestions(original: str, suggestions: Iterable[LlamaSuggestion]) -> str:
    """Apply non-overlapping suggestions to the text they were made for."""
    pieces: list[str] = []
    cursor = 0
    for suggestion in sorted(suggestions, key=lambda s: (s.start, s.end)):
        if suggestion.start < cursor or original[suggestion.start : suggestion.end] != (
            suggestion.original
        ):
            raise ValueError(f"suggestion at {suggestion.start}:{suggestion.end} does not apply")
        pieces.append(original[cursor : suggestion.start])
        pieces.append(suggestion.replacement)
        cursor = suggestion.end
    pieces.append(original[cursor:])
    return "".join(pieces)


def _trim(span: list[int], source: list[str], target: list[str]) -> list[int]:
    """Drop tokens both sides share at the edges ("that " -> "because " becomes "that" ->
    "because"), so a suggestion shows only what changes."""
    i1, i2, j1, j2 = span
    while i1 < i2 and j1 < j2 and source[i2 - 1] == target[j2 - 1]:
        i2, j2 = i2 - 1, j2 - 1
    while i1 < i2 and j1 < j2 and source[i1] == target[j1]:
        i1, j1 = i1 + 1, j1 + 1
    return [i1, i2, j1, j2]


def _offsets(tokens: list[str]) -> list[int]:
    offsets = [0]
    for token in tokens:
        offsets.append(offsets[-1] + len(token))
    return offsets


def _only_whitespace(tokens: list[str]) -> bool:
    return all(token.isspace() for token in tokens)
