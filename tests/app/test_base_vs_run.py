"""The dashboard's base-vs-run comparison on run folders written with the harness's own writers
(config.json, metrics.csv/.parquet and summary.json, as `python -m eval run` and `score` leave
them), at the size of JFLEG dev."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from app.dashboard import (
    COMPARISON_COLUMNS,
    COMPARISON_ITERATIONS,
    ERROR_TYPE_COLUMNS,
    DashboardError,
    RunPair,
    comparison_notes,
    comparison_table,
    find_pairs,
    list_runs,
)
from eval import run_folder
from eval.compare import compare_runs
from eval.metrics.registry import EXAMPLE_COLUMNS
from eval.run_folder import KEY_COLUMNS, UNEDITED

ROWS = 754  # JFLEG dev


def _frame(backend: str, gleu: np.ndarray, failed: np.ndarray, seed: int) -> pd.DataFrame:
    """One backend's metrics.csv rows: every registry column, failed rows scored as their
    source (no time to first token), as eval/scoring.py writes them."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "example_id": [f"jfleg-dev-{i:04d}" for i in range(ROWS)],
            "backend": backend,
            "type": "grammar",
            "ok": ~failed,
            "error_kind": np.where(failed, "truncated", None),
        }
    )
    for column in EXAMPLE_COLUMNS:
        frame[column] = rng.uniform(0.0, 1.0, ROWS)
    frame["gleu_sentence"] = gleu
    frame["total_ms"] = rng.uniform(800.0, 1600.0, ROWS)
    frame["ttft_ms"] = np.where(failed, np.nan, rng.uniform(100.0, 300.0, ROWS))
    return frame[[*KEY_COLUMNS, *EXAMPLE_COLUMNS]]


def _write_run(
    folder: Path,
    frames: dict[str, pd.DataFrame],
    *,
    mtime: float,
    dataset: str = "jfleg/dev.src",
    sha: str = "ab" * 32,
) -> Path:
    folder.mkdir(parents=True)
    tuned = folder.name.endswith("-tuned")
    run_folder.write_config(
        folder,
        {
            "dataset": dataset,
            "dataset_sha256": sha,
            "examples": ROWS,
            "backends_requested": list(frames),
            "model_ids": {name: "smollm2-135m-instruct" for name in frames},
        },
    )
    run_folder.write_metrics(folder, pd.concat(frames.values(), ignore_index=True))
    backends = {
        name: {
            "model_id": "smollm2-135m-instruct",
            "examples": ROWS,
            "errors": int((~frame["ok"]).sum()),
            "error_rate": float((~frame["ok"]).mean()),
            "metrics": {"gleu_sentence": float(frame["gleu_sentence"].mean())},
            "errant_by_type": {  # the tuned run makes more wrong tense edits, more right M:DET
                "R:VERB:TENSE": {"tp": 1, "fp": 5 if tuned else 1, "fn": 3},
                "M:DET": {"tp": 4 if tuned else 2, "fp": 0, "fn": 2},
            },
        }
        for name, frame in frames.items()
    }
    summary = {"run": folder.name, "failed_rows_scored_as": UNEDITED, "backends": backends}
    run_folder.write_summary(folder, summary)
    for name in (run_folder.SUMMARY, run_folder.CONFIG):
        os.utime(folder / name, (mtime, mtime))
    return folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An older and a newer fine-tuning pair, a run without its partner, and a tuned run
    still unscored: the stock base rambles (69% fail), the tuned run fixes and edits more."""
    rng = np.random.default_rng(0)
    base_gleu = rng.uniform(0.1, 0.5, ROWS)
    stock_failed = rng.random(ROWS) < 0.69
    root = tmp_path / "runs"
    for prefix, stamp in (("ft-20261101-jfleg-dev", 1_000.0), ("ft-20261201-jfleg-dev", 3_000.0)):
        stock = _frame("custom", base_gleu, stock_failed, seed=1)
        generic = _frame("baseline", base_gleu - 0.02, stock_failed, seed=2)
        tuned = _frame("custom", base_gleu + 0.08, np.zeros(ROWS, dtype=bool), seed=3)
        tuned["edit_rate_source"] = stock["edit_rate_source"] + 0.05  # it edits more
        _write_run(root / f"{prefix}-base", {"custom": stock, "baseline": generic}, mtime=stamp)
        _write_run(root / f"{prefix}-tuned", {"custom": tuned}, mtime=stamp + 10)
    lonely = _frame("custom", base_gleu, stock_failed, seed=4)
    _write_run(root / "ft-20261215-writing-eval-base", {"custom": lonely}, mtime=5_000.0)
    unscored = root / "ft-20261220-jfleg-dev-tuned"
    run_folder.write_config(unscored, {"dataset": "jfleg/dev.src"})
    os.utime(unscored / run_folder.CONFIG, (6_000.0, 6_000.0))
    (root / "notes").mkdir()
    return root


def test_pairs_are_found_newest_first_and_lone_runs_are_not_paired(root: Path) -> None:
    pairs = find_pairs(root)
    assert pairs == [
        RunPair(
            "ft-20261201-jfleg-dev",
            root / "ft-20261201-jfleg-dev-base",
            root / "ft-20261201-jfleg-dev-tuned",
        ),
        RunPair(
            "ft-20261101-jfleg-dev",
            root / "ft-20261101-jfleg-dev-base",
            root / "ft-20261101-jfleg-dev-tuned",
        ),
    ]
    assert find_pairs(root / "nowhere") == [] and find_pairs(root / "notes") == []


def test_the_run_list_names_unscored_runs_too_newest_first(root: Path) -> None:
    names = [folder.name for folder in list_runs(root)]
    assert names == [
        "ft-20261220-jfleg-dev-tuned",  # started, not scored: listed so it can be named
        "ft-20261215-writing-eval-base",
        "ft-20261201-jfleg-dev-tuned",
        "ft-20261201-jfleg-dev-base",
        "ft-20261101-jfleg-dev-tuned",
        "ft-20261101-jfleg-dev-base",
    ]


def test_the_tuned_run_is_judged_against_its_base_per_metric(root: Path) -> None:
    pair = find_pairs(root)[0]
    started = time.perf_counter()
    table = comparison_table(pair.base, pair.tuned)
    elapsed = time.perf_counter() - started

    assert list(table.columns) == list(COMPARISON_COLUMNS)
    assert set(table["backend"]) == {"custom"}  # the baseline is only in the base folder
    rows = table.set_index("metric")
    gleu = rows.loc["gleu_sentence"]
    assert gleu["title"] == "sentence GLEU"
    assert gleu["n"] == ROWS  # failed rows count, scored as their source
    assert gleu["delta"] == pytest.approx(0.08)
    assert gleu["ci_low"] == pytest.approx(0.08) and gleu["verdict"] == "better"
    errors = rows.loc["error_rate"]
    assert errors["mean_a"] == pytest.approx(0.69, abs=0.05) and errors["mean_b"] == 0.0
    assert errors["ci_high"] < 0 and errors["verdict"] == "better"  # fewer failures
    ttft = rows.loc["ttft_ms"]
    assert ttft["n"] == ROWS - round(errors["mean_a"] * ROWS)  # answered on both sides only
    assert table.iloc[0]["metric"] == "error_rate"
    # The same numbers as the CLI's comparison at the same number of rounds.
    expected = compare_runs(pair.base, pair.tuned, iterations=COMPARISON_ITERATIONS)
    assert [(d.metric, d.delta, d.ci_low, d.ci_high, d.verdict) for d in expected] == list(
        zip(
            table["metric"],
            table["delta"],
            table["ci_low"],
            table["ci_high"],
            table["verdict"],
            strict=True,
        )
    )
    assert elapsed < 3.0, f"{elapsed:.2f} s for {ROWS} rows: too slow for the tab"


def test_the_notes_count_verdicts_and_name_backends_left_out(root: Path) -> None:
    pair = find_pairs(root)[0]
    table = comparison_table(pair.base, pair.tuned)
    notes = comparison_notes(pair.base, pair.tuned, table)
    count = table["verdict"].value_counts()
    assert count["better"] > 1 and count["changed"] == 1  # the edit rate is neutral
    assert notes[0] == (
        f"B is better on {count['better']} metrics, worse on {count.get('worse', 0)}, "
        f"unchanged on {count.get('no change', 0)}, changed on {count['changed']} (neutral)."
    )
    assert "Only in ft-20261201-jfleg-dev-base, not compared: baseline." in notes
    assert not any("different datasets" in note for note in notes)


def test_runs_on_different_datasets_are_flagged(root: Path) -> None:
    other = _frame("custom", np.full(ROWS, 0.3), np.zeros(ROWS, dtype=bool), seed=5)
    folder = _write_run(
        root / "writing-eval", {"custom": other}, mtime=9.0, dataset="ours.jsonl", sha="cd" * 32
    )
    base = root / "ft-20261201-jfleg-dev-base"
    notes = comparison_notes(base, folder, comparison_table(base, folder, iterations=50))
    assert "Warning: the two runs used different datasets (jfleg/dev.src and ours.jsonl)." in notes


def _damage(folder: Path) -> None:
    (folder / run_folder.METRICS_PARQUET).unlink()
    (folder / run_folder.METRICS_CSV).write_text("example_id,backend\nx,custom\n")


def _scored_before_failures_counted(folder: Path) -> None:
    document = run_folder.read_summary(folder)
    del document["failed_rows_scored_as"]
    run_folder.write_summary(folder, document)


@pytest.mark.parametrize(
    ("pick", "message"),
    [
        (lambda r: (r / "ft-20261201-jfleg-dev-base",) * 2, "pick two different runs"),
        (
            lambda r: (r / "ft-20261201-jfleg-dev-base", r / "ft-20261220-jfleg-dev-tuned"),
            r"ft-20261220-jfleg-dev-tuned is not scored yet: run `python -m eval score .*`",
        ),
        (
            lambda r: (r / "gone", r / "ft-20261201-jfleg-dev-tuned"),
            "gone: run folder not found",
        ),
        (
            lambda r: (r / "notes", r / "ft-20261201-jfleg-dev-tuned"),
            "notes is not an eval run folder",
        ),
    ],
)
def test_unusable_choices_are_a_message_not_a_crash(root: Path, pick: Any, message: str) -> None:
    run_a, run_b = pick(root)
    with pytest.raises(DashboardError, match=message):
        comparison_table(run_a, run_b)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_damage, "missing column"),
        (_scored_before_failures_counted, "failed rows carry no scores"),
    ],
)
def test_a_damaged_or_stale_run_is_a_message_naming_it(
    root: Path, spoil: Any, message: str
) -> None:
    base = root / "ft-20261201-jfleg-dev-base"
    spoil(base)
    with pytest.raises(DashboardError, match=message) as caught:
        comparison_table(base, root / "ft-20261201-jfleg-dev-tuned")
    assert str(base) in str(caught.value)


def test_runs_with_no_backend_in_common_say_so(root: Path) -> None:
    mock = _frame("mock", np.full(ROWS, 0.2), np.zeros(ROWS, dtype=bool), seed=6)
    folder = _write_run(root / "mock-only", {"mock": mock}, mtime=1.0)
    with pytest.raises(DashboardError, match="no backend in common"):
        comparison_table(root / "ft-20261201-jfleg-dev-base", folder)


def test_a_metric_no_pair_has_is_left_out(root: Path) -> None:
    """A column all-NaN on one side (no grammar references, say) has no row, not a NaN row."""
    base, tuned = root / "ft-20261201-jfleg-dev-base", root / "ft-20261201-jfleg-dev-tuned"
    frame = run_folder.read_metrics(tuned)
    frame["errant_f05"] = math.nan
    run_folder.write_metrics(tuned, frame)
    table = comparison_table(base, tuned, iterations=50)
    assert "errant_f05" not in set(table["metric"])
    assert table[["delta", "ci_low", "ci_high"]].notna().all().all()


def test_the_dashboard_tab_shows_the_newest_pair_and_any_two_runs(root: Path) -> None:
    """Through the app's own endpoint: the default pair, then a pick that cannot be compared."""
    from gradio_client import Client

    from suggestions.backends import MockBackend
    from tests.app_support import app_config, running_app

    config = app_config(root.parent, ("custom", "mock"), eval_runs_dir=root)
    backends = {"custom": MockBackend(name="custom"), "mock": MockBackend()}
    pair = find_pairs(root)[0]
    with running_app(config, backends) as url:
        client = Client(url, verbose=False)
        run_a, run_b, note, table, types = client.predict(None, None, api_name="/base_vs_run")
        unscored = str(root / "ft-20261220-jfleg-dev-tuned")
        picked = client.predict(str(pair.base), unscored, api_name="/base_vs_run")
        client.close()

    assert (run_a["value"], run_b["value"]) == (str(pair.base), str(pair.tuned))
    assert [name for name, _ in run_a["choices"]] == [f.name for f in list_runs(root)]
    assert note.startswith(f"**A**: {pair.base.name}, **B**: {pair.tuned.name}. B is better on")
    assert "not compared: baseline" in note
    metrics = [row[table["headers"].index("metric")] for row in table["data"]]
    assert metrics[0] == "error_rate" and "gleu_sentence" in metrics
    assert (picked[0]["value"], picked[1]["value"]) == (str(pair.base), unscored)  # kept
    assert picked[2].startswith("Cannot compare: ft-20261220-jfleg-dev-tuned is not scored yet")
    assert picked[3]["headers"] == list(COMPARISON_COLUMNS) and picked[3]["data"] == []
    assert types["headers"] == list(ERROR_TYPE_COLUMNS)
    assert types["data"][0] == ["R:VERB:TENSE", 1, 1, 1, 5, 3, 3, 4]
    assert picked[4]["data"] == []
