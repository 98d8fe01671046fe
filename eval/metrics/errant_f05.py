"""ERRANT precision, recall and F0.5 (Bryant et al. 2017), with a per-error-type breakdown.

Edits are extracted by `errant` from (source, hypothesis) and (source, reference), using the
spaCy model shipped as a package, and matched on their span and correction, as `errant_compare`
does. With several references, each sentence is scored against the reference that gives the
best running corpus F0.5 (ties: more true positives, then fewer false positives, then fewer false
negatives), also as `errant_compare` does. F0.5 weighs precision twice as much as recall: a wrong
edit costs an author more than a missed one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from .nlp import parse, spacy_pipeline

Edit = tuple[int, int, str]


@cache
def annotator() -> Any:
    import errant

    return errant.load("en", spacy_pipeline())


def edits(source: str, corrected: str) -> dict[Edit, str]:
    """The edits that turn `source` into `corrected`, each mapped to its ERRANT type."""
    ann = annotator()
    return {
        (edit.o_start, edit.o_end, edit.c_str): edit.type
        for edit in ann.annotate(parse(source), parse(corrected))
        if edit.type != "noop"
    }


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


def compare_edits(hypothesis: dict[Edit, str], reference: dict[Edit, str]) -> ErrantCounts:
    counts = ErrantCounts()
    for edit, kind in hypothesis.items():
        outcome = "tp" if edit in reference else "fp"
        counts.by_type.setdefault(kind, Counter())[outcome] += 1
    for edit, kind in reference.items():
        if edit not in hypothesis:
            counts.by_type.setdefault(kind, Counter())["fn"] += 1
    counts.tp = sum(c["tp"] for c in counts.by_type.values())
    counts.fp = sum(c["fp"] for c in counts.by_type.values())
    counts.fn = sum(c["fn"] for c in counts.by_type.values())
    return counts


def best_reference(
    hypothesis: dict[Edit, str], references: Sequence[dict[Edit, str]], running: ErrantCounts
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
    sources: Sequence[str], hypotheses: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[ErrantCounts, list[ErrantCounts]]:
    """Corpus counts and each sentence's counts (against its chosen reference)."""
    corpus = ErrantCounts()
    per_sentence = []
    for source, hypothesis, refs in zip(sources, hypotheses, references, strict=True):
        hyp_edits = edits(source, hypothesis)
        chosen = best_reference(hyp_edits, [edits(source, ref) for ref in refs], corpus)
        corpus.add(chosen)
        per_sentence.append(chosen)
    return corpus, per_sentence
