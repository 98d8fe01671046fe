"""May a run be promoted? Its integrity, then what its eval scores are worth, then the eval
harness's gate on its eval folder.

Three kinds of finding, because `--force` may override only some of them:

- blockers (integrity): the run is still `training`, its post-training checks failed or never
  ran, or its weights are incomplete. Serving such a run would serve weights nobody verified,
  or no weights at all, so `--force` does not override them; a failed check can be overridden
  only with the separate `--force-failed-checks`.
- problems (what the score is worth): the run was not scored, was scored on only part of the
  eval set (`--limit`) or on an eval set its leakage check did not cover, its scoring failed,
  or the served run cannot be compared with it. Its numbers then say nothing reliable, so the
  gate fails, but `--force` (recorded) may override it.
- results: the gates file's `[[check]]`s (`eval.gates.run_gates`, the logic behind
  `python -m eval gate`), against the served run, the harness's `[baseline]` check, so a
  promotion cannot quietly regress, and against the run's own stock base (`vs_base`): better on
  JFLEG dev, no worse on our eval set, by paired bootstrap. A run that was not compared with its
  base is a problem; `--no-base-check` skips the comparison, recorded as a weakened gate.

The default gates file is `modal_backend/promotion_gates.toml`: the quality and reliability
bounds of `eval/gates.toml` without its latency bound, since a run is scored on the training
machine, not on the deployed service (`python -m eval latency` checks that one). Another gates
file, or `--no-baseline`, weakens the gate; the verdict says so and the history records it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from eval import run_folder
from eval.gates import BaselineConfig, GateResult, format_gates, load_gates, run_gates
from modal_backend.serving.registry import Registry, Run

from . import vs_base
from .evaluation import EVAL_DIR
from .manifest import STATUS_COMPLETE, STATUS_FAILED, STATUS_TRAINING

DEFAULT_GATES = Path(__file__).resolve().parents[1] / "promotion_gates.toml"
DEFAULT_MAX_DROP: dict[str, float] = {"errant_f05": 0.02, "meaning_similarity": 0.01}
"""Largest allowed drop against the served run, per per-example metric (95% interval)."""


@dataclass(frozen=True)
class GateVerdict:
    run_id: str
    blockers: list[str] = field(default_factory=list)
    """Integrity failures: no flag but `--force-failed-checks` (for failed checks) overrides."""
    problems: list[str] = field(default_factory=list)
    """Why the scores cannot be trusted or compared; `--force` overrides them."""
    results: list[GateResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    """What the promotions history keeps about this gate (file, baseline, weakenings)."""

    @property
    def passed(self) -> bool:
        return (
            not self.blockers
            and not self.problems
            and bool(self.results)
            and all(r.passed for r in self.results)
        )

    @property
    def forcible(self) -> bool:
        """Whether `--force` may promote the run anyway."""
        return not self.blockers

    def report(self) -> str:
        lines = [f"run {self.run_id}"]
        lines += [f"  blocked: {blocker}" for blocker in self.blockers]
        lines += [f"  problem: {problem}" for problem in self.problems]
        lines += [f"  note: {note}" for note in self.notes]
        if self.results:
            lines.append(format_gates(self.results))
        lines.append(f"promotion gate: {'passed' if self.passed else 'FAILED'}")
        return "\n".join(lines)


def judge(
    registry: Registry,
    run: Run,
    *,
    gates: Path = DEFAULT_GATES,
    against_current: bool = True,
    against_base: bool = True,
    accept_failed_checks: bool = False,
) -> GateVerdict:
    """The gate's verdict on `run`. Raises eval.gates.GateConfigError for a bad gates file.

    `accept_failed_checks` turns failed (or missing) post-training checks from a blocker into a
    problem, so that `--force-failed-checks` can promote such a run on purpose.
    """
    config = load_gates(gates)
    record = _gate_record(gates, against_current, against_base)
    notes = [f"weakened gate: {reason}" for reason in record["weakened"]]
    blockers, problems = _integrity(run)
    checks_failed = "its post-training checks did not pass (see the manifest's 'checks')"
    if checks_failed in blockers and accept_failed_checks:
        blockers.remove(checks_failed)
        problems.append(checks_failed + "; accepted with --force-failed-checks")
        record["accepted_failed_checks"] = True
    eval_dir = run.path / EVAL_DIR
    if not run_folder.has_summary(eval_dir):
        problems.append(
            "it has not been scored: python -m modal_backend.training evaluate "
            f"{run.run_id} --weights {registry.root}"
        )
        return _verdict(run, blockers, problems, [], notes, record)
    problems += _score_problems(run, eval_dir)
    if against_current and config.baseline is None:
        baseline, note, problem = _current_baseline(registry, run)
        if baseline is not None:
            config = replace(config, baseline=baseline)
            record["baseline_compared"] = True
            record["baseline_run"] = registry.current_id()
        if note:
            notes.append(note)
        if problem:
            problems.append(problem)
    elif config.baseline is not None:
        notes.append(f"the gates file's own [baseline] ({config.baseline.run}) was used")
    results = run_gates(eval_dir, config)
    if against_base:
        base_results, base_problems = vs_base.judge(run.manifest)
        results += base_results
        problems += base_problems
        record["vs_base_compared"] = bool(base_results)
    return _verdict(run, blockers, problems, results, notes, record)


def _verdict(
    run: Run,
    blockers: list[str],
    problems: list[str],
    results: list[GateResult],
    notes: list[str],
    record: dict[str, Any],
) -> GateVerdict:
    verdict = GateVerdict(run.run_id, blockers, problems, results, notes, record)
    record["passed"] = verdict.passed
    return verdict


def _gate_record(gates: Path, against_current: bool, against_base: bool) -> dict[str, Any]:
    """Which gate was applied, for the history. A gates file counts as the default one when its
    bytes are the default file's, wherever it lies."""
    content = gates.read_bytes()
    default = content == DEFAULT_GATES.read_bytes()
    weakened = []
    if not default:
        weakened.append(f"gates file {gates} instead of {DEFAULT_GATES.name}")
    if not against_current:
        weakened.append("--no-baseline: not compared with the served run")
    if not against_base:
        weakened.append("--no-base-check: not compared with its stock base")
    return {
        "file": str(gates),
        "file_sha256": hashlib.sha256(content).hexdigest(),
        "default_file": default,
        "no_baseline": not against_current,
        "no_base_check": not against_base,
        "vs_base_compared": False,
        "baseline_compared": False,
        "baseline_run": None,
        "weakened": weakened,
    }


def _integrity(run: Run) -> tuple[list[str], list[str]]:
    """(blockers, problems) from the run's own state."""
    blockers: list[str] = []
    problems: list[str] = []
    manifest = run.manifest
    status = manifest.get("status")
    checks = manifest.get("checks")
    checks_passed = isinstance(checks, dict) and checks.get("passed") is True
    if status == STATUS_TRAINING:
        blockers.append(
            f"its status is {status!r}: it is still training, or died mid-run (resume it with "
            "--run-id)"
        )
    elif status == STATUS_FAILED and checks_passed:
        # The checks passed, so what failed was the scoring; rescoring can complete the run.
        problems.append(
            f"its status is {status!r} ({manifest.get('error', 'no error recorded')}): rescore "
            f"it with python -m modal_backend.training evaluate {run.run_id}"
        )
    elif status not in (STATUS_COMPLETE, STATUS_FAILED):
        blockers.append(f"its status is {status!r}, not {STATUS_COMPLETE!r}")
    elif status == STATUS_FAILED:
        problems.append(f"its status is {status!r}, not {STATUS_COMPLETE!r}")
    if not checks_passed:
        blockers.append("its post-training checks did not pass (see the manifest's 'checks')")
    merged_started = run.merged_path.is_dir() and any(run.merged_path.iterdir())
    if not run.has_weights() or (merged_started and not run.has_merged()):
        blockers.append(
            f"its weights are incomplete: {run.merged_path} lacks config.json or weight files"
        )
    return blockers, problems


def _score_problems(run: Run, eval_dir: Path) -> list[str]:
    """A score counts only on the whole of an eval set that the leakage check covered."""
    problems = []
    scored = _eval_dataset(eval_dir)
    if scored is None:
        return [
            f"its eval folder has no readable {run_folder.CONFIG} ({eval_dir / run_folder.CONFIG})"
        ]
    sha, limit = scored
    if limit is not None:
        problems.append(
            f"it was scored on the first {limit} eval examples only (--limit); rescore it on "
            "the full eval set"
        )
    leakage = run.manifest.get("leakage")
    covered = covered_eval_sha256(run.manifest)
    if isinstance(leakage, dict) and leakage.get("checked") is False:
        problems.append(
            "its leakage check was skipped (--no-leak-check), so its eval scores may be inflated"
        )
    elif sha not in covered:
        problems.append(
            f"it was scored on an eval set (dataset sha256 {str(sha)[:12]}...) that its "
            "leakage check did not cover; score it on one of the eval sets it was checked "
            "against (the manifest's leakage.checked_eval_sets)"
        )
    return problems


def covered_eval_sha256(manifest: dict[str, Any]) -> set[str]:
    """The dataset hashes of the eval sets the run's leakage check compared training against."""
    leakage = manifest.get("leakage")
    if not isinstance(leakage, dict) or leakage.get("checked") is False:
        return set()
    sets = leakage.get("checked_eval_sets")
    if not isinstance(sets, list):
        return set()
    return {str(s["sha256"]) for s in sets if isinstance(s, dict) and s.get("sha256")}


def _current_baseline(
    registry: Registry, run: Run
) -> tuple[BaselineConfig | None, str | None, str | None]:
    """(baseline, note, problem): a served run that cannot be compared fails the gate, since
    otherwise a candidate could skip the regression check by being scored differently."""
    current = registry.current()
    if current is None:
        return None, "no run is served yet: nothing to compare with", None
    if current.run_id == run.run_id:
        return None, "it is the run already served", None
    served_eval = current.path / EVAL_DIR
    override = "(--no-baseline skips the comparison, --force promotes anyway; both are recorded)"
    if not run_folder.has_metrics(served_eval):
        return (
            None,
            None,
            f"cannot compare with the served run {current.run_id}: it was never scored " + override,
        )
    served, candidate = _eval_dataset(served_eval), _eval_dataset(run.path / EVAL_DIR)
    if served is None or served != candidate:
        return (
            None,
            None,
            (
                f"cannot compare with the served run {current.run_id}: it was scored on another "
                f"eval set or limit ({_describe(served)} vs {_describe(candidate)}) {override}"
            ),
        )
    baseline = BaselineConfig(run=served_eval, max_drop=dict(DEFAULT_MAX_DROP))
    return baseline, f"compared with the served run {current.run_id}", None


def _describe(scored: tuple[Any, Any] | None) -> str:
    if scored is None:
        return "unknown"
    sha, limit = scored
    return f"sha256 {str(sha)[:12]}..., limit {limit}"


def _eval_dataset(folder: Path) -> tuple[Any, Any] | None:
    """(dataset sha256, limit) of the eval folder's config, None when it has no readable one."""
    config = run_folder.find_config(folder)
    if config is None:
        return None
    return config.get("dataset_sha256"), config.get("limit")


__all__ = ["DEFAULT_GATES", "DEFAULT_MAX_DROP", "GateVerdict", "covered_eval_sha256", "judge"]
