"""Compare two eval runs: per backend and metric, B against A with a paired bootstrap interval.

Scores are paired over the whole dataset: the scorer gives a failed row the unedited source's
scores, so a run that fails on the hard examples neither skips them nor is compared on others.
Serving columns pair only the examples both runs answered. The statistics are `eval.stats`;
the run folders are read through `eval.run_folder`; `python -m eval compare` prints the table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .metrics.registry import DIRECTIONS, METRICS, SERVING
from .run_folder import (
    KEY_COLUMNS,
    RunFolderError,
    read_metrics,
    read_summary,
    require_scored_failures,
)
from .stats import Verdict, paired_bootstrap, verdict

__all__ = [
    "MetricDelta",
    "RunFolderError",
    "TypeCounts",
    "compare_runs",
    "error_type_counts",
    "error_type_report",
    "format_comparison",
    "format_error_types",
]


@dataclass(frozen=True)
class MetricDelta:
    """One metric of one backend, run B against run A (delta = B - A over paired examples)."""

    backend: str
    metric: str
    n: int
    mean_a: float
    mean_b: float
    delta: float
    ci_low: float
    ci_high: float
    verdict: Verdict


def compare_runs(
    run_a: Path,
    run_b: Path,
    *,
    iterations: int = 2000,
    seed: int = 0,
    metrics: Iterable[str] | None = None,
) -> list[MetricDelta]:
    """Paired comparison of every metric column of every backend the two runs share.

    Rows are paired by example_id over every example both runs hold, answered or not: a failed
    row carries the unedited source's scores (eval.scoring), so a backend that fails on the hard
    examples neither looks better for skipping them nor is compared on other rows. Serving
    columns pair only the examples both runs answered. Failures are also reported as
    `error_rate` (A and B are each run's own rate; the interval comes from the paired failure
    indicators of the examples both runs attempted). Metrics with no complete pair (missing or
    all-NaN on a side) are left out. `metrics` restricts the output to those names
    (`error_rate` included). Raises RunFolderError for an unusable run folder, or one whose
    failed rows were scored before they counted as the unedited source.
    """
    frame_a, frame_b = read_metrics(run_a), read_metrics(run_b)
    require_scored_failures(run_a, frame_a)
    require_scored_failures(run_b, frame_b)
    wanted = None if metrics is None else set(metrics)
    shared_columns = set(_metric_columns(frame_a)) & set(_metric_columns(frame_b))
    columns = sorted(shared_columns, key=metric_order)
    backends = sorted(set(frame_a["backend"]) & set(frame_b["backend"]))
    deltas: list[MetricDelta] = []
    for index, backend in enumerate(backends):
        rows_a = frame_a[frame_a["backend"] == backend]
        rows_b = frame_b[frame_b["backend"] == backend]
        paired = rows_a.merge(rows_b, on="example_id", suffixes=("_a", "_b"), validate="1:1")
        # A different seed per backend keeps their resamples independent.
        backend_seed = seed + index
        if (wanted is None or "error_rate" in wanted) and len(paired) > 0:
            deltas.append(_error_rate(backend, rows_a, rows_b, paired, iterations, backend_seed))
        both_ok = paired[paired["ok_a"] & paired["ok_b"]]
        for column in columns:
            if wanted is not None and column not in wanted:
                continue
            pairs = both_ok if column in SERVING else paired
            delta = _column_delta(backend, column, pairs, iterations, backend_seed)
            if delta is not None:
                deltas.append(delta)
    return deltas


def _error_rate(
    backend: str, rows_a: Any, rows_b: Any, paired: Any, iterations: int, seed: int
) -> MetricDelta:
    failed_a = (~paired["ok_a"]).to_numpy(dtype=np.float64)
    failed_b = (~paired["ok_b"]).to_numpy(dtype=np.float64)
    _, low, high = paired_bootstrap(failed_a, failed_b, iterations=iterations, seed=seed)
    rate_a = float((~rows_a["ok"]).mean())
    rate_b = float((~rows_b["ok"]).mean())
    return MetricDelta(
        backend=backend,
        metric="error_rate",
        n=len(paired),
        mean_a=rate_a,
        mean_b=rate_b,
        delta=rate_b - rate_a,
        ci_low=low,
        ci_high=high,
        verdict=verdict(DIRECTIONS["error_rate"], low, high),
    )


def _column_delta(
    backend: str, column: str, pairs: Any, iterations: int, seed: int
) -> MetricDelta | None:
    """None when no example has the column on both sides."""
    values_a = pairs[f"{column}_a"].to_numpy(dtype=np.float64, na_value=np.nan)
    values_b = pairs[f"{column}_b"].to_numpy(dtype=np.float64, na_value=np.nan)
    complete = ~(np.isnan(values_a) | np.isnan(values_b))
    n = int(complete.sum())
    if n == 0:
        return None
    delta, low, high = paired_bootstrap(values_a, values_b, iterations=iterations, seed=seed)
    return MetricDelta(
        backend=backend,
        metric=column,
        n=n,
        mean_a=float(values_a[complete].mean()),
        mean_b=float(values_b[complete].mean()),
        delta=delta,
        ci_low=low,
        ci_high=high,
        verdict=verdict(DIRECTIONS.get(column, 0), low, high),
    )


def _metric_columns(frame: Any) -> list[str]:
    """Numeric, non-boolean columns other than the ids: the per-example metrics present."""
    return [
        str(name)
        for name in frame.columns
        if name not in KEY_COLUMNS
        and pd.api.types.is_numeric_dtype(frame[name])
        and not pd.api.types.is_bool_dtype(frame[name])
    ]


_ORDER = list(METRICS)


def metric_order(name: str) -> tuple[int, int, str]:
    """Where a metric sits in the comparison's table and lists: the judged scores first (those
    better when higher, then those better when lower), then serving, then the neutral ones,
    each in registry order; a name the registry lacks goes last, alphabetically."""
    entry = METRICS.get(name)
    if entry is None:
        return (4, 0, name)
    if entry.direction == 0:
        group = 3
    elif entry.serving or entry.scope == "run":
        group = 2
    else:
        group = 0 if entry.direction > 0 else 1
    return (group, _ORDER.index(name), "")


# --- text tables (shared with the gates' output) --------------------------------------------


def number_text(value: float | None, *, signed: bool = False) -> str:
    """Four decimals for scores and rates, one for milliseconds-sized values."""
    if value is None or math.isnan(value):
        return "-"
    sign = "+" if signed else ""
    return f"{value:{sign}.1f}" if abs(value) >= 100 else f"{value:{sign}.4f}"


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Columns padded to their widest cell; numbers (the `right` columns) right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    return [line(header), "  ".join("-" * width for width in widths), *map(line, rows)]


def plural(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def format_comparison(deltas: Sequence[MetricDelta]) -> str:
    """The comparison as an aligned table and a one-line verdict for B against A."""
    header = ["backend", "metric", "n", "A", "B", "delta", "95% CI", "verdict"]
    rows = [
        [
            d.backend,
            d.metric,
            str(d.n),
            number_text(d.mean_a),
            number_text(d.mean_b),
            number_text(d.delta, signed=True),
            f"[{number_text(d.ci_low, signed=True)}, {number_text(d.ci_high, signed=True)}]",
            d.verdict,
        ]
        for d in deltas
    ]
    lines = text_table(header, rows, right={2, 3, 4, 5, 6})
    if not deltas:
        lines.append("(no backend and metric in common)")
    better = sum(d.verdict == "better" for d in deltas)
    worse = sum(d.verdict == "worse" for d in deltas)
    unchanged = sum(d.verdict == "no change" for d in deltas)
    changed = sum(d.verdict == "changed" for d in deltas)
    summary = (
        f"verdict: B is better on {plural(better, 'metric')}, worse on {worse}, "
        f"unchanged on {unchanged}"
    )
    if changed:
        summary += f", changed on {changed} (neutral)"
    lines.append(summary)
    return "\n".join(lines)


# --- ERRANT error types: which edits changed --------------------------------------------------


@dataclass(frozen=True)
class TypeCounts:
    """One ERRANT error type (the official categories, e.g. `R:VERB:TENSE`) in runs A and B:
    true positives, false positives (edits made wrongly) and false negatives (edits missed)."""

    kind: str
    a: tuple[int, int, int]
    b: tuple[int, int, int]

    @property
    def fp_change(self) -> int:
        return self.b[1] - self.a[1]


def error_type_counts(run_a: Path, run_b: Path, backend: str) -> list[TypeCounts]:
    """Per ERRANT error type, the corpus counts of `backend` in both runs, the types whose
    wrong edits grew most first: where a regression comes from. Empty when neither run has
    per-type tables (no grammar rows)."""
    tables = [
        (read_summary(run)["backends"].get(backend) or {}).get("errant_by_type") or {}
        for run in (run_a, run_b)
    ]

    def counts(table: dict[str, Any], kind: str) -> tuple[int, int, int]:
        row = table.get(kind) or {}
        return (int(row.get("tp", 0)), int(row.get("fp", 0)), int(row.get("fn", 0)))

    kinds = sorted(set(tables[0]) | set(tables[1]))
    found = [TypeCounts(kind, counts(tables[0], kind), counts(tables[1], kind)) for kind in kinds]
    return sorted(found, key=lambda t: (-t.fp_change, -(t.a[0] + t.b[0]), t.kind))


def format_error_types(types: Sequence[TypeCounts], *, limit: int = 25) -> str:
    """The per-type counts as an aligned table (TP/FP/FN in A and B, and the changes)."""
    header = ["type", "TP A", "TP B", "FP A", "FP B", "FN A", "FN B", "ΔTP", "ΔFP"]
    rows = [
        [
            t.kind,
            *(str(v) for pair in zip(t.a, t.b, strict=True) for v in pair),
            f"{t.b[0] - t.a[0]:+d}",
            f"{t.fp_change:+d}",
        ]
        for t in types[:limit]
    ]
    lines = text_table(header, rows, right=set(range(1, 9)))
    if not types:
        lines.append("(no ERRANT error types: no grammar rows were scored)")
    elif len(types) > limit:
        lines.append(f"... and {len(types) - limit} more types")
    return "\n".join(lines)


def error_type_report(run_a: Path, run_b: Path) -> str:
    """One per-type table for every backend both runs hold that has grammar rows scored, each
    under a heading; empty when none has."""
    backends = sorted(set(read_summary(run_a)["backends"]) & set(read_summary(run_b)["backends"]))
    sections = []
    for backend in backends:
        types = error_type_counts(run_a, run_b, backend)
        if types:
            sections.append(
                f"ERRANT error types, {backend} (A -> B; wrong edits that grew most first)\n"
                + format_error_types(types)
            )
    return "\n\n".join(sections)
