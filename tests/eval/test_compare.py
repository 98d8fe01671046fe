"""Run comparison and gates on small hand-built run folders (metrics.csv + summary.json)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from eval.cli import main as eval_main
from eval.compare import MetricDelta, compare_runs, error_type_counts, format_comparison
from eval.gates import EXAMPLE_GATES, GateConfigError, format_gates, load_gates, run_gates
from eval.metrics.registry import DIRECTIONS as METRIC_DIRECTIONS
from eval.run_folder import RunFolderError
from eval.stats import paired_bootstrap


def main_compare(argv: list[str]) -> int:
    """`python -m eval compare ...` (the one CLI holds the subcommand)."""
    return eval_main(["compare", *argv])


def main_gate(argv: list[str]) -> int:
    """`python -m eval gate ...`."""
    return eval_main(["gate", *argv])


N = 40


def rows(backend: str, ok: list[bool] | None = None, **metrics: Any) -> list[dict[str, Any]]:
    """One row per example `ex000`..; a failed example keeps its score cells (the scorer gives
    it the unedited source's scores) but has no time to first token or tokens/s, as the scorer
    writes them."""
    count = len(next(iter(metrics.values()))) if metrics else N
    flags = ok if ok is not None else [True] * count
    out = []
    for i in range(count):
        row: dict[str, Any] = {
            "example_id": f"ex{i:03d}",
            "backend": backend,
            "type": "grammar",
            "ok": flags[i],
        }
        for name, values in metrics.items():
            answered_only = name in ("ttft_ms", "tokens_per_s")
            row[name] = float(values[i]) if flags[i] or not answered_only else math.nan
        out.append(row)
    return out


def backend_summary(
    *,
    metrics: dict[str, float | None] | None = None,
    error_rate: float = 0.0,
    p95: float = 1500.0,
) -> dict[str, Any]:
    return {
        "model_id": "m",
        "examples": N,
        "errors": round(error_rate * N),
        "error_rate": error_rate,
        "metrics": metrics if metrics is not None else {"gleu": 0.5, "errant_f05": 0.45},
        "latency": {
            "ttft_ms": {"p50": 100.0, "p90": 150.0, "p95": 180.0, "p99": 250.0},
            "total_ms": {"p50": 900.0, "p90": 1300.0, "p95": p95, "p99": 2500.0},
        },
    }


def write_run(
    folder: Path, table: list[dict[str, Any]], summary: dict[str, Any] | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(table).to_csv(folder / "metrics.csv", index=False)
    backends = summary if summary is not None else {"custom": backend_summary()}
    document = {"backends": backends, "failed_rows_scored_as": "unedited source"}
    (folder / "summary.json").write_text(json.dumps(document), encoding="utf-8")
    return folder


def by_metric(deltas: list[MetricDelta], backend: str = "custom") -> dict[str, MetricDelta]:
    return {d.metric: d for d in deltas if d.backend == backend}


@pytest.fixture
def base_values() -> np.ndarray:
    return np.random.default_rng(1).uniform(0.3, 0.6, N)


# --- paired_bootstrap ----------------------------------------------------------------------


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 1, 200), rng.normal(0.1, 1, 200)
    first = paired_bootstrap(a, b, iterations=500, seed=3)
    assert paired_bootstrap(a, b, iterations=500, seed=3) == first
    assert paired_bootstrap(a, b, iterations=500, seed=4) != first
    assert first[0] == pytest.approx(float(np.mean(b - a)))
    assert first[1] < first[0] < first[2]


def test_bootstrap_drops_nan_pairs() -> None:
    a = np.array([1.0, np.nan, 3.0, 4.0, 5.0])
    b = np.array([2.0, 9.0, np.nan, 6.0, 7.0])
    assert paired_bootstrap(a, b, seed=1) == paired_bootstrap(
        np.array([1.0, 4.0, 5.0]), np.array([2.0, 6.0, 7.0]), seed=1
    )
    mean, low, high = paired_bootstrap(a, b)
    assert mean == pytest.approx(5 / 3)
    assert 1.0 <= low <= high <= 2.0


def test_bootstrap_interval_widens_with_confidence() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 100), rng.normal(0, 1, 100)
    _, low90, high90 = paired_bootstrap(a, b, confidence=0.90)
    _, low99, high99 = paired_bootstrap(a, b, confidence=0.99)
    assert low99 < low90 < high90 < high99


def test_bootstrap_large_input_is_blocked_but_complete() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 5000)
    mean, low, high = paired_bootstrap(a, a + 1.0, iterations=1000)
    assert mean == pytest.approx(1.0)
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        ([1.0, 2.0], [1.0], {}, "differ in length"),
        ([math.nan], [1.0], {}, "no complete pairs"),
        ([], [], {}, "no complete pairs"),
        ([1.0], [2.0], {"iterations": 0}, "iterations"),
        ([1.0], [2.0], {"confidence": 1.0}, "confidence"),
    ],
)
def test_bootstrap_rejects_bad_input(
    a: list[float], b: list[float], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(np.array(a), np.array(b), **kwargs)


# --- compare_runs --------------------------------------------------------------------------


def test_clear_improvement_is_better(tmp_path: Path, base_values: np.ndarray) -> None:
    noise = np.random.default_rng(2).normal(0, 0.02, N)
    run_a = write_run(tmp_path / "a", rows("custom", gleu_sentence=base_values))
    run_b = write_run(tmp_path / "b", rows("custom", gleu_sentence=base_values + 0.1 + noise))
    deltas = by_metric(compare_runs(run_a, run_b))
    gleu = deltas["gleu_sentence"]
    assert gleu.verdict == "better"
    assert gleu.n == N
    assert 0 < gleu.ci_low <= gleu.delta <= gleu.ci_high
    assert gleu.delta == pytest.approx(0.1 + noise.mean())
    assert gleu.mean_a == pytest.approx(base_values.mean())
    assert deltas["error_rate"].verdict == "no change"
    # The same change read as a regression: A against B.
    assert by_metric(compare_runs(run_b, run_a))["gleu_sentence"].verdict == "worse"


def test_identical_runs_show_no_change(tmp_path: Path, base_values: np.ndarray) -> None:
    table = rows(
        "custom",
        gleu_sentence=base_values,
        total_ms=base_values * 3000,
        edit_rate_source=base_values / 2,
    )
    run_a = write_run(tmp_path / "a", table)
    run_b = write_run(tmp_path / "b", table)
    deltas = compare_runs(run_a, run_b)
    assert {d.metric for d in deltas} == {
        "error_rate",
        "gleu_sentence",
        "total_ms",
        "edit_rate_source",
    }
    for delta in deltas:
        assert delta.verdict == "no change"
        assert delta.delta == 0.0 and delta.ci_low == 0.0 and delta.ci_high == 0.0
        assert delta.mean_a == delta.mean_b


def test_latency_increase_is_worse_and_neutral_metric_changed(
    tmp_path: Path, base_values: np.ndarray
) -> None:
    noise = np.random.default_rng(3).normal(0, 10, N)
    total = base_values * 2000
    run_a = write_run(
        tmp_path / "a",
        rows("custom", total_ms=total, tokens_per_s=total / 10, edit_rate_source=base_values),
    )
    run_b = write_run(
        tmp_path / "b",
        rows(
            "custom",
            total_ms=total + 150 + noise,
            tokens_per_s=total / 10 - 5,
            edit_rate_source=base_values + 0.05,
        ),
    )
    deltas = by_metric(compare_runs(run_a, run_b))
    assert deltas["total_ms"].verdict == "worse"
    assert deltas["total_ms"].ci_low > 0  # it went up, which is bad for latency
    assert deltas["tokens_per_s"].verdict == "worse"
    assert deltas["edit_rate_source"].verdict == "changed"


def test_failed_rows_are_paired_and_nan_rows_are_dropped(
    tmp_path: Path, base_values: np.ndarray
) -> None:
    ok_a = [True] * N
    ok_a[3] = False  # failed in A: scored as the unedited source, still paired for scores
    values_a = base_values.copy()
    values_a[3] = 0.05  # what the unedited source scored
    total = base_values * 1000
    table_b = rows("custom", gleu_sentence=base_values + 0.1, total_ms=total + 50)
    table_b[5]["gleu_sentence"] = math.nan  # ok, but this metric missing in B
    table_b.append(  # an example only B has: no pair
        {"example_id": "extra", "backend": "custom", "type": "style", "ok": True}
        | {"gleu_sentence": 100.0, "total_ms": 1.0}
    )
    run_a = write_run(
        tmp_path / "a", rows("custom", ok=ok_a, gleu_sentence=values_a, total_ms=total)
    )
    run_b = write_run(tmp_path / "b", table_b)
    deltas = by_metric(compare_runs(run_a, run_b))
    gleu = deltas["gleu_sentence"]
    kept_a, kept_b = np.delete(values_a, [5]), np.delete(base_values + 0.1, [5])
    assert gleu.n == N - 1  # the failed row is paired; only the missing value is not
    assert gleu.mean_a == pytest.approx(kept_a.mean())
    assert gleu.mean_b == pytest.approx(kept_b.mean())
    assert gleu.delta == pytest.approx((kept_b - kept_a).mean())
    latency = deltas["total_ms"]
    assert latency.n == N - 1  # a failure has no answer to time: answered in both only
    assert latency.delta == pytest.approx(50.0)
    errors = deltas["error_rate"]
    assert errors.n == N  # the examples both runs attempted
    assert errors.mean_a == pytest.approx(1 / N)
    assert errors.mean_b == 0.0
    assert errors.delta == pytest.approx(-1 / N)
    assert errors.verdict == "no change"  # one failure is not evidence


def test_a_backend_cannot_gain_by_failing_the_hard_examples(
    tmp_path: Path, base_values: np.ndarray
) -> None:
    """B answers the easy half as A does and fails the hard half, whose unedited source scores
    below A's answers there: over the whole dataset B is worse, not better."""
    hard = base_values < np.median(base_values)
    ok_b = [not flag for flag in hard]
    values_b = np.where(hard, base_values - 0.2, base_values)  # the unedited source, lower
    run_a = write_run(tmp_path / "a", rows("custom", gleu_sentence=base_values))
    run_b = write_run(tmp_path / "b", rows("custom", ok=ok_b, gleu_sentence=values_b))
    gleu = by_metric(compare_runs(run_a, run_b))["gleu_sentence"]
    assert gleu.n == N
    assert gleu.verdict == "worse"


def test_a_run_scored_before_failures_counted_is_refused(
    tmp_path: Path, base_values: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    """Failed rows with empty scores and no word in the summary: pairing would drop them."""
    ok = [i % 4 != 0 for i in range(N)]
    table = rows("custom", ok=ok, gleu_sentence=base_values)
    for row in table:
        row["gleu_sentence"] = row["gleu_sentence"] if row["ok"] else math.nan
    old = write_run(tmp_path / "old", table)
    document = json.loads((old / "summary.json").read_text())
    del document["failed_rows_scored_as"]
    (old / "summary.json").write_text(json.dumps(document))
    new = write_run(tmp_path / "new", rows("custom", gleu_sentence=base_values))
    with pytest.raises(RunFolderError, match=r"python -m eval score .*old"):
        compare_runs(old, new)
    assert main_compare([str(new), str(old)]) == 2
    assert "failed rows carry no scores" in capsys.readouterr().err
    # A run without failures needs no such word: every row was scored either way.
    (new / "summary.json").write_text(json.dumps({"backends": {"custom": backend_summary()}}))
    assert compare_runs(new, new)


def test_error_rate_increase_is_worse(tmp_path: Path, base_values: np.ndarray) -> None:
    ok_b = [i % 4 != 0 for i in range(N)]  # a quarter of B fails
    run_a = write_run(tmp_path / "a", rows("custom", gleu_sentence=base_values))
    run_b = write_run(tmp_path / "b", rows("custom", ok=ok_b, gleu_sentence=base_values))
    errors = by_metric(compare_runs(run_a, run_b))["error_rate"]
    assert errors.mean_b == pytest.approx(0.25)
    assert errors.verdict == "worse"


def test_missing_and_all_nan_columns_and_backends(tmp_path: Path, base_values: np.ndarray) -> None:
    table_a = rows("custom", gleu_sentence=base_values, meaning_similarity=base_values)
    table_a += rows("openai", gleu_sentence=base_values)
    table_b = rows("custom", gleu_sentence=base_values, ttft_ms=base_values)
    table_b += rows("baseline-only", gleu_sentence=base_values)
    for row in table_b:
        row["proselint_delta"] = math.nan  # a column that is empty everywhere
    for row in table_a:
        row["proselint_delta"] = math.nan
    run_a = write_run(tmp_path / "a", table_a)
    run_b = write_run(tmp_path / "b", table_b)
    deltas = compare_runs(run_a, run_b)
    # Only the shared backend, only the column both have with data.
    assert [(d.backend, d.metric) for d in deltas] == [
        ("custom", "error_rate"),
        ("custom", "gleu_sentence"),
    ]


def test_ids_stay_text_and_parquet_is_read(tmp_path: Path) -> None:
    ids = ["007", "7", "NA", "null"]
    frame = pd.DataFrame(
        {
            "example_id": ids,
            "backend": "custom",
            "type": "clarity",
            "ok": True,
            "meaning_similarity": [0.1, 0.2, 0.3, 0.4],
        }
    )
    run_a = write_run(tmp_path / "a", frame.to_dict("records"))
    frame["meaning_similarity"] += [0.5, 0.0, 0.0, 0.0]
    run_b = tmp_path / "b"
    run_b.mkdir()
    frame.to_parquet(run_b / "metrics.parquet")
    similarity = by_metric(compare_runs(run_a, run_b))["meaning_similarity"]
    assert similarity.n == 4  # "007" and "7" are different examples; "NA" is an id, not NaN
    assert similarity.delta == pytest.approx(0.125)


def test_unusable_run_folders_raise(tmp_path: Path, base_values: np.ndarray) -> None:
    good = write_run(tmp_path / "good", rows("custom", gleu_sentence=base_values))
    with pytest.raises(RunFolderError, match="run folder not found"):
        compare_runs(good, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match=r"no metrics\.csv"):
        compare_runs(good, tmp_path / "empty")
    duplicated = rows("custom", gleu_sentence=base_values)
    write_run(tmp_path / "dup", [*duplicated, duplicated[0]])
    with pytest.raises(RunFolderError, match="more than one row for example 'ex000'"):
        compare_runs(good, tmp_path / "dup")
    no_ok = [{k: v for k, v in row.items() if k != "ok"} for row in duplicated]
    write_run(tmp_path / "nook", no_ok)
    with pytest.raises(RunFolderError, match="missing column"):
        compare_runs(good, tmp_path / "nook")


def test_format_comparison_table_and_verdict_line() -> None:
    deltas = [
        MetricDelta("custom", "gleu_sentence", 40, 0.45, 0.55, 0.1, 0.08, 0.12, "better"),
        MetricDelta("custom", "total_ms", 40, 900.0, 1100.0, 200.0, 150.0, 250.0, "worse"),
        MetricDelta("custom", "errant_f05", 38, 0.4, 0.4, 0.0, -0.01, 0.01, "no change"),
        MetricDelta("custom", "edit_rate_source", 40, 0.2, 0.3, 0.1, 0.05, 0.15, "changed"),
    ]
    text = format_comparison(deltas)
    lines = text.splitlines()
    assert lines[0].split() == ["backend", "metric", "n", "A", "B", "delta", "95%", "CI", "verdict"]
    assert set(lines[1]) <= {"-", " "}
    assert "[+150.0, +250.0]" in text and "+0.1000" in text
    # Columns line up: each verdict starts where the header's does.
    column = lines[0].index("verdict")
    for line, delta in zip(lines[2:6], deltas, strict=True):
        assert line[column:] == delta.verdict
    assert lines[-1] == (
        "verdict: B is better on 1 metric, worse on 1, unchanged on 1, changed on 1 (neutral)"
    )
    assert format_comparison([]).splitlines()[-1] == (
        "verdict: B is better on 0 metrics, worse on 0, unchanged on 0"
    )


def test_main_compare_prints_table(
    tmp_path: Path, base_values: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    run_a = write_run(tmp_path / "a", rows("custom", gleu_sentence=base_values))
    run_b = write_run(tmp_path / "b", rows("custom", gleu_sentence=base_values + 0.2))
    assert main_compare([str(run_a), str(run_b), "--iterations", "200", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "gleu_sentence" in out and "better" in out
    assert out.rstrip().endswith("verdict: B is better on 1 metric, worse on 0, unchanged on 1")
    assert main_compare([str(run_a), str(tmp_path / "nope")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    assert main_compare([str(run_a)]) == 2  # usage error
    assert main_compare([str(run_a), str(run_b), "--iterations", "0"]) == 2


def test_error_types_say_which_edits_a_run_makes_wrongly(
    tmp_path: Path, base_values: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    def summary(tense_fp: int, det_tp: int) -> dict[str, Any]:
        entry = backend_summary()
        entry["errant_by_type"] = {
            "R:VERB:TENSE": {"tp": 3, "fp": tense_fp, "fn": 9},
            "M:DET": {"tp": det_tp, "fp": 1, "fn": 10 - det_tp},
        }
        return {"custom": entry, "baseline": backend_summary()}

    table = rows("custom", gleu_sentence=base_values)
    run_a = write_run(tmp_path / "stock", table, summary(tense_fp=2, det_tp=4))
    run_b = write_run(tmp_path / "tuned", table, summary(tense_fp=14, det_tp=7))
    tense, det = error_type_counts(run_a, run_b, "custom")
    assert (tense.kind, tense.a, tense.b, tense.fp_change) == (
        "R:VERB:TENSE",
        (3, 2, 9),
        (3, 14, 9),
        12,
    )
    assert (det.kind, det.a[0], det.b[0]) == ("M:DET", 4, 7)
    assert error_type_counts(run_a, run_b, "baseline") == []  # no grammar tables
    assert main_compare([str(run_a), str(run_b), "--iterations", "50"]) == 0
    out = capsys.readouterr().out
    section = out.split("ERRANT error types, custom", 1)[1].splitlines()
    assert section[3].split()[:3] == ["R:VERB:TENSE", "3", "3"] and section[3].endswith("+12")
    assert "ERRANT error types, baseline" not in out


def test_metric_directions_cover_the_runner_columns() -> None:
    assert METRIC_DIRECTIONS["gleu_sentence"] == 1
    assert METRIC_DIRECTIONS["total_ms"] == -1
    assert METRIC_DIRECTIONS["tokens_per_s"] == 1
    assert METRIC_DIRECTIONS["edit_rate_source"] == 0
    assert set(METRIC_DIRECTIONS.values()) <= {-1, 0, 1}


# --- gates ---------------------------------------------------------------------------------


def write_toml(tmp_path: Path, text: str, name: str = "gates.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_gate_passes_with_exit_0(
    tmp_path: Path, base_values: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(tmp_path / "run", rows("custom", gleu_sentence=base_values))
    config = write_toml(tmp_path, EXAMPLE_GATES)
    assert main_gate([str(run), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert out.count("PASS") == 3
    assert out.rstrip().endswith("gate: passed, all 3 checks")


def test_gate_fails_with_exit_1_and_checks_every_backend(
    tmp_path: Path, base_values: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = {
        "custom": backend_summary(p95=2500.0, metrics={"gleu": 0.5, "errant_f05": None}),
        "openai": backend_summary(p95=1200.0),
    }
    run = write_run(tmp_path / "run", rows("custom", gleu_sentence=base_values), summary)
    config = write_toml(
        tmp_path,
        """
[[check]]
metric = "latency.total_ms.p95"
max = 2000
[[check]]
backend = "custom"
metric = "errant_f05"
min = 0.4
[[check]]
metric = "gleu"
min = 0.4
max = 0.9
[[check]]
backend = "missing-backend"
metric = "gleu"
min = 0.1
[[check]]
backend = "openai"
metric = "latency.total_ms.p999"
max = 5000
""",
    )
    results = run_gates(run, load_gates(config))
    outcome = {(r.backend, r.name): r for r in results}
    assert not outcome[("custom", "latency.total_ms.p95 <= 2000")].passed
    assert outcome[("custom", "latency.total_ms.p95 <= 2000")].observed == 2500.0
    assert outcome[("openai", "latency.total_ms.p95 <= 2000")].passed
    null = outcome[("custom", "errant_f05 >= 0.4")]
    assert not null.passed and null.observed is None and "null" in null.message
    assert all(outcome[(b, n)].passed for b in ("custom", "openai") for n in ("gleu >= 0.4",))
    assert outcome[("custom", "gleu <= 0.9")].passed
    assert "not in the run's summary" in outcome[("missing-backend", "gleu >= 0.1")].message
    missing = outcome[("openai", "latency.total_ms.p999 <= 5000")]
    assert not missing.passed and "missing from the summary" in missing.message

    assert main_gate([str(run), "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert out.rstrip().endswith("gate: FAILED, 4 of 9 checks failed")
    assert "above max 2000" in out


def test_gate_missing_metric_fails_without_crash(tmp_path: Path, base_values: np.ndarray) -> None:
    run = write_run(tmp_path / "run", rows("custom", gleu_sentence=base_values))
    config = write_toml(tmp_path, '[[check]]\nmetric = "no_such_metric"\nmin = 0\n')
    [result] = run_gates(run, load_gates(config))
    assert not result.passed
    assert (
        result.message == "no_such_metric is missing from the summary (no 'metrics.no_such_metric')"
    )
    assert "FAIL" in format_gates([result])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[check]\nmetric = 'gleu'", "invalid TOML"),
        ("[[check]]\nmetric = 'gleu'\nminimum = 0.4\n", "unknown key(s) 'minimum'"),
        ("[[check]]\nmetric = 'gleu'\n", "check #1 (gleu): needs a bound"),
        ("[[check]]\nmetric = 'gleu'\nmin = '0.4'\n", "min must be a number, got '0.4'"),
        ("[[check]]\nmetric = 'gleu'\nmax = true\n", "max must be a number"),
        ("[[check]]\nmetric = 'gleu'\nmin = 0.9\nmax = 0.1\n", "min 0.9 is above max 0.1"),
        ("[[check]]\nmin = 0.9\n", "needs metric"),
        ("threshold = 1\n", "unknown key(s) 'threshold'"),
        ("", "nothing to gate"),
        ("[baseline]\nrun = 'nowhere'\nmax_drop = { gleu_sentence = 0.1 }\n", "not found"),
    ],
)
def test_bad_gate_config_exits_2(
    tmp_path: Path,
    base_values: np.ndarray,
    capsys: pytest.CaptureFixture[str],
    text: str,
    message: str,
) -> None:
    run = write_run(tmp_path / "run", rows("custom", gleu_sentence=base_values))
    config = write_toml(tmp_path, text)
    with pytest.raises(GateConfigError, match=r"gates\.toml"):
        load_gates(config)
    assert main_gate([str(run), "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("gate: ") and message in captured.err


def test_baseline_config_errors(tmp_path: Path, base_values: np.ndarray) -> None:
    write_run(tmp_path / "old", rows("custom", gleu_sentence=base_values))
    for text, message in [
        ("[baseline]\nrun = 'old'\nmax_drop = { edit_rate_source = 0.1 }\n", "good direction"),
        ("[baseline]\nrun = 'old'\nmax_drop = { errant_f05 = -1 }\n", "non-negative"),
        ("[baseline]\nrun = 'old'\n", "names no metric"),
        ("[baseline]\nrun = 'old'\nmax_drop = { errant_f05 = 0.1 }\nextra = 1\n", "'extra'"),
    ]:
        with pytest.raises(GateConfigError, match=message):
            load_gates(write_toml(tmp_path, text))


def test_gate_usage_and_run_errors_exit_2(
    tmp_path: Path, base_values: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_toml(tmp_path, EXAMPLE_GATES)
    assert main_gate([str(tmp_path / "missing"), "--config", str(config)]) == 2
    assert "run folder not found" in capsys.readouterr().err
    bare = tmp_path / "bare"
    bare.mkdir()
    assert main_gate([str(bare), "--config", str(config)]) == 2
    assert "no summary.json" in capsys.readouterr().err
    assert main_gate([str(bare), "--config", str(tmp_path / "absent.toml")]) == 2
    assert "cannot read gates file" in capsys.readouterr().err
    assert main_gate([str(bare)]) == 2  # --config is required
    assert "--config" in capsys.readouterr().err


def test_baseline_regression_detected(
    tmp_path: Path, base_values: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    noise = np.random.default_rng(4).normal(0, 0.01, N)
    total = base_values * 2000
    write_run(
        tmp_path / "runs" / "previous",
        rows("custom", errant_f05=base_values, meaning_similarity=base_values, total_ms=total),
    )
    run = write_run(
        tmp_path / "runs" / "current",
        rows(
            "custom",
            errant_f05=base_values - 0.1 + noise,  # a real drop, well past the allowance
            meaning_similarity=base_values - 0.005 + noise,  # inside the allowance
            total_ms=total + 20 + noise * 100,  # slower, but within 50 ms
        ),
    )
    config = write_toml(
        tmp_path,
        """
[baseline]
run = "runs/previous"
max_drop = { errant_f05 = 0.02, meaning_similarity = 0.01, total_ms = 50 }
iterations = 500
""",
    )
    loaded = load_gates(config)
    assert loaded.baseline is not None and loaded.baseline.run == tmp_path / "runs" / "previous"
    results = {r.name: r for r in run_gates(run, loaded)}
    f05 = results["baseline errant_f05 drop <= 0.02"]
    assert not f05.passed and f05.bound == -0.02
    assert f05.observed == pytest.approx(-0.1 + noise.mean())
    assert results["baseline meaning_similarity drop <= 0.01"].passed
    latency = results["baseline total_ms drop <= 50"]
    assert latency.passed and latency.observed is not None and latency.observed < 0
    assert main_gate([str(run), "--config", str(config)]) == 1
    assert "beyond the allowed drop 0.02" in capsys.readouterr().out

    # A baseline without the metric: a failed check, not a crash.
    write_run(tmp_path / "runs" / "thin", rows("custom", gleu_sentence=base_values))
    thin = write_toml(tmp_path, '[baseline]\nrun = "runs/thin"\nmax_drop = { errant_f05 = 0.02 }\n')
    [result] = run_gates(run, load_gates(thin))
    assert not result.passed and "no complete pairs" in result.message


def test_example_gates_is_the_service_target(tmp_path: Path) -> None:
    config = load_gates(write_toml(tmp_path, EXAMPLE_GATES))
    targets = {(c.backend, c.metric): (c.min_value, c.max_value) for c in config.checks}
    assert targets[("custom", "latency.total_ms.p95")] == (None, 2000.0)
    assert targets[("custom", "error_rate")] == (None, 0.02)
    assert targets[("custom", "errant_f05")][0] is not None
    assert config.baseline is None


def test_gate_on_a_summary_without_backends_fails(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", rows("custom", gleu_sentence=[0.5]), summary={})
    config = write_toml(tmp_path, '[[check]]\nmetric = "gleu"\nmin = 0.1\nmax = 0.9\n')
    results = run_gates(run, load_gates(config))
    assert [(r.backend, r.passed) for r in results] == [(None, False), (None, False)]
    assert results[0].message == "the run's summary lists no backend"
    assert main_gate([str(run), "--config", str(config)]) == 1
