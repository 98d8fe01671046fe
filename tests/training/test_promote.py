"""Promotion: the gate on a run's state and eval scores, `--force`, rollback and the history.

Runs here are written the way training writes them (manifest, merged folder, the eval harness's
`summary.json`, `metrics.csv` and `config.json`), with scores chosen to pass or fail the gate.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from modal_backend.serving.registry import Registry
from modal_backend.training.promote import main as promote
from modal_backend.training.vs_base import JFLEG_DEV, OWN_SET, ROLES, VS_BASE

EXAMPLES = 20


def make_run(
    weights_root: Path,
    run_id: str,
    *,
    f05: float = 0.6,
    error_rate: float = 0.0,
    status: str = "complete",
    checks_passed: bool = True,
    scored: bool = True,
    dataset_sha256: str = "eval-v1",
    limit: int | None = None,
    leak_checked: tuple[str, ...] = ("eval-v1",),
    weights: bool = True,
    jfleg_gain: float | None = 0.05,
    own_gain: float = 0.0,
) -> str:
    registry = Registry(weights_root)
    manifest = {
        "run_id": run_id,
        "version": run_id,
        "status": status,
        "base_model": "tiny",
        "checks": {"passed": checks_passed},
        "leakage": {
            "checked": True,
            "checked_eval_sets": [{"path": f"{sha}.jsonl", "sha256": sha} for sha in leak_checked],
        },
    }
    compared = {OWN_SET: own_gain, **({JFLEG_DEV: jfleg_gain} if jfleg_gain is not None else {})}
    manifest[VS_BASE] = {
        name: _comparison(weights_root / "compare" / f"{run_id}-{name}", name, gain)
        for name, gain in compared.items()
    }
    registry.write_manifest(run_id, manifest)
    merged = registry.run_dir(run_id) / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    if weights:
        (merged / "model.safetensors").write_bytes(b"weights")
    if scored:
        _eval_folder(registry.run_dir(run_id) / "eval", f05, error_rate, dataset_sha256, limit)
    return run_id


def _comparison(prefix: Path, name: str, gain: float) -> dict[str, object]:
    """Base and run scored on one comparison set (sentence GLEU per row, corpus GLEU in the
    summary), the run `gain` ahead of the base on every row, and the manifest's entry."""
    folders = {}
    for role, shift in (("base", 0.0), ("tuned", gain)):
        folder = prefix.parent / f"{prefix.name}-{role}"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"dataset_sha256": name, "limit": None}))
        scores = [0.3 + 0.02 * (index % 7) + shift for index in range(EXAMPLES)]
        with (folder / "metrics.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                ["example_id", "backend", "type", "ok", "gleu_sentence", "errant_f05",
                 "meaning_similarity"]
            )  # fmt: skip
            for index, score in enumerate(scores):
                writer.writerow([f"j-{index:03}", "custom", "grammar", True, score, score, 0.9])
        mean = sum(scores) / len(scores)
        backend = {"examples": EXAMPLES, "error_rate": 0.0, "metrics": {"gleu": mean}}
        (folder / "summary.json").write_text(json.dumps({"backends": {"custom": backend}}))
        folders[role] = str(folder)
    entry = {"dataset": f"{name}.jsonl", "dataset_sha256": name, "limit": None}
    return {**entry, "role": ROLES[name], **folders}


def _eval_folder(
    folder: Path, f05: float, error_rate: float, dataset_sha256: str, limit: int | None
) -> None:
    """What `eval.scoring.score_run` leaves: per-example metrics and the summary."""
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"dataset_sha256": dataset_sha256, "limit": limit})
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


def test_a_served_run_scored_on_another_eval_set_fails_the_gate_unless_overridden(
    weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A candidate must not skip the regression check by being scored differently."""
    served = make_run(weights, "20261126-100000-old", f05=0.8)
    assert promote([served, "--weights", str(weights)]) == 0
    other = make_run(
        weights, "20261126-110000-new", f05=0.5, dataset_sha256="eval-v2", leak_checked=("eval-v2",)
    )
    assert promote([other, "--weights", str(weights)]) == 1
    out = capsys.readouterr().out
    assert f"cannot compare with the served run {served}" in out and "not promoted" in out
    assert Registry(weights).current_id() == served

    assert promote([other, "--weights", str(weights), "--force"]) == 0
    entry = Registry(weights).history()[-1]
    assert entry["forced"] is True
    assert entry["gate"]["baseline_compared"] is False


def test_no_baseline_promotes_but_is_recorded_as_a_weakened_gate(weights: Path) -> None:
    served = make_run(weights, "20261126-100000-old", f05=0.8)
    assert promote([served, "--weights", str(weights)]) == 0
    other = make_run(
        weights, "20261126-110000-new", f05=0.5, dataset_sha256="eval-v2", leak_checked=("eval-v2",)
    )
    assert promote([other, "--weights", str(weights), "--no-baseline"]) == 0
    gate = Registry(weights).history()[-1]["gate"]
    assert gate["no_baseline"] is True and gate["baseline_compared"] is False
    assert gate["default_file"] is True
    assert any("--no-baseline" in reason for reason in gate["weakened"])


def test_a_partial_score_is_not_a_score(weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_id = make_run(weights, "20261126-120000-aaa", limit=10)
    assert promote([run_id, "--weights", str(weights)]) == 1
    assert "first 10 eval examples only (--limit)" in capsys.readouterr().out
    assert Registry(weights).current_id() is None


def test_a_score_on_an_eval_set_the_leakage_check_did_not_cover_is_refused(
    weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = make_run(weights, "20261126-120000-aaa", dataset_sha256="some-other-set")
    assert promote([run_id, "--weights", str(weights)]) == 1
    assert "leakage check did not cover" in capsys.readouterr().out
    skipped = make_run(weights, "20261126-130000-bbb")
    manifest = Registry(weights).run(skipped).manifest
    manifest["leakage"] = {"checked": False, "reason": "--no-leak-check"}
    Registry(weights).write_manifest(skipped, manifest)
    assert promote([skipped, "--weights", str(weights)]) == 1
    assert "leakage check was skipped" in capsys.readouterr().out
    assert Registry(weights).current_id() is None


def test_the_history_records_the_gate_that_was_applied(weights: Path, tmp_path: Path) -> None:
    served = make_run(weights, "20261126-100000-old")
    assert promote([served, "--weights", str(weights)]) == 0
    first = Registry(weights).history()[-1]["gate"]
    assert first["default_file"] is True and first["weakened"] == []
    assert first["baseline_compared"] is False  # nothing was served before it
    better = make_run(weights, "20261126-110000-new", f05=0.7)
    lenient = tmp_path / "lenient.toml"
    lenient.write_text('[[check]]\nbackend = "custom"\nmetric = "errant_f05"\nmin = 0.1\n')
    assert promote([better, "--weights", str(weights), "--gates", str(lenient)]) == 0
    entry = Registry(weights).history()[-1]
    assert entry["forced"] is False
    gate = entry["gate"]
    assert gate["file"] == str(lenient) and gate["default_file"] is False
    assert gate["baseline_compared"] is True and gate["baseline_run"] == served
    assert any("gates file" in reason for reason in gate["weakened"])


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


@pytest.mark.parametrize(
    ("state", "blocked"),
    [
        ({"status": "training", "scored": False}, "still training"),
        ({"checks_passed": False}, "post-training checks did not pass"),
        ({"weights": False}, "weights are incomplete"),
    ],
)
def test_force_never_overrides_integrity(
    weights: Path, capsys: pytest.CaptureFixture[str], state: dict[str, object], blocked: str
) -> None:
    run_id = make_run(weights, "20261126-120000-odd", f05=0.1, **state)  # type: ignore[arg-type]
    assert promote([run_id, "--weights", str(weights), "--force"]) == 1
    out = capsys.readouterr().out
    assert blocked in out and "--force does not override this" in out
    assert Registry(weights).current_id() is None


def test_failed_checks_need_their_own_loud_flag_which_is_recorded(weights: Path) -> None:
    run_id = make_run(weights, "20261126-120000-odd", checks_passed=False)
    assert promote([run_id, "--weights", str(weights), "--force"]) == 1
    assert promote([run_id, "--weights", str(weights), "--force-failed-checks"]) == 0
    (entry,) = Registry(weights).history()
    assert entry["forced"] is True and entry["gate"]["accepted_failed_checks"] is True


def test_force_overrides_only_the_score(weights: Path) -> None:
    """A checked, complete run that was never scored (or whose scoring failed) can be forced."""
    unscored = make_run(weights, "20261126-120000-aaa", scored=False)
    assert promote([unscored, "--weights", str(weights), "--force"]) == 0
    scoring_failed = make_run(weights, "20261126-130000-bbb", status="failed")
    assert promote([scoring_failed, "--weights", str(weights)]) == 1
    assert promote([scoring_failed, "--weights", str(weights), "--force"]) == 0
    assert Registry(weights).current_id() == scoring_failed


def test_re_promoting_the_served_run_logs_nothing(weights: Path) -> None:
    first = make_run(weights, "20261126-100000-one")
    second = make_run(weights, "20261126-110000-two")
    registry = Registry(weights)
    registry.promote(first)
    registry.promote(second)
    registry.promote(second)  # a retry, or a second click
    assert [entry["run_id"] for entry in registry.history()] == [first, second]
    assert registry.rollback().run_id == first  # not "back" to second


def test_the_history_is_written_before_the_pointer_moves(
    weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed history write must not leave a served run the history does not know about."""
    import builtins

    first = make_run(weights, "20261126-100000-one")
    second = make_run(weights, "20261126-110000-two")
    registry = Registry(weights)
    registry.promote(first)
    real_open = builtins.open

    def failing_open(file: object, *args: object, **kwargs: object) -> object:
        if str(file).endswith("promotions.jsonl"):
            raise OSError("volume full")
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", lambda self, *a, **k: failing_open(self, *a, **k))
    with pytest.raises(OSError, match="volume full"):
        registry.promote(second)
    monkeypatch.undo()
    assert registry.current_id() == first
    assert [entry["run_id"] for entry in registry.history()] == [first]


def test_an_interrupted_pointer_write_is_repaired_by_retrying(
    weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modal_backend.serving.registry as registry_module

    first = make_run(weights, "20261126-100000-one")
    second = make_run(weights, "20261126-110000-two")
    registry = Registry(weights)
    registry.promote(first)

    def no_pointer(path: Path, data: dict[str, object]) -> None:
        raise OSError("container preempted")

    with monkeypatch.context() as patch:
        patch.setattr(registry_module, "_write_json_atomic", no_pointer)
        with pytest.raises(OSError, match="preempted"):
            registry.promote(second)
    registry.promote(second)
    assert registry.current_id() == second
    assert [entry["run_id"] for entry in registry.history()] == [first, second]


def test_rollback_refuses_a_run_whose_weights_are_gone(weights: Path) -> None:
    import shutil

    from modal_backend.serving.registry import RegistryError

    first = make_run(weights, "20261126-100000-one")
    second = make_run(weights, "20261126-110000-two")
    registry = Registry(weights)
    registry.promote(first)
    registry.promote(second)
    shutil.rmtree(registry.run(first).merged_path)
    with pytest.raises(RegistryError, match="no longer has complete weights"):
        registry.rollback()
    assert registry.current_id() == second
    assert len(registry.history()) == 2


def test_merged_weights_count_only_when_every_file_is_there(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.write_manifest("r", {"status": "complete"})
    run = registry.run("r")
    run.merged_path.mkdir()
    (run.merged_path / "config.json").write_text("{}")
    assert not run.has_merged()  # an interrupted save: config first, weights later
    shards = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (run.merged_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": shards})
    )
    (run.merged_path / shards["a"]).write_bytes(b"x")
    assert not run.has_merged()
    (run.merged_path / shards["b"]).write_bytes(b"x")
    assert run.has_merged()
    with pytest.raises(Exception, match="may not set"):
        registry.promote("r", details={"forced": False})
    assert registry.promote("r", details={"gate": {"file": "g.toml"}}).run_id == "r"
    assert registry.history()[0]["gate"] == {"file": "g.toml"}


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


@pytest.mark.parametrize(
    ("gains", "failed"),
    [
        ({"jfleg_gain": -0.04}, f"vs stock base on {JFLEG_DEV}: gleu_sentence better"),
        ({"jfleg_gain": 0.0}, f"vs stock base on {JFLEG_DEV}: gleu_sentence better"),
        ({"own_gain": -0.05}, f"vs stock base on {OWN_SET}: errant_f05 no worse"),
    ],
)
def test_a_run_not_better_than_its_stock_base_is_refused(
    weights: Path, capsys: pytest.CaptureFixture[str], gains: dict[str, float], failed: str
) -> None:
    run_id = make_run(weights, "20261204-120000-worse", **gains)  # type: ignore[arg-type]
    assert promote([run_id, "--weights", str(weights)]) == 1
    out = capsys.readouterr().out
    failing = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert any(failed in line for line in failing), out
    passing = [line for line in out.splitlines() if line.startswith("PASS")]
    assert any("errant_f05 >= 0.4" in line for line in passing)  # the report says which held
    assert not (weights / "current.json").exists()


def test_a_run_never_compared_with_its_base_on_jfleg_is_refused_unless_weakened(
    weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = make_run(weights, "20261204-120000-nojfleg", jfleg_gain=None)
    assert promote([run_id, "--weights", str(weights)]) == 1
    assert "not compared with its stock base on JFLEG dev" in capsys.readouterr().out
    assert promote([run_id, "--weights", str(weights), "--no-base-check"]) == 0
    (entry,) = Registry(weights).history()
    assert "--no-base-check: not compared with its stock base" in entry["gate"]["weakened"]


def test_the_gate_reports_the_base_comparison_that_held(
    weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = make_run(weights, "20261204-120000-good")
    assert promote([run_id, "--weights", str(weights)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if f"on {JFLEG_DEV}" in line)
    assert line.startswith("PASS") and "corpus GLEU" in line and "95% CI" in line
    (entry,) = Registry(weights).history()
    assert entry["gate"]["vs_base_compared"] is True
