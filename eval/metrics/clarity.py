"""Offline clarity metrics: readability, passive voice and wordy phrases.

A clarity suggestion should make text easier to read without a model in the loop to judge it, so
these are cheap, deterministic proxies computed with the shared spaCy pipeline (no downloads; no
textstat, which fetches NLTK data at run time). `clarity_scores` reports how an edit moved each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from eval.metrics.nlp import parse

_VOWEL_GROUP = re.compile(r"[aeiouy]+")
_WORD_CHAR = re.compile(r"[^\W_]")  # a letter or a digit, in any script
_PASSIVE_DEPS = frozenset({"nsubjpass", "auxpass"})


def count_syllables(word: str) -> int:
    """Estimate the syllables in `word`, for the Flesch formulas.

    A heuristic, not a dictionary: count groups of vowels (`a e i o u y`); drop a silent final
    `e` after a consonant (`make` -> 1), except in a consonant + `-le` ending, where the `e`
    carries its own syllable (`table` -> 2); never go below 1 (so `n't` or `3` count 1). Known
    misses: `-ed` endings (`walked` -> 2) and `ea` hiatus (`create` -> 1).
    """
    letters = "".join(ch for ch in word.lower() if "a" <= ch <= "z")
    count = len(_VOWEL_GROUP.findall(letters))
    if (
        count > 1
        and len(letters) >= 2
        and letters.endswith("e")
        and letters[-2] not in "aeiouy"
        and not (letters.endswith("le") and len(letters) >= 3 and letters[-3] not in "aeiouy")
    ):
        count -= 1
    return max(count, 1)


@dataclass(frozen=True)
class Readability:
    """Counts and the standard Flesch scores for one text."""

    words: int
    sentences: int
    syllables: int
    flesch_reading_ease: float
    flesch_kincaid_grade: float
    avg_sentence_length: float


def _is_word(token: Any) -> bool:
    return _WORD_CHAR.search(token.text) is not None


def _word_sentences(doc: Any) -> list[Any]:
    """Sentences that hold at least one word: stray punctuation or whitespace is not a sentence."""
    return [sent for sent in doc.sents if any(_is_word(token) for token in sent)]


def _parse(text: str) -> Any | None:
    """The spaCy doc of `text`, or None for blank text (nothing to measure)."""
    return parse(text) if text.strip() else None


_EMPTY_READABILITY = Readability(0, 0, 0, 0.0, 0.0, 0.0)


def _readability_of(doc: Any | None) -> Readability:
    if doc is None:
        return _EMPTY_READABILITY
    words = [token.text for token in doc if _is_word(token)]
    sentences = len(_word_sentences(doc))
    if not words or not sentences:
        return _EMPTY_READABILITY
    syllables = sum(count_syllables(word) for word in words)
    words_per_sentence = len(words) / sentences
    syllables_per_word = syllables / len(words)
    return Readability(
        words=len(words),
        sentences=sentences,
        syllables=syllables,
        flesch_reading_ease=206.835 - 1.015 * words_per_sentence - 84.6 * syllables_per_word,
        flesch_kincaid_grade=0.39 * words_per_sentence + 11.8 * syllables_per_word - 15.59,
        avg_sentence_length=words_per_sentence,
    )


def readability(text: str) -> Readability:
    """Flesch reading ease and Flesch-Kincaid grade: the classic readability scores.

    Shorter sentences and shorter words read more easily (higher ease, lower grade). Sentences
    and words come from spaCy; a word is a token with a letter or digit. Empty text is all zeros.
    """
    return _readability_of(_parse(text))


def _passive_rate_of(doc: Any | None) -> float:
    if doc is None:
        return 0.0
    sentences = _word_sentences(doc)
    if not sentences:
        return 0.0
    passive = sum(any(token.dep_ in _PASSIVE_DEPS for token in sent) for sent in sentences)
    return passive / len(sentences)


def passive_rate(text: str) -> float:
    """Fraction of sentences with a passive construction (`was written by`), 0.0 for no text.

    Passive voice hides the actor and is a common target of clarity edits; spaCy marks it with
    the dependency labels `nsubjpass` / `auxpass`.
    """
    return _passive_rate_of(_parse(text))


WORDY_PHRASES: tuple[str, ...] = (
    "in order to",
    "due to the fact that",
    "owing to the fact that",
    "in light of the fact that",
    "in spite of the fact that",
    "despite the fact that",
    "the fact that",
    "at this point in time",
    "at the present time",
    "for the purpose of",
    "in the event that",
    "it is important to note that",
    "it should be noted that",
    "a number of",
    "a majority of",
    "with regard to",
    "in regard to",
    "with respect to",
    "in terms of",
    "in the process of",
    "in the near future",
    "on a daily basis",
    "in a timely manner",
    "has the ability to",
    "in close proximity to",
    "prior to",
    "subsequent to",
    "each and every",
    "first and foremost",
    "for all intents and purposes",
    "until such time as",
)
"""Common padded phrases that clarity edits shorten (`in order to` -> `to`)."""

# Longest first, so `due to the fact that` is one match rather than also `the fact that`.
_WORDY_PATTERN = re.compile(
    r"\b(?:"
    + "|".join(
        r"\s+".join(re.escape(part) for part in phrase.split())
        for phrase in sorted(WORDY_PHRASES, key=len, reverse=True)
    )
    + r")\b",
    re.IGNORECASE,
)


def wordiness_flags(text: str) -> list[str]:
    """Every wordy phrase in `text`, in text order, once per occurrence.

    Matching ignores case and line breaks and respects word boundaries; overlapping phrases count
    once (the longest). Each flag is the phrase as listed in `WORDY_PHRASES` (lower case).
    """
    return [" ".join(match.group(0).lower().split()) for match in _WORDY_PATTERN.finditer(text)]


def clarity_scores(source: str, output: str) -> dict[str, float]:
    """How an edit moved each clarity metric: output minus source.

    A clearer output has a positive `flesch_reading_ease_delta` and negative other deltas.
    """
    source_doc, output_doc = _parse(source), _parse(output)
    before, after = _readability_of(source_doc), _readability_of(output_doc)
    return {
        "flesch_reading_ease_delta": after.flesch_reading_ease - before.flesch_reading_ease,
        "fk_grade_delta": after.flesch_kincaid_grade - before.flesch_kincaid_grade,
        "avg_sentence_length_delta": after.avg_sentence_length - before.avg_sentence_length,
        "passive_rate_delta": _passive_rate_of(output_doc) - _passive_rate_of(source_doc),
        "wordiness_delta": float(len(wordiness_flags(output)) - len(wordiness_flags(source))),
    }
