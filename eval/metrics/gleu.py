"""GLEU exactly as JFLEG's official script computes it (Napoles et al. 2015, updated 2016/2017).

Not Hugging Face's `google_bleu`, which is Google's sentence GLEU for translation. This GLEU
rewards n-grams of the hypothesis that are in the reference and penalises n-grams it keeps from
the source that the reference changed. With several references, the official script scores the
corpus `iterations` times (500), each time picking one reference per sentence at random with
`random.seed(j * 101)` for iteration j (and Python 2's `randint`, as the script ran), and reports
the mean over iterations. Sentence GLEU is the
mean over each reference of the smoothed score. Inputs are whitespace-tokenized, as in JFLEG's
files; `tokens=` lets callers tokenize plain text the same way first.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

ORDER = 4
ITERATIONS = 500

Ngrams = Counter[tuple[str, ...]]


def ngram_counts(tokens: Sequence[str], n: int) -> Ngrams:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) + 1 - n))


def sentence_stats(
    source: Sequence[str], hypothesis: Sequence[str], reference: Sequence[str]
) -> list[int]:
    """`[hyp_len, ref_len, match_1, total_1, ..., match_4, total_4]` for one sentence and one
    reference; corpus GLEU sums these columns over sentences.

    match_n = |h_n ∩ r_n| - |h_n ∩ (s_n \\ r_n)| (floored at 0), total_n = max(len(h) + 1 - n, 0),
    where `s_n \\ r_n` drops every source n-gram that the reference contains at all.
    """
    stats = [len(hypothesis), len(reference)]
    for n in range(1, ORDER + 1):
        h_ngrams = ngram_counts(hypothesis, n)
        s_ngrams = ngram_counts(source, n)
        r_ngrams = ngram_counts(reference, n)
        source_not_ref = Counter({k: v for k, v in s_ngrams.items() if k not in r_ngrams})
        matched = sum((h_ngrams & r_ngrams).values()) - sum((h_ngrams & source_not_ref).values())
        stats.extend([max(matched, 0), max(len(hypothesis) + 1 - n, 0)])
    return stats


def gleu_from_stats(stats: Sequence[int], *, smooth: bool = False) -> float:
    """The geometric mean of the n-gram precisions times the brevity penalty
    exp(min(0, 1 - r/c)); 0 when any count is 0, unless `smooth` turns zeros into ones (the
    official script smooths sentence-level scores only)."""
    if smooth:
        stats = [value if value != 0 else 1 for value in stats]
    if any(value == 0 for value in stats):
        return 0.0
    hyp_len, ref_len = stats[0], stats[1]
    log_precision = sum(math.log(m / t) for m, t in zip(stats[2::2], stats[3::2], strict=True)) / 4
    return math.exp(min(0.0, 1 - ref_len / hyp_len) + log_precision)


@dataclass(frozen=True, slots=True)
class CorpusGleu:
    mean: float
    std: float
    iterations: int


def corpus_gleu(
    sources: Sequence[str],
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    iterations: int = ITERATIONS,
) -> CorpusGleu:
    """Corpus GLEU: `references[i]` holds every reference for sentence i (the same number for
    each sentence, as in JFLEG). One iteration when there is a single reference, as the script
    does."""
    if not (len(sources) == len(hypotheses) == len(references)):
        raise ValueError("sources, hypotheses and references must have the same length")
    if not sources:
        raise ValueError("no sentences to score")
    ref_count = len(references[0])
    if ref_count == 0 or any(len(refs) != ref_count for refs in references):
        raise ValueError("every sentence needs the same, non-zero number of references")
    iterations = 1 if ref_count == 1 else iterations
    picks = []
    for j in range(iterations):
        rng = random.Random(j * 101)
        # The official script is Python 2, where randint(0, n - 1) is int(random() * n); only
        # that reproduces JFLEG's published scores (Python 3's randint draws differently).
        picks.append([int(rng.random() * ref_count) for _ in hypotheses])
    totals = [[0] * (2 + 2 * ORDER) for _ in range(iterations)]
    for i, (source, hypothesis, refs) in enumerate(
        zip(sources, hypotheses, references, strict=True)
    ):
        s_tokens, h_tokens = source.split(), hypothesis.split()
        by_ref: dict[int, list[int]] = {}
        for j in range(iterations):
            r = picks[j][i]
            if r not in by_ref:
                by_ref[r] = sentence_stats(s_tokens, h_tokens, refs[r].split())
            totals[j] = [a + b for a, b in zip(totals[j], by_ref[r], strict=True)]
    scores = [gleu_from_stats(stats) for stats in totals]
    return CorpusGleu(statistics.fmean(scores), statistics.pstdev(scores), iterations)


def sentence_gleu(source: str, hypothesis: str, references: Sequence[str]) -> float:
    """The script's sentence-level score: the mean over references of the smoothed GLEU."""
    if not references:
        raise ValueError("sentence GLEU needs at least one reference")
    s_tokens, h_tokens = source.split(), hypothesis.split()
    return statistics.fmean(
        gleu_from_stats(sentence_stats(s_tokens, h_tokens, ref.split()), smooth=True)
        for ref in references
    )
