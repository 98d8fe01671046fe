"""Training data: our files and CoEdIT through the eval loaders, dedupe, and the leakage check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eval.data import EvalExample, dataset_sha256, load_dataset
from modal_backend.training.cli import main as training_cli
from modal_backend.training.config import DEFAULT_EVAL_SET, DEFAULT_TRAIN_SET, TrainConfig
from modal_backend.training.config import resolve_path as repo_path
from modal_backend.training.data import (
    DataError,
    LeakageError,
    TrainingExample,
    build_training_data,
    deduplicate,
    find_leaks,
    load_training_dataset,
    split,
)

EVAL_SET = load_dataset(repo_path(DEFAULT_EVAL_SET))
PLANTED_FROM = EVAL_SET[0]  # g-001: "The dogs in the yard was barking at every car that passed."


def rows(*items: tuple[str, str, str, str]) -> list[dict[str, Any]]:
    return [
        {"id": id_, "type": kind, "source": source, "references": [target]}
        for id_, kind, source, target in items
    ]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


CLEAN = rows(
    ("c-1", "grammar", "The kettle were whistling in the kitchen.", "The kettle was whistling."),
    (
        "c-2",
        "clarity",
        "Due to the fact that it rained, we stayed in.",
        "Because it rained, we stayed in.",
    ),
    ("c-3", "style", "The night was very very dark.", "The night was pitch dark."),
)


def test_a_planted_near_duplicate_of_an_eval_example_fails_the_build(tmp_path: Path) -> None:
    near = PLANTED_FROM.source.replace(" car ", " truck ")
    assert near != PLANTED_FROM.source
    leaky = [*CLEAN, *rows(("leak-1", "grammar", near, "The dogs were barking."))]
    config = TrainConfig(datasets=(str(write_jsonl(tmp_path / "ours.jsonl", leaky)),))
    with pytest.raises(LeakageError) as caught:
        build_training_data(config, tmp_path / "work")
    assert [(leak.train_id, leak.eval_id) for leak in caught.value.leaks] == [
        ("ours:leak-1", PLANTED_FROM.id)
    ]
    assert "ours:leak-1" in str(caught.value) and PLANTED_FROM.id in str(caught.value)


def test_an_eval_reference_used_as_a_training_target_is_a_leak() -> None:
    reference = PLANTED_FROM.references[0]
    example = TrainingExample("ours:t", "grammar", "Some other sentence entirely.", reference)
    leaks = find_leaks([example], EVAL_SET, threshold=90)
    assert [(leak.eval_id, leak.score) for leak in leaks] == [(PLANTED_FROM.id, 100.0)]


def test_case_quotes_and_spacing_do_not_hide_an_exact_copy() -> None:
    disguised = "  " + PLANTED_FROM.source.upper().replace(" ", "   ") + " "
    example = TrainingExample("ours:t", "grammar", disguised, "Whatever.")
    assert [leak.eval_id for leak in find_leaks([example], EVAL_SET)] == [PLANTED_FROM.id]
    evals = [EvalExample(id="q", type="style", source="“Don’t go,” she said.")]
    quoted = TrainingExample("ours:q", "style", '"Don\'t go," she said.', "Stay.")
    assert [leak.eval_id for leak in find_leaks([quoted], evals)] == ["q"]


LONG_EVAL = next(ex for ex in EVAL_SET if len(ex.source) >= 90)


def test_an_eval_passage_embedded_in_a_longer_training_passage_is_a_leak() -> None:
    """Whole-text similarity misses it: the training passage is mostly other text."""
    padded = (
        "It had been a long week at the office, and nobody expected much of Friday. "
        f"{LONG_EVAL.source} After that the afternoon went quietly, as afternoons there did."
    )
    example = TrainingExample("ours:embed", LONG_EVAL.type, padded, "Unrelated target text.")
    (leak,) = [leak for leak in find_leaks([example], EVAL_SET) if leak.eval_id == LONG_EVAL.id]
    assert leak.method == "containment" and leak.score >= 90


def test_an_eval_passage_split_across_training_rows_is_a_leak() -> None:
    words = LONG_EVAL.source.split()
    half = len(words) // 2
    parts = [" ".join(words[:half]), " ".join(words[half:])]
    examples = [
        TrainingExample(f"ours:part-{i}", LONG_EVAL.type, part, f"Target {i}.")
        for i, part in enumerate(parts)
    ]
    leaks = find_leaks(examples, EVAL_SET)
    assert {leak.train_id for leak in leaks if leak.eval_id == LONG_EVAL.id} == {
        "ours:part-0",
        "ours:part-1",
    }


def test_a_copied_clause_of_eight_words_is_a_leak_but_a_shared_phrase_is_not() -> None:
    """Neither similarity score reaches 90 here (ratio 60, partial_ratio 83): only the run of
    eight words in a row gives the copy away."""
    evals = [
        EvalExample(
            id="e",
            type="clarity",
            source="When the storm finally broke over the harbour, every boat had long gone.",
        )
    ]
    copied = TrainingExample(
        "ours:c",
        "clarity",
        "Years later she still remembered how the storm finally broke over the harbour, every "
        "boat rocked and the old pier groaned under the weight of the sea.",
        "x",
    )
    (leak,) = find_leaks([copied], evals)
    assert (leak.eval_id, leak.method) == ("e", "ngram")
    phrase = TrainingExample(
        "ours:p", "clarity", "When the storm broke we went in; it was over by morning.", "x"
    )
    assert find_leaks([phrase], evals) == []


def test_short_texts_are_not_tested_for_containment() -> None:
    """'He left.' is inside many passages; only texts of 40+ characters count as contained."""
    evals = [
        EvalExample(
            id="e", type="grammar", source="After the argument in the kitchen, he left quickly."
        )
    ]
    short = TrainingExample("ours:s", "grammar", "He left quickly.", "He left.")
    assert find_leaks([short], evals) == []


def test_no_eval_set_means_no_build_unless_the_check_is_switched_off(tmp_path: Path) -> None:
    ours = str(write_jsonl(tmp_path / "ours.jsonl", CLEAN))
    with pytest.raises(DataError, match="--no-leak-check"):
        build_training_data(TrainConfig(datasets=(ours,), eval_datasets=()), tmp_path / "w")
    unchecked = build_training_data(
        TrainConfig(datasets=(ours,), eval_datasets=(), leak_check=False), tmp_path / "w"
    )
    assert unchecked.leakage == {
        "checked": False,
        "reason": "--no-leak-check",
        "checked_eval_sets": [],
    }


def test_the_checked_eval_sets_are_recorded_by_hash(tmp_path: Path) -> None:
    config = TrainConfig(datasets=(str(write_jsonl(tmp_path / "ours.jsonl", CLEAN)),))
    data = build_training_data(config, tmp_path / "work")
    assert data.leakage["checked"] is True
    assert data.leakage["checked_eval_sets"] == [
        {"path": DEFAULT_EVAL_SET, "sha256": dataset_sha256(repo_path(DEFAULT_EVAL_SET))}
    ]


def test_unrelated_training_text_passes_the_check(tmp_path: Path) -> None:
    config = TrainConfig(
        datasets=(str(write_jsonl(tmp_path / "ours.jsonl", CLEAN)),), eval_fraction=0.0
    )
    data = build_training_data(config, tmp_path / "work")
    assert [ex.id for ex in data.train] == ["ours:c-1", "ours:c-2", "ours:c-3"]
    assert data.leakage["leaks"] == 0
    assert data.eval_sets[0]["examples"] == len(EVAL_SET)


def test_our_training_set_is_large_enough_and_does_not_leak(tmp_path: Path) -> None:
    """The committed training file, checked as every run checks it (skipped until it exists)."""
    path = repo_path(DEFAULT_TRAIN_SET)
    if not path.is_file():
        pytest.skip(f"{DEFAULT_TRAIN_SET} is not there yet")
    data = build_training_data(TrainConfig(), tmp_path / "work")  # raises on a leak
    record = data.records[0]
    assert record.rows >= 300
    assert set(record.by_type) == {"grammar", "clarity", "style"}
    assert data.duplicates_dropped == 0


def test_duplicates_are_dropped_keeping_the_first() -> None:
    first = TrainingExample("ours:1", "grammar", "He go home.", "He goes home.")
    again = TrainingExample("coedit:9", "grammar", "he  go HOME.", "He went home.")
    other_type = TrainingExample("ours:2", "style", "He go home.", "Home he went.")
    kept, dropped = deduplicate([first, again, other_type])
    assert kept == [first, other_type]
    assert dropped == 1


def test_the_hold_out_is_seeded_and_leaves_the_rest_in_order() -> None:
    examples = [TrainingExample(f"ours:{i}", "grammar", f"s{i}", f"t{i}") for i in range(20)]
    train, held = split(examples, 0.1, seed=3)
    assert len(held) == 2 and len(train) == 18
    assert split(examples, 0.1, seed=3) == (train, held)
    assert [ex.id for ex in train] == [ex.id for ex in examples if ex not in held]
    assert split(examples[:1], 0.5, seed=3) == (examples[:1], [])


COEDIT_ROWS = [
    {"_id": "1", "task": "gec", "src": "Fix grammar: He go home.", "tgt": "He goes home."},
    {"_id": "2", "task": "gec", "src": "Fix the grammar: She have a cat.", "tgt": "She has a cat."},
    {"_id": "3", "task": "gec", "src": "Correct this: They is here.", "tgt": "They are here."},
    {"_id": "4", "task": "clarity", "src": "Make it clear: It is what it is.", "tgt": "It is so."},
    {"_id": "5", "task": "coherence", "src": "Fix coherence: A. B.", "tgt": "A, so B."},
    {"_id": "6", "task": "neutralize", "src": "Neutralize: The awful plan.", "tgt": "The plan."},
    {"_id": "7", "task": "paraphrase", "src": "Paraphrase: I am glad.", "tgt": "I'm happy."},
    {"_id": "8", "task": "formality", "src": "Write formally: gonna go.", "tgt": "I will go."},
    {"_id": "9", "task": "simplification", "src": "Simplify: Utilise it.", "tgt": "Use it."},
]


def test_coedit_tasks_map_onto_our_types_from_jsonl_and_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = write_jsonl(tmp_path / "coedit-train.jsonl", COEDIT_ROWS)
    parquet = tmp_path / "export" / "coedit-train.parquet"
    parquet.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(COEDIT_ROWS), parquet)
    from_jsonl, record = load_training_dataset(str(jsonl), work_dir=tmp_path / "work")
    from_parquet, _ = load_training_dataset(str(parquet), work_dir=tmp_path / "work")
    assert from_jsonl == from_parquet
    assert [(ex.id, ex.type) for ex in from_jsonl] == [
        ("coedit-train:1", "grammar"),
        ("coedit-train:2", "grammar"),
        ("coedit-train:3", "grammar"),
        ("coedit-train:4", "clarity"),
        ("coedit-train:5", "clarity"),
        ("coedit-train:6", "style"),
        ("coedit-train:7", "style"),
        ("coedit-train:8", "style"),
    ]  # simplification is not one of ours
    assert from_jsonl[0].source == "He go home." and from_jsonl[0].target == "He goes home."
    assert record.rows == 9 and record.used == 8
    assert record.by_type == {"clarity": 2, "grammar": 3, "style": 3}
    assert record.sha256 == dataset_sha256(jsonl) and record.converted_sha256 is None
    _, from_export = load_training_dataset(str(parquet), work_dir=tmp_path / "work")
    assert from_export.sha256 == dataset_sha256(parquet)  # the file as given, not our copy
    assert from_export.converted_sha256 == dataset_sha256(tmp_path / "work" / "coedit-train.jsonl")


def test_coedit_is_sampled_per_type_with_a_seed(tmp_path: Path) -> None:
    jsonl = write_jsonl(tmp_path / "coedit.jsonl", COEDIT_ROWS)
    sampled, record = load_training_dataset(str(jsonl), work_dir=tmp_path, coedit_per_type=2)
    again, _ = load_training_dataset(str(jsonl), work_dir=tmp_path, coedit_per_type=2)
    assert sampled == again
    assert record.by_type == {"clarity": 2, "grammar": 2, "style": 2}


def test_coedit_from_the_hub_fails_clearly_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"HF_HUB_OFFLINE is set.*--dataset coedit-train\.parquet"):
        load_training_dataset("coedit", work_dir=tmp_path)


def test_a_training_row_needs_exactly_one_target(tmp_path: Path) -> None:
    two = [{"id": "x", "type": "grammar", "source": "A b.", "references": ["A.", "B."]}]
    with pytest.raises(DataError, match="'x' has 2 references"):
        load_training_dataset(str(write_jsonl(tmp_path / "two.jsonl", two)), work_dir=tmp_path)
    with pytest.raises(DataError, match="no such dataset file"):
        load_training_dataset(str(tmp_path / "missing.jsonl"), work_dir=tmp_path)


def test_the_data_command_reports_counts_or_fails_on_a_leak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean = write_jsonl(tmp_path / "clean.jsonl", CLEAN)
    assert training_cli(["data", "--dataset", str(clean)]) == 0
    report = json.loads(capsys.readouterr().out)
    counts = report["examples"]
    assert sum(counts["train"].values()) + sum(counts["held_out"].values()) == 3
    assert report["leakage"]["leaks"] == 0

    planted = rows(("l", "grammar", PLANTED_FROM.source, "x"))
    leaky = write_jsonl(tmp_path / "leaky.jsonl", [*CLEAN, *planted])
    assert training_cli(["data", "--dataset", f"{clean},{leaky}"]) == 1
    assert "leaky:l" in capsys.readouterr().err
    assert training_cli(["data", "--dataset", f"{clean},{leaky}", "--no-leak-check"]) == 0
    assert json.loads(capsys.readouterr().out)["leakage"]["checked"] is False
