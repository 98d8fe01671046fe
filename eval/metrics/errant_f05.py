"""ERRANT precision, recall and F0.5 (Bryant et al. 2017), with a per-error-type breakdown,
computed as the official `errant_parallel` + `errant_compare` compute them.

Edits are extracted by `errant` (its default alignment and `rules` merging) from (source,
hypothesis) and (source, reference), with the spaCy model shipped as a package, and matched on
their span and correction. What `errant_compare` does is done here too: a text identical to its
source is a noop; a reference that yields no edit line at all is not a reference (when no
reference has any line, the sentence has one empty reference); `UNK` edits count nowhere; a true
positive takes the reference's error type; an empty source is skipped. With several references,
each sentence is scored against the reference that gives the best running corpus F0.5, rounded
to 4 places (ties: more true positives, then fewer false positives, then fewer false negatives).
F0.5 weighs precision twice as much as recall: a wrong edit costs an author more than a missed one.

Tokens. Plain text (our datasets) is tokenized by spaCy, as `errant_parallel -tok` tokenizes
it. Tokenized data (`pretokenized=True`: JFLEG's files) has its sources and references split on
whitespace and taken as they are, as `errant_parallel` without `-tok` takes them: spaCy would
split `self-confidence`, `cannot` and `'m` again and move the counts away from the official
ones (on JFLEG dev, ref0 against refs 1-3: 1379/1325/1124 TP/FP/FN instead of 1372/1334/1124).
A hypothesis is a model's plain-text answer; on tokenized data it is tokenized by
`nlp.answer_tokens` (spaCy's tokens, with the words the source has whole kept whole), so that
`don't` and `home.` meet JFLEG's `do n't` and `home .` while an unchanged word is no edit. A
hypothesis that comes tokenized (`hypotheses_pretokenized=True`: a system's output file) is
taken as it is. The counts equal the official tools' on the same tokens: on tokenized data,
`errant_parallel` without `-tok` on the source, the references and each hypothesis's tokens
joined by spaces; on plain text, both runs with `-tok` (runs of whitespace, which spaCy makes
tokens of and a line-based tool never sees as newlines, are dropped here).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from .nlp import answer_tokens, parse, prefetch, spacy_pipeline

Edit = tuple[int, int, str]
"""An edit as `errant_compare` matches it: the source token span and the corrected tokens."""
Coder = dict[Edit, list[str]]
"""One reference's (or the hypothesis's) edits with their types; a list, since M2 may repeat a
span and `errant_compare` counts each."""
M2Edits = list[tuple[Edit, str]] | None
"""The edit lines `errant_parallel` writes for one corrected text; None for its noop line."""


@cache
def annotator() -> Any:
    import errant

    return errant.load("en", spacy_pipeline())


def m2_edits(source: Any, corrected: Any, *, identical: bool) -> M2Edits:
    """The typed edits from the parsed `source` to the parsed `corrected`, as `errant_parallel`
    writes them (None when it writes a noop: the two texts are the same)."""
    if identical:
        return None
    return [
        ((edit.o_start, edit.o_end, " ".join(token.text for token in edit.c_toks)), edit.type)
        for edit in annotator().annotate(source, corrected)
    ]


def edits(source: str, corrected: str, *, pretokenized: bool = False) -> dict[Edit, str]:
    """The edits that turn `source` into `corrected`, each mapped to its ERRANT type."""
    found = m2_edits(
        parse(source, pretokenized=pretokenized),
        parse(corrected, pretokenized=pretokenized),
        identical=_line(source, pretokenized) == corrected.strip(),
    )
    return dict(found or [])


def f_beta(tp: int, fp: int, fn: int, beta: float = 0.5) -> tuple[float, float, float]:
    """Precision, recall and F-beta; an empty side counts as perfect, as in errant_compare."""
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    denominator = beta**2 * precision + recall
    f = (1 + beta**2) * precision * recall / denominator if denominator else 0.0
    return precision, recall, f


@dataclass
class ErrantCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    by_type: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, other: ErrantCounts) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        for kind, counts in other.by_type.items():
            self.by_type.setdefault(kind, Counter()).update(counts)

    def scores(self) -> tuple[float, float, float]:
        return f_beta(self.tp, self.fp, self.fn)

    def type_table(self) -> dict[str, dict[str, float]]:
        table = {}
        for kind, counts in sorted(self.by_type.items()):
            p, r, f = f_beta(counts["tp"], counts["fp"], counts["fn"])
            table[kind] = {
                "tp": counts["tp"],
                "fp": counts["fp"],
                "fn": counts["fn"],
                "precision": p,
                "recall": r,
                "f05": f,
            }
        return table


def coder(found: M2Edits) -> Coder | None:
    """The edits `errant_compare` keeps from one text's M2 lines: none for a noop, no `UNK`
    edits; None when there were no lines at all (it never learns of that reference)."""
    if found is None:
        return {}
    if not found:
        return None
    kept: Coder = {}
    for edit, kind in found:
        if kind != "UNK":
            kept.setdefault(edit, []).append(kind)
    return kept


def compare_edits(hypothesis: Coder, reference: Coder) -> ErrantCounts:
    """True and false positives and false negatives; a true positive takes the reference's
    type, as in errant_compare."""
    counts = ErrantCounts()

    def count(kinds: list[str], outcome: str) -> None:
        for kind in kinds:
            counts.by_type.setdefault(kind, Counter())[outcome] += 1

    for edit, kinds in hypothesis.items():
        if edit in reference:
            count(reference[edit], "tp")
        else:
            count(kinds, "fp")
    for edit, kinds in reference.items():
        if edit not in hypothesis:
            count(kinds, "fn")
    counts.tp = sum(c["tp"] for c in counts.by_type.values())
    counts.fp = sum(c["fp"] for c in counts.by_type.values())
    counts.fn = sum(c["fn"] for c in counts.by_type.values())
    return counts


def best_reference(
    hypothesis: Coder, references: Sequence[Coder], running: ErrantCounts
) -> ErrantCounts:
    """The reference's counts that maximise the running corpus F0.5 (errant_compare's rule)."""
    best: tuple[tuple[float, int, int, int], ErrantCounts] | None = None
    for reference in references or [{}]:
        counts = compare_edits(hypothesis, reference)
        _, _, f = f_beta(running.tp + counts.tp, running.fp + counts.fp, running.fn + counts.fn)
        key = (round(f, 4), counts.tp, -counts.fp, -counts.fn)  # errant_compare rounds F too
        if best is None or key > best[0]:
            best = (key, counts)
    assert best is not None
    return best[1]


def errant_scores(
    sources: Sequence[str],
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    pretokenized: bool = False,
    hypotheses_pretokenized: bool = False,
) -> tuple[ErrantCounts, list[ErrantCounts]]:
    """Corpus counts and each sentence's counts (against its chosen reference).

    `pretokenized`: the sources and references come tokenized (JFLEG) and are taken as they
    are; `hypotheses_pretokenized`: so do the hypotheses (else they are plain-text answers).
    """
    answers = pretokenized and not hypotheses_pretokenized
    lines = [  # each hypothesis as the line the official tools would read
        " ".join(answer_tokens(hypothesis, source)) if answers else hypothesis
        for source, hypothesis in zip(sources, hypotheses, strict=True)
    ]
    tokenized = pretokenized or hypotheses_pretokenized
    prefetch([*sources, *(ref for refs in references for ref in refs)], pretokenized=pretokenized)
    prefetch(lines, pretokenized=tokenized)
    corpus = ErrantCounts()
    per_sentence = []
    for source, line, refs in zip(sources, lines, references, strict=True):
        if not source.strip():  # errant_parallel skips the line
            per_sentence.append(ErrantCounts())
            continue
        hyp_edits = _coder_of(source, pretokenized, line, tokenized) or {}
        ref_edits = [
            found
            for found in (_coder_of(source, pretokenized, ref, pretokenized) for ref in refs)
            if found is not None
        ]
        chosen = best_reference(hyp_edits, ref_edits, corpus)
        corpus.add(chosen)
        per_sentence.append(chosen)
    return corpus, per_sentence


def _coder_of(source: str, pretokenized: bool, corrected: str, tokenized: bool) -> Coder | None:
    """`corrected`'s edits of `source`, as errant_compare keeps them."""
    found = m2_edits(
        parse(source, pretokenized=pretokenized),
        parse(corrected, pretokenized=tokenized),
        identical=corrected.strip() == _line(source, pretokenized),
    )
    return coder(found)


def _line(text: str, pretokenized: bool) -> str:
    """The text `errant_parallel` compares a correction with: its source Doc's text."""
    return " ".join(text.split()) if pretokenized else text.strip()
