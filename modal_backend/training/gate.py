"""May a run be promoted? Its own state, then the eval harness's gate on its eval folder.

A run passes when it finished (`status: complete`), its post-training checks passed, it was
scored by the eval harness, and that score folder passes the gates file's `[[check]]`s
(`eval.compare.run_gates`, the logic behind `python -m eval gate`). When another run is
currently served and was scored on the same eval set, the candidate is also compared with it
example by example (the harness's `[baseline]` check), so a promotion cannot quietly regress.

The default gates file is `modal_backend/promotion_gates.toml`: the quality and reliability
bounds of `eval/gates.toml` without its latency bound, since a run is scored on the training
machine, not on the deployed service (`python -m eval latency` checks that one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from eval.compare import BaselineConfig, GateResult, format_gates, load_gates, run_gates
from modal_backend.registry import Registry, Run

from .evaluation import EVAL_DIR
from .manifest import STATUS_COMPLETE

DEFAULT_GATES = Path(__file__).resolve().parents[1] / "promotion_gates.toml"
DEFAULT_MAX_DROP: dict[str, float] = {"errant_f05": 0.02, "meaning_similarity": 0.01}
"""Largest allowed drop against the served run, per per-example metric (95% interval)."""


@dataclass(frozen=True)
class GateVerdict:
    run_id: str
    problems: list[str] = field(default_factory=list)
    """Why the run cannot be judged or promoted at all (unfinished, checks failed, unscored)."""
    results: list[GateResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems and bool(self.results) and all(r.passed for r in self.results)

    def report(self) -> str:
        lines = [f"run {self.run_id}"]
        lines += [f"  problem: {problem}" for problem in self.problems]
        lines += [f"  note: {note}" for note in self.notes]
        if self.results:
            lines.append(format_gates(self.results))
        lines.append(f"promotion gate: {'passed' if self.passed else 'FAILED'}")
        return "\n".join(lines)


def judge(
    registry: Registry, run: Run, *, gates: Path = DEFAULT_GATES, against_current: bool = True
) -> GateVerdict:
    """The gate's verdict on `run`. Raises eval.compare.GateConfigError for a bad gates file."""
    config = load_gates(gates)
    problems = _run_problems(run)
    notes: list[str] = []
    eval_dir = run.path / EVAL_DIR
    if not (eval_dir / "summary.json").is_file():
        problems.append(
            "it has not been scored: python -m modal_backend.training evaluate "
            f"{run.run_id} --weights {registry.root}"
        )
        return GateVerdict(run.run_id, problems, [], notes)
    if against_current and config.baseline is None:
        baseline, note = _current_baseline(registry, run)
        if baseline is not None:
            config = replace(config, baseline=baseline)
        if note:
            notes.append(note)
    return GateVerdict(run.run_id, problems, run_gates(eval_dir, config), notes)


def _run_problems(run: Run) -> list[str]:
    problems = []
    status = run.manifest.get("status")
    if status != STATUS_COMPLETE:
        problems.append(f"its status is {status!r}, not {STATUS_COMPLETE!r}")
    checks = run.manifest.get("checks")
    if not isinstance(checks, dict) or not checks.get("passed"):
        problems.append("its post-training checks did not pass (see the manifest's 'checks')")
    return problems


def _current_baseline(registry: Registry, run: Run) -> tuple[BaselineConfig | None, str | None]:
    current = registry.current()
    if current is None or current.run_id == run.run_id:
        return None, None
    served_eval = current.path / EVAL_DIR
    if (
        not (served_eval / "metrics.csv").is_file()
        and not (served_eval / "metrics.parquet").is_file()
    ):
        return None, f"not compared with the served run {current.run_id}: it was never scored"
    if _eval_dataset(served_eval) != _eval_dataset(run.path / EVAL_DIR):
        return None, (
            f"not compared with the served run {current.run_id}: it was scored on another "
            "eval set or limit"
        )
    baseline = BaselineConfig(run=served_eval, max_drop=dict(DEFAULT_MAX_DROP))
    return baseline, f"compared with the served run {current.run_id}"


def _eval_dataset(folder: Path) -> tuple[Any, Any] | None:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return config.get("dataset_sha256"), config.get("limit")


__all__ = ["DEFAULT_GATES", "DEFAULT_MAX_DROP", "GateVerdict", "judge"]
