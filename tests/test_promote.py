"""Promotion: the gate on a run's state and eval scores, `--force`, rollback and the history.

Runs here are written the way training writes them (manifest, merged folder, the eval harness's
`summary.json`, `metrics.csv` and `config.json`), with scores chosen to pass or fail the gate.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from modal_backend.promote import main as promote
from modal_backend.registry import Registry

EXAMPLES = 20


def make_run(
    weights: Path,
    run_id: str,
    *,
    f05: float = 0.6,
    error_rate: float = 0.0,
    status: str = "complete",
    checks_passed: bool = True,
    scored: bool = True,
    dataset_sha256: str = "eval-v1",
) -> str:
    registry = Registry(weights)
    manifest = {
        "run_id": run_id,
        "version": run_id,
        "status": status,
        "base_model": "tiny",
        "checks": {"passed": checks_passed},
    }
    registry.write_manifest(run_id, manifest)
    merged = registry.run_dir(run_id) / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    if scored:
        _eval_folder(registry.run_dir(run_id) / "eval", f05, error_rate, dataset_sha256)
    return run_id


def _eval_folder(folder: Path, f05: float, error_rate: float, dataset_sha256: str) -> None:
    """What `eval.scoring.score_run` leaves: per-example metrics and the summary."""
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"dataset_sha256": dataset_sha256, "limit": None})
    )
    with (folder / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["example_id", "backend", "type", "ok", "errant_f05", "meaning_similarity"])
        for index in range(EXAMPLES):
            writer.writerow([f"g-{index:03}", "custom", "grammar", True, f05, 0.95])
    summary = {
        "backends": {
            "custom": {
                "model_id": "run",
                "examples": EXAMPLES,
                "errors": round(error_rate * EXAMPLES),
                "error_rate": error_rate,
                "metrics": {"errant_f05": f05, "meaning_similarity": 0.95},
                "latency": {"total_ms": {"p95": 900.0}},
            }
        }
    }
    (folder / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    return tmp_path / "weights"


def test_a_run_that_passes_the_gate_is_promoted(
    weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = make_run(weights, "20261126-120000-aaa")
    assert promote([run_id, "--weights", str(weights)]) == 0
    out = capsys.readouterr().out
    assert "promotion gate: passed" in out and f"promoted {run_id}" in out
    registry = Registry(weights)
    assert registry.current_id() == run_id
    (entry,) = registry.history()
    assert entry["forced"] is False and entry["reason"] == "promotion gate passed"


@pytest.mark.parametrize(
    ("scores", "failed_check"),
    [({"f05": 0.2}, "errant_f05"), ({"error_rate": 0.1}, "error_rate")],
)
def test_a_run_below_the_gate_is_not_promoted(
    weights: Path,
    capsys: pytest.CaptureFixture[str],
    scores: dict[str, float],
    failed_check: str,
) -> None:
    run_id = make_run(weights, "20261126-120000-bad", **scores)  # type: ignore[arg-type]
    assert promote([run_id, "--weights", str(weights)]) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and failed_check in failed[0]
    assert "not promoted" in out
    assert not (weights / "current.json").exists()


def test_force_promotes_a_failing_run_and_the_history_says_so(weights: Path) -> None:
    run_id = make_run(weights, "20261126-120000-bad", f05=0.1)
    assert promote([run_id, "--weights", str(weights), "--force", "--reason", "hotfix"]) == 0
    registry = Registry(weights)
    assert registry.current_id() == run_id
    (entry,) = registry.history()
    assert entry["forced"] is True and entry["reason"] == "hotfix"


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ({"status": "failed"}, "its status is 'failed'"),
        ({"checks_passed": False}, "post-training checks did not pass"),
        ({"scored": False}, "it has not been scored"),
    ],
)
def test_an_unfinished_unchecked_or_unscored_run_is_refused(
    weights: Path, capsys: pytest.CaptureFixture[str], state: dict[str, object], problem: str
) -> None:
    run_id = make_run(weights, "20261126-120000-odd", **state)  # type: ignore[arg-type]
    assert promote([run_id, "--weights", str(weights)]) == 1
    assert problem in capsys.readouterr().out
    assert Registry(weights).current_id() is None


def test_a_regression_against_the_served_run_is_refused(
    weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = make_run(weights, "20261126-100000-old", f05=0.8)
    assert promote([served, "--weights", str(weights)]) == 0
    worse = make_run(weights, "20261126-110000-new", f05=0.5)  # above the floor, below the last
    assert promote([worse, "--weights", str(weights)]) == 1
    out = capsys.readouterr().out
    assert f"compared with the served run {served}" in out
    assert "baseline errant_f05 drop" in out
    assert promote([worse, "--weights", str(weights), "--no-baseline"]) == 0


def test_runs_scored_on_another_eval_set_are_not_compared(
    weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = make_run(weights, "20261126-100000-old", f05=0.8)
    assert promote([served, "--weights", str(weights)]) == 0
    other = make_run(weights, "20261126-110000-new", f05=0.5, dataset_sha256="eval-v2")
    assert promote([other, "--weights", str(weights)]) == 0
    assert "scored on another eval set" in capsys.readouterr().out


def test_rollback_serves_the_previous_run_and_is_logged(
    weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = make_run(weights, "20261126-100000-one")
    second = make_run(weights, "20261126-110000-two")
    assert promote([first, "--weights", str(weights)]) == 0
    assert promote([second, "--weights", str(weights), "--no-baseline"]) == 0
    assert promote(["rollback", "--weights", str(weights), "--reason", "bad reviews"]) == 0
    registry = Registry(weights)
    assert registry.current_id() == first
    assert [entry["action"] for entry in registry.history()] == ["promote", "promote", "rollback"]
    capsys.readouterr()
    assert promote(["history", "--weights", str(weights)]) == 0
    history = capsys.readouterr().out
    assert "rollback" in history and "(bad reviews)" in history
    assert f"current: {first}" in history
    assert promote(["rollback", "--weights", str(weights)]) == 2  # nothing older to go back to
    assert "nothing to roll back to" in capsys.readouterr().err


def test_runs_lists_every_run_and_marks_the_current_one(
    weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = make_run(weights, "20261126-100000-one")
    make_run(weights, "20261126-110000-two", status="failed", scored=False)
    assert promote([served, "--weights", str(weights)]) == 0
    capsys.readouterr()
    assert promote(["runs", "--weights", str(weights)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"* {served}  complete") and "checks ok" in lines[0]
    assert lines[1].startswith("  20261126-110000-two  failed")


def test_bad_input_exits_2(
    weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert promote(["no-such-run", "--weights", str(weights)]) == 2
    assert "has no" in capsys.readouterr().err
    run_id = make_run(weights, "20261126-120000-aaa")
    gates = tmp_path / "gates.toml"
    gates.write_text('[[check]]\nmetric = "errant_f05"\n')  # no bound
    assert promote([run_id, "--weights", str(weights), "--gates", str(gates)]) == 2
    assert "needs a bound" in capsys.readouterr().err


def test_a_custom_gates_file_decides(weights: Path, tmp_path: Path) -> None:
    run_id = make_run(weights, "20261126-120000-aaa", f05=0.3)
    lenient = tmp_path / "lenient.toml"
    lenient.write_text('[[check]]\nbackend = "custom"\nmetric = "errant_f05"\nmin = 0.25\n')
    assert promote([run_id, "--weights", str(weights), "--gates", str(lenient)]) == 0
