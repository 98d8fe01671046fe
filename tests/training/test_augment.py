"""The seeded augmentation: real edits of our own sentences, reproducible, and leak-free."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from eval.data import load_dataset
from modal_backend.training.augment import (
    AUGMENTED_SET,
    BASE_SET,
    CLEAN_SENTENCES,
    DEFAULT_SEED,
    RULES,
    build,
    context,
    is_edit,
    load_pool,
    main,
)
from modal_backend.training.augment_rewrites import THROAT_CLEARING, filler, passive, prefix
from modal_backend.training.augment_rules import AGREEMENT, Context, article, table_rule
from modal_backend.training.config import REPO_ROOT, TrainConfig
from modal_backend.training.data import build_training_data, normalize, word_ngrams
from tests.eval.test_harness import JFLEG

POOL = load_pool(REPO_ROOT / CLEAN_SENTENCES, REPO_ROOT / BASE_SET)
CTX = context(POOL)
COMMITTED = REPO_ROOT / AUGMENTED_SET


def committed_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in COMMITTED.read_text(encoding="utf-8").splitlines()]


def test_the_generator_is_deterministic_for_a_seed() -> None:
    first = build(DEFAULT_SEED)
    assert build(DEFAULT_SEED) == first
    assert build(DEFAULT_SEED + 1) != first


def test_the_committed_file_is_what_the_generator_writes_for_the_documented_seed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert COMMITTED.read_text(encoding="utf-8") == build(DEFAULT_SEED)
    assert main(["--check"]) == 0
    assert '"rows": ' in capsys.readouterr().out


@pytest.mark.parametrize(
    "rule", [rule for rules in RULES.values() for rule in rules], ids=lambda rule: rule.name
)
def test_every_rule_makes_a_real_edit_and_leaves_the_clean_text_alone(rule: Any) -> None:
    made = 0
    for index, line in enumerate(POOL):
        text = line.text
        out = rule.apply(text, random.Random(index), CTX)
        assert line.text == text  # the target is never rewritten
        if out is None:
            continue
        made += 1
        assert is_edit(out, text), (rule.name, text, out)
        if rule.kind != "grammar":  # clarity and style only ever pad: the target is tighter
            assert len(out) > len(text), (rule.name, text, out)
    assert made >= 10, f"{rule.name} applies to only {made} clean lines"


def test_the_rows_are_real_edits_of_our_own_clean_text() -> None:
    rows = committed_rows()
    pool = {line.text for line in POOL}
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids))
    for row in rows:
        prefix_, kind, rule, number = row["id"].split(":")
        assert (prefix_, kind) == ("aug", row["type"]) and number.isdigit()
        assert rule in {r.name for r in RULES[kind]}
        [target] = row["references"]
        assert target in pool and is_edit(row["source"], target)
        assert row["tags"][0] in {"fiction", "non-fiction", "manuscript"}
    sources = {(row["type"], normalize(row["source"])) for row in rows}
    assert len(sources) == len(rows)


def test_with_the_hand_written_set_there_are_over_two_thousand_roughly_balanced() -> None:
    rows = load_dataset(REPO_ROOT / BASE_SET) + load_dataset(COMMITTED)
    by_type = {kind: sum(1 for row in rows if row.type == kind) for kind in RULES}
    assert sum(by_type.values()) >= 2000
    assert min(by_type.values()) >= 500 and max(by_type.values()) <= 2 * min(by_type.values())


def test_the_full_training_set_passes_the_leakage_check(tmp_path: Path) -> None:
    config = TrainConfig(datasets=(BASE_SET, AUGMENTED_SET))
    data = build_training_data(config, tmp_path / "work")  # raises LeakageError on a leak
    assert data.leakage["checked"] and data.leakage["leaks"] == 0
    assert data.duplicates_dropped == 0


@pytest.mark.skipif(not (JFLEG / "dev" / "dev.src").is_file(), reason="JFLEG is not here")
def test_no_training_text_shares_eight_words_in_a_row_with_jfleg() -> None:
    """The n-gram test of the leakage check, against all of JFLEG (the full fuzzy check of
    ~4,300 texts against ~7,500 takes about a minute on two cores: run it by hand)."""
    jfleg = load_dataset(JFLEG / "dev" / "dev.src") + load_dataset(JFLEG / "test" / "test.src")
    grams = {
        g
        for ex in jfleg
        for text in (ex.source, *ex.references)
        for g in word_ngrams(normalize(text))
    }
    ours = load_dataset(REPO_ROOT / BASE_SET) + load_dataset(COMMITTED)
    shared = [
        ex.id
        for ex in ours
        for text in (ex.source, *ex.references)
        if word_ngrams(normalize(text)) & grams
    ]
    assert shared == []


def test_rules_change_only_what_they_name() -> None:
    ctx = Context(lower_words=frozenset({"the"}))
    agreement = table_rule(AGREEMENT)
    assert agreement("The dogs were asleep.", random.Random(0), ctx) == "The dogs was asleep."
    assert (
        table_rule(AGREEMENT, lambda text, m: True)("The staff were kind.", random.Random(0), ctx)
        is None
    )
    rng = random.Random(0)
    broken = {article("She bought an old map.", random.Random(seed), ctx) for seed in range(20)}
    assert broken == {"She bought a old map.", "She bought old map."}
    assert rng is not None
    assert (
        passive("The committee approved the budget after a short debate.", rng, ctx)
        == "The budget was approved by the committee after a short debate."
    )
    assert passive("The committee considered the complaint at length.", rng, ctx) is None


def test_openers_are_never_stacked_and_names_keep_their_capital() -> None:
    ctx = Context(lower_words=frozenset({"the", "ferry"}))
    once = prefix("The ferry was late.", random.Random(1), ctx, THROAT_CLEARING)
    assert once is not None and once.endswith("the ferry was late.")
    assert prefix(once, random.Random(1), ctx, THROAT_CLEARING) is None
    named = prefix("Lena painted the fence.", random.Random(1), ctx, THROAT_CLEARING)
    assert named is not None and named.endswith("Lena painted the fence.")
    padded = filler("Lena painted the fence.", random.Random(1), ctx)
    assert (
        padded is not None and padded.startswith("Lena ") and padded.endswith(" painted the fence.")
    )
