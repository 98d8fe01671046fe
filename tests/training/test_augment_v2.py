"""Training data v2: learner errors that keep each passage's tense, unchanged passages, many
registers, reproducible from the seed, and nothing shared with JFLEG or our eval set."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from eval.data import load_dataset
from modal_backend.training.augment import is_edit
from modal_backend.training.augment_v2 import (
    CLEAN_DIR,
    DEFAULT_SEED,
    V2_CARD,
    V2_SET,
    build_rows,
    load_passages,
    main,
)
from modal_backend.training.config import DEFAULT_TRAIN_SETS, REPO_ROOT, TrainConfig
from modal_backend.training.data import build_training_data, normalize, word_ngrams
from modal_backend.training.learner_rules import (
    LEARNER_RULES,
    PassageContext,
    agreement,
    extra_word,
    noun_number,
    tense_slip,
    word_order,
)
from tests.eval.test_harness import JFLEG

PASSAGES = load_passages(REPO_ROOT / CLEAN_DIR)
WORDS = frozenset(w for p in PASSAGES for w in re.findall(r"(?<![\w'])[a-z][\w']*", p.text))


def committed() -> list[dict[str, Any]]:
    text = (REPO_ROOT / V2_SET).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def ctx(tense: str = "present", register: str = "essay") -> PassageContext:
    return PassageContext(WORDS, tense=tense, register=register)  # type: ignore[arg-type]


def test_the_committed_set_and_card_are_what_the_seed_writes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--check"]) == 0, capsys.readouterr().err
    assert build_rows(DEFAULT_SEED) == committed()
    assert build_rows(DEFAULT_SEED + 1) != committed()
    assert DEFAULT_TRAIN_SETS[-1] == V2_SET
    card = (REPO_ROOT / V2_CARD).read_text(encoding="utf-8")
    assert f"seed **{DEFAULT_SEED}**" in card and f"**{len(committed())} rows**" in card


def test_passages_cover_registers_tenses_and_persons() -> None:
    registers = Counter(p.register for p in PASSAGES)
    assert {"essay", "email", "report", "review", "instructions", "dialogue"} <= set(registers)
    assert {p.tense for p in PASSAGES} == {"present", "past"}
    assert {p.person for p in PASSAGES} == {"first", "second", "third"}
    assert len(PASSAGES) >= 900


@pytest.mark.parametrize("rule", LEARNER_RULES, ids=lambda rule: rule.name)
def test_every_family_makes_real_edits_and_leaves_the_passage_alone(rule: Any) -> None:
    made = 0
    for index, passage in enumerate(PASSAGES):
        text = passage.text
        out = rule.apply(text, random.Random(index), ctx(passage.tense, passage.register))
        assert passage.text == text
        if out is not None:
            made += 1
            assert is_edit(out, text), (rule.name, text, out)
    assert made >= 20, f"{rule.name} applies to only {made} passages"


def test_grammar_rows_are_minimal_edits_with_a_share_unchanged() -> None:
    rows = [row for row in committed() if row["type"] == "grammar"]
    texts = {p.text for p in PASSAGES}
    unchanged = [row for row in rows if row["source"] == row["references"][0]]
    assert 0.25 <= len(unchanged) / len(rows) <= 0.35
    for row in rows:
        assert row["references"][0] in texts
        source, target = row["source"].split(), row["references"][0].split()
        assert abs(len(source) - len(target)) <= 3, row  # a few words, never a rewrite
    assert all(row["tags"][-1] == "no-error" for row in unchanged)
    families = Counter(tag for row in rows for tag in row["tags"][3:])
    for tag in ("article", "preposition", "plural", "subject-verb-agreement", "verb-form"):
        assert families[tag] >= 60, (tag, families)
    for tag in ("spelling", "word-order", "missing-word", "extra-word", "punctuation"):
        assert families[tag] >= 40, (tag, families)


def test_a_tense_error_is_an_inconsistency_never_a_shift_of_the_passage() -> None:
    present = "She lives in Lima, works at a bank and visits her parents every Sunday."
    slipped = {tense_slip(present, random.Random(seed), ctx()) for seed in range(30)}
    assert slipped - {None} and all(
        s is not None and len(re.findall(r"\b\w+s\b", s)) >= 2 for s in slipped
    )
    assert tense_slip("She lives in Lima.", random.Random(0), ctx()) is None  # nothing to be
    # inconsistent with: "She lived in Lima." is correct English
    past = tense_slip("We walked to the park and played football.", random.Random(0), ctx("past"))
    assert past in {
        "We walk to the park and played football.",
        "We walked to the park and play football.",
    }
    assert (
        tense_slip('"We walked home," Ana said.', random.Random(0), ctx("past", "dialogue")) is None
    )


def test_agreement_keeps_the_passages_tense() -> None:
    present = {agreement("She walks to work.", random.Random(s), ctx()) for s in range(10)}
    assert "She walk to work." in present
    assert all("walked" not in (s or "") for s in present)
    assert agreement("They walk to work.", random.Random(0), ctx()) == "They walks to work."
    assert agreement("She walked to work.", random.Random(0), ctx("past")) is None


def test_learner_families_make_the_errors_they_name() -> None:
    assert noun_number("I bought three books.", random.Random(0), ctx()) == "I bought three book."
    assert extra_word("I can swim.", random.Random(0), ctx()) == "I can to swim."
    assert word_order("We bought a new car.", random.Random(0), ctx("past")) == (
        "We bought a car new."
    )


def test_the_default_training_set_passes_the_leakage_check(tmp_path: Path) -> None:
    data = build_training_data(TrainConfig(datasets=DEFAULT_TRAIN_SETS), tmp_path / "work")
    assert data.leakage["checked"] and data.leakage["leaks"] == 0


@pytest.mark.skipif(not (JFLEG / "dev" / "dev.src").is_file(), reason="JFLEG is not here")
def test_no_v2_text_shares_eight_words_in_a_row_with_jfleg() -> None:
    jfleg = load_dataset(JFLEG / "dev" / "dev.src") + load_dataset(JFLEG / "test" / "test.src")
    grams = {
        g for ex in jfleg for t in (ex.source, *ex.references) for g in word_ngrams(normalize(t))
    }
    shared = [
        ex.id
        for ex in load_dataset(REPO_ROOT / V2_SET)
        for text in (ex.source, *ex.references)
        if word_ngrams(normalize(text)) & grams
    ]
    assert shared == []
