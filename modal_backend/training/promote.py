"""`python -m modal_backend.training.promote`: choose the run the model service loads.

    python -m modal_backend.training.promote --weights DIR RUN_ID [--force] [--reason TEXT]
    python -m modal_backend.training.promote --weights DIR rollback [--reason TEXT]
    python -m modal_backend.training.promote --weights DIR history
    python -m modal_backend.training.promote --weights DIR runs

`RUN_ID` becomes current (`current.json`) only if it passes the promotion gate
(`modal_backend.training.gate`: finished, checks passed, complete weights, scored on the full
eval set its leakage check covered, eval scores within `modal_backend/promotion_gates.toml`, no
regression against the served run). `--force` overrides the score part of the gate only, never
integrity (still training, incomplete weights); failed post-training checks need the separate
`--force-failed-checks`. Every promotion's history entry records the gate applied: its file,
whether the served run was compared, and what weakened it (`--gates`, `--no-baseline`).
`rollback` serves the run that was current before the latest promotion; `history` prints every
promotion and rollback. On the Modal Volume, run the same commands through
`modal run modal_backend/deploy/train_app.py::promote --args "..."`.

Exit status: 0 done, 1 the gate refused the run, 2 bad arguments or an unusable run or registry.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from modal_backend.serving.registry import Registry, RegistryError

COMMANDS = ("rollback", "history", "runs")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        options = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    registry = Registry(options.weights)
    try:
        if options.target == "rollback":
            return _rollback(registry, options)
        if options.target == "history":
            return _history(registry)
        if options.target == "runs":
            return _runs(registry)
        return _promote(registry, options)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modal_backend.training.promote",
        description="Promote a trained run (gated), roll back, or show the history.",
    )
    parser.add_argument("target", metavar="RUN_ID|rollback|history|runs")
    parser.add_argument("--weights", type=Path, required=True, help="the weights folder")
    parser.add_argument(
        "--force",
        action="store_true",
        help="promote even if the eval-score part of the gate fails (recorded); never overrides "
        "integrity: a run still training, with failed checks or incomplete weights",
    )
    parser.add_argument(
        "--force-failed-checks",
        action="store_true",
        help="DANGER: also promote a run whose post-training checks failed (implies --force; "
        "recorded)",
    )
    parser.add_argument("--reason", default="", help="recorded in the history")
    parser.add_argument("--gates", type=Path, default=None, help="a gates TOML file")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="do not compare with the run currently served",
    )
    parser.add_argument(
        "--no-base-check",
        action="store_true",
        help="do not require the run to beat its stock base on JFLEG dev and be no worse on "
        "our eval set (a weakened gate, recorded)",
    )
    return parser


def _promote(registry: Registry, options: argparse.Namespace) -> int:
    from eval.gates import GateConfigError
    from eval.run_folder import RunFolderError
    from modal_backend.training.gate import DEFAULT_GATES, judge

    run = registry.run(options.target)
    if registry.current_id() == run.run_id:
        print(f"{run.run_id} is already served; nothing recorded")
        return 0
    force = options.force or options.force_failed_checks
    try:
        verdict = judge(
            registry,
            run,
            gates=options.gates or DEFAULT_GATES,
            against_current=not options.no_baseline,
            against_base=not options.no_base_check,
            accept_failed_checks=options.force_failed_checks,
        )
    except (GateConfigError, RunFolderError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(verdict.report())
    if not verdict.forcible:
        override = " (--force does not override this)" if force else ""
        print(f"not promoted: {run.run_id} is not a usable run{override}")
        return 1
    if not verdict.passed and not force:
        print(f"not promoted: {run.run_id} failed the gate (--force overrides, and is recorded)")
        return 1
    if verdict.passed:
        reason = options.reason or "promotion gate passed"
    else:
        reason = options.reason or "forced past a failed promotion gate"
    previous = registry.current_id()
    registry.promote(
        run.run_id, reason=reason, forced=not verdict.passed, details={"gate": verdict.record}
    )
    forced = " (forced)" if not verdict.passed else ""
    weakened = " (weakened gate, recorded)" if verdict.record.get("weakened") else ""
    print(f"promoted {run.run_id}{forced}{weakened}; previously {previous or 'nothing'}")
    return 0


def _rollback(registry: Registry, options: argparse.Namespace) -> int:
    if options.force or options.force_failed_checks:
        print("error: rollback takes no --force", file=sys.stderr)
        return 2
    previous = registry.current_id()
    run = registry.rollback(reason=options.reason or "rollback")
    print(f"rolled back from {previous} to {run.run_id}")
    return 0


def _history(registry: Registry) -> int:
    entries = registry.history()
    if not entries:
        print("no promotions yet")
        return 0
    current = registry.current_id()
    for entry in entries:
        flag = " forced" if entry.get("forced") else ""
        gate = entry.get("gate")
        if isinstance(gate, dict) and gate.get("weakened"):
            flag += " weakened-gate"
        if isinstance(gate, dict) and gate.get("accepted_failed_checks"):
            flag += " FAILED-CHECKS"
        reason = f"  ({entry['reason']})" if entry.get("reason") else ""
        print(
            f"{entry.get('at', '?')}  {entry.get('action', '?'):8} {entry.get('run_id')}"
            f"{flag}  from {entry.get('previous') or '-'}{reason}"
        )
    print(f"current: {current or 'nothing'}")
    return 0


def _runs(registry: Registry) -> int:
    current = registry.current_id()
    for run_id in registry.run_ids():
        manifest = registry.run(run_id).manifest
        summary = manifest.get("eval", {}).get("summary", {})
        f05 = summary.get("metrics", {}).get("errant_f05")
        errors = summary.get("error_rate")
        marker = "*" if run_id == current else " "
        print(
            f"{marker} {run_id}  {manifest.get('status', '?'):9} "
            f"checks {'ok' if manifest.get('checks', {}).get('passed') else '--'}  "
            f"errant_f05 {'-' if f05 is None else f'{f05:.3f}'}  "
            f"errors {'-' if errors is None else f'{errors:.1%}'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
