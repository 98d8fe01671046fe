"""Compare two eval runs and gate a run against fixed targets or a baseline run.

A run folder (written by the eval runner) holds `metrics.csv` / `metrics.parquet`, one row per
(example_id, backend), and `summary.json` with corpus-level scores and latency percentiles.

Two runs on the same examples differ by much less than the spread between examples, so the
comparison is *paired*: per example, B minus A, and a bootstrap over examples says whether the
mean difference is distinguishable from zero. A plain difference of means would call noise a win.
Scores are paired over the whole dataset: the scorer gives a failed row the unedited source's
scores, so a run that fails on the hard examples neither skips them nor is compared on others.

Entry points (argparse): `main_compare` (`compare RUN_A RUN_B`) prints a table and exits 0;
`main_gate` (`gate RUN --config gates.toml`) exits 0 when every check passes, 1 when one fails and
2 for a bad config or run folder. `python -m eval.compare {compare,gate} ...` dispatches to them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "EXAMPLE_GATES",
    "METRIC_DIRECTIONS",
    "BaselineConfig",
    "GateCheck",
    "GateConfig",
    "GateConfigError",
    "GateResult",
    "MetricDelta",
    "RunFolderError",
    "Verdict",
    "compare_runs",
    "format_comparison",
    "format_gates",
    "load_gates",
    "main_compare",
    "main_gate",
    "paired_bootstrap",
    "run_gates",
]

METRIC_DIRECTIONS: dict[str, int] = {
    # Correction quality: higher is better.
    "gleu_sentence": 1,
    "errant_precision": 1,
    "errant_recall": 1,
    "errant_f05": 1,
    "meaning_similarity": 1,
    "flesch_reading_ease_delta": 1,
    # Distance from the reference, style problems, harder reading: lower is better.
    "edit_rate_reference": -1,
    "proselint_delta": -1,
    "fk_grade_delta": -1,
    "avg_sentence_length_delta": -1,
    "passive_rate_delta": -1,
    "wordiness_delta": -1,
    # Serving.
    "ttft_ms": -1,
    "total_ms": -1,
    "tokens_per_s": 1,
    "error_rate": -1,
    # How much of the source was rewritten: neither good nor bad by itself.
    "edit_rate_source": 0,
}
"""+1: higher is better, -1: lower is better, 0: neutral (a change is reported, not judged).
Columns not listed here are treated as neutral."""

ID_COLUMNS: Final = ("example_id", "backend", "type", "ok")
"""Columns of metrics.csv that are not metrics."""

SERVING_METRICS: Final = frozenset({"ttft_ms", "total_ms", "tokens_per_s", "retries"})
"""Columns about delivering an answer: a failed row has none to time, so these pair only the
examples both runs answered (failures are `error_rate`'s)."""

FAILED_ROWS_SCORED_AS: Final = "unedited source"
"""What summary.json's `failed_rows_scored_as` says when failed rows carry scores (eval.scoring);
a folder scored before that left them empty, and pairing it would compare other rows."""

CONFIDENCE: Final = 0.95
"""The confidence level of every interval `compare_runs` reports (the table says "95% CI")."""

Verdict = Literal["better", "worse", "no change", "changed"]


class RunFolderError(ValueError):
    """A run folder is missing or its files cannot be used (the CLIs exit 2 on it)."""


class GateConfigError(ValueError):
    """A gates TOML file cannot be used; the message names the file and the problem."""


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------

_BOOTSTRAP_CELLS: Final = 1 << 21
"""Resampled cells drawn per block, so a large run does not need iterations × n memory at once."""


def paired_bootstrap(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    iterations: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Mean of `b - a` and its percentile bootstrap interval, resampling examples (pairs).

    Resampling pairs rather than each side separately keeps the per-example correlation, which
    is what makes small differences between two systems on the same examples detectable.
    Pairs with NaN on either side are dropped first. Deterministic for a given `seed`.

    Raises ValueError for arrays of different shapes, no complete pair, or bad parameters.
    """
    left = np.asarray(a, dtype=np.float64).ravel()
    right = np.asarray(b, dtype=np.float64).ravel()
    if left.shape != right.shape:
        raise ValueError(f"paired arrays differ in length: {left.size} and {right.size}")
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    keep = ~(np.isnan(left) | np.isnan(right))
    diffs = right[keep] - left[keep]
    n = diffs.size
    if n == 0:
        raise ValueError("no complete pairs to compare (all NaN or empty)")
    rng = np.random.default_rng(seed)
    means = np.empty(iterations, dtype=np.float64)
    block = max(1, _BOOTSTRAP_CELLS // n)
    for start in range(0, iterations, block):
        stop = min(iterations, start + block)
        indices = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diffs[indices].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(diffs.mean()), float(low), float(high)


def _verdict(direction: int, ci_low: float, ci_high: float) -> Verdict:
    """An interval that excludes 0 is a change; the metric's direction says which kind."""
    if ci_low <= 0.0 <= ci_high:
        return "no change"
    if direction == 0:
        return "changed"
    went_up = ci_low > 0.0
    return "better" if went_up == (direction > 0) else "worse"


# --------------------------------------------------------------------------------------------
# Run folders
# --------------------------------------------------------------------------------------------

_CSV_NA: Final = ["", "nan", "NaN", "NAN", "NA", "N/A", "<NA>", "null", "None"]
"""What counts as an empty cell in a metric column of metrics.csv."""
_TRUE_STRINGS: Final = frozenset({"true", "1", "yes", "1.0"})
_FALSE_STRINGS: Final = frozenset({"false", "0", "no", "0.0"})


def _require_run_folder(run: Path) -> None:
    if not run.is_dir():
        raise RunFolderError(f"run folder not found: {run}")


def _ok_column(values: Any, source: Path) -> Any:
    """`ok` as booleans whether it came from parquet (bool) or CSV (bool or text)."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype(bool)

    def parse(value: Any) -> bool:
        text = str(value).strip().lower()
        if text in _TRUE_STRINGS:
            return True
        if text in _FALSE_STRINGS:
            return False
        raise RunFolderError(f"{source}: column 'ok' has a value that is not a boolean: {value!r}")

    return values.map(parse).astype(bool)


def _load_metrics(run: Path) -> Any:
    """metrics.parquet when present (exact types), else metrics.csv, checked and normalised."""
    _require_run_folder(run)
    parquet, csv = run / "metrics.parquet", run / "metrics.csv"
    text_columns = {"example_id": str, "backend": str, "type": str}
    try:
        if parquet.is_file():
            source = parquet
            frame = pd.read_parquet(parquet)
        elif csv.is_file():
            source = csv
            # Ids stay text: "007" must not become 7, nor an id "NA" a missing value.
            header = pd.read_csv(csv, nrows=0).columns
            frame = pd.read_csv(
                csv,
                dtype=text_columns,
                keep_default_na=False,
                na_values={name: _CSV_NA for name in header if name not in text_columns},
            )
        else:
            raise RunFolderError(f"no metrics.csv or metrics.parquet in run folder {run}")
    except RunFolderError:
        raise
    except Exception as error:  # pandas/pyarrow raise many types for a damaged file
        raise RunFolderError(f"cannot read metrics in {run}: {error}") from error
    missing = [name for name in ("example_id", "backend", "ok") if name not in frame.columns]
    if missing:
        raise RunFolderError(f"{source}: missing column(s) {', '.join(missing)}")
    frame = frame.copy()
    frame["example_id"] = frame["example_id"].astype(str)
    frame["backend"] = frame["backend"].astype(str)
    frame["ok"] = _ok_column(frame["ok"], source)
    duplicated = frame.duplicated(["example_id", "backend"])
    if duplicated.any():
        first = frame.loc[duplicated].iloc[0]
        raise RunFolderError(
            f"{source}: more than one row for example {first['example_id']!r} "
            f"on backend {first['backend']!r}"
        )
    return frame


def _metric_columns(frame: Any) -> list[str]:
    """Numeric, non-boolean columns other than the ids: the per-example metrics present."""
    return [
        str(name)
        for name in frame.columns
        if name not in ID_COLUMNS
        and pd.api.types.is_numeric_dtype(frame[name])
        and not pd.api.types.is_bool_dtype(frame[name])
    ]


def _metric_order(name: str) -> tuple[int, str]:
    """Known metrics in METRIC_DIRECTIONS order, then the rest alphabetically."""
    known = list(METRIC_DIRECTIONS)
    return (known.index(name), "") if name in known else (len(known), name)


def _require_scored_failures(run: Path, frame: Any) -> None:
    """A run with failed rows must say its failures were scored as the unedited source."""
    if bool(frame["ok"].all()):
        return
    path = run / "summary.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        document = None
    scored_as = document.get("failed_rows_scored_as") if isinstance(document, dict) else None
    if scored_as != FAILED_ROWS_SCORED_AS:
        raise RunFolderError(
            f"{run}: its failed rows carry no scores (scored before failures counted as the "
            "unedited source), so its scores cannot be paired over the whole dataset; score it "
            f"again with: python -m eval score {run}"
        )


def _load_summary(run: Path) -> dict[str, Any]:
    _require_run_folder(run)
    path = run / "summary.json"
    if not path.is_file():
        raise RunFolderError(f"no summary.json in run folder {run}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunFolderError(f"cannot read {path}: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("backends"), dict):
        raise RunFolderError(f"{path}: expected an object with a 'backends' object")
    return data


# --------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------


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
    columns (`SERVING_METRICS`) pair only the examples both runs answered. Failures are also
    reported as `error_rate` (A and B are each run's own rate; the interval comes from the
    paired failure indicators of the examples both runs attempted). Metrics with no complete
    pair (missing or all-NaN on a side) are left out. `metrics` restricts the output to those
    names (`error_rate` included). Raises RunFolderError for an unusable run folder, or one
    whose failed rows were scored before they counted as the unedited source.
    """
    frame_a, frame_b = _load_metrics(run_a), _load_metrics(run_b)
    _require_scored_failures(run_a, frame_a)
    _require_scored_failures(run_b, frame_b)
    wanted = None if metrics is None else set(metrics)
    shared_columns = set(_metric_columns(frame_a)) & set(_metric_columns(frame_b))
    columns = sorted(shared_columns, key=_metric_order)
    backends = sorted(set(frame_a["backend"]) & set(frame_b["backend"]))
    deltas: list[MetricDelta] = []
    for index, backend in enumerate(backends):
        rows_a = frame_a[frame_a["backend"] == backend]
        rows_b = frame_b[frame_b["backend"] == backend]
        paired = rows_a.merge(rows_b, on="example_id", suffixes=("_a", "_b"), validate="1:1")
        # A different seed per backend keeps their resamples independent.
        backend_seed = seed + index
        if (wanted is None or "error_rate" in wanted) and len(paired) > 0:
            failed_a = (~paired["ok_a"]).to_numpy(dtype=np.float64)
            failed_b = (~paired["ok_b"]).to_numpy(dtype=np.float64)
            _, low, high = paired_bootstrap(
                failed_a, failed_b, iterations=iterations, seed=backend_seed
            )
            rate_a = float((~rows_a["ok"]).mean())
            rate_b = float((~rows_b["ok"]).mean())
            deltas.append(
                MetricDelta(
                    backend=backend,
                    metric="error_rate",
                    n=len(paired),
                    mean_a=rate_a,
                    mean_b=rate_b,
                    delta=rate_b - rate_a,
                    ci_low=low,
                    ci_high=high,
                    verdict=_verdict(METRIC_DIRECTIONS["error_rate"], low, high),
                )
            )
        both_ok = paired[paired["ok_a"] & paired["ok_b"]]
        for column in columns:
            if wanted is not None and column not in wanted:
                continue
            pairs = both_ok if column in SERVING_METRICS else paired
            values_a = pairs[f"{column}_a"].to_numpy(dtype=np.float64, na_value=np.nan)
            values_b = pairs[f"{column}_b"].to_numpy(dtype=np.float64, na_value=np.nan)
            complete = ~(np.isnan(values_a) | np.isnan(values_b))
            n = int(complete.sum())
            if n == 0:
                continue
            delta, low, high = paired_bootstrap(
                values_a, values_b, iterations=iterations, seed=backend_seed
            )
            deltas.append(
                MetricDelta(
                    backend=backend,
                    metric=column,
                    n=n,
                    mean_a=float(values_a[complete].mean()),
                    mean_b=float(values_b[complete].mean()),
                    delta=delta,
                    ci_low=low,
                    ci_high=high,
                    verdict=_verdict(METRIC_DIRECTIONS.get(column, 0), low, high),
                )
            )
    return deltas


def _number(value: float | None, *, signed: bool = False) -> str:
    """Four decimals for scores and rates, one for milliseconds-sized values."""
    if value is None or math.isnan(value):
        return "-"
    sign = "+" if signed else ""
    return f"{value:{sign}.1f}" if abs(value) >= 100 else f"{value:{sign}.4f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Columns padded to their widest cell; numbers (the `right` columns) right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    return [line(header), "  ".join("-" * width for width in widths), *map(line, rows)]


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def format_comparison(deltas: Sequence[MetricDelta]) -> str:
    """The comparison as an aligned table and a one-line verdict for B against A."""
    header = ["backend", "metric", "n", "A", "B", "delta", "95% CI", "verdict"]
    rows = [
        [
            d.backend,
            d.metric,
            str(d.n),
            _number(d.mean_a),
            _number(d.mean_b),
            _number(d.delta, signed=True),
            f"[{_number(d.ci_low, signed=True)}, {_number(d.ci_high, signed=True)}]",
            d.verdict,
        ]
        for d in deltas
    ]
    lines = _table(header, rows, right={2, 3, 4, 5, 6})
    if not deltas:
        lines.append("(no backend and metric in common)")
    better = sum(d.verdict == "better" for d in deltas)
    worse = sum(d.verdict == "worse" for d in deltas)
    unchanged = sum(d.verdict == "no change" for d in deltas)
    changed = sum(d.verdict == "changed" for d in deltas)
    summary = (
        f"verdict: B is better on {_count(better, 'metric')}, worse on {worse}, "
        f"unchanged on {unchanged}"
    )
    if changed:
        summary += f", changed on {changed} (neutral)"
    lines.append(summary)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Gates
# --------------------------------------------------------------------------------------------

EXAMPLE_GATES: Final = """\
# gates.toml: the service target for the fine-tuned ("custom") backend.
# Run: python -m eval gate runs/<run> --config eval/gates.toml
# Exit status: 0 all checks pass, 1 a check failed, 2 bad config or run folder.

# Latency: 95% of suggestions complete within 2 s end to end.
[[check]]
backend = "custom"
metric = "latency.total_ms.p95"
max = 2000

# Reliability: at most 2% of requests fail.
[[check]]
backend = "custom"
metric = "error_rate"
max = 0.02

# Quality: corpus ERRANT F0.5 floor; raise it once a baseline run sets the level.
[[check]]
backend = "custom"
metric = "errant_f05"
min = 0.40

# Optional: no significant regression against an earlier run (path relative to this file).
# A check fails when even the top of the 95% interval of the change is a drop beyond the limit.
# [baseline]
# run = "runs/previous"
# max_drop = { errant_f05 = 0.02, meaning_similarity = 0.01 }
"""
"""An example gates file with the service targets, for someone to save as gates.toml."""

_CHECK_KEYS: Final = frozenset({"backend", "metric", "min", "max"})
_BASELINE_KEYS: Final = frozenset({"run", "max_drop", "iterations", "seed"})
_TOP_KEYS: Final = frozenset({"check", "baseline"})
_RUN_LEVEL_FIELDS: Final = frozenset({"error_rate", "errors", "examples"})


@dataclass(frozen=True)
class GateCheck:
    """A bound on one summary value; `backend` None means every backend of the run."""

    metric: str
    backend: str | None = None
    min_value: float | None = None
    max_value: float | None = None


@dataclass(frozen=True)
class BaselineConfig:
    """A regression check against an earlier run: allowed drop per per-example metric."""

    run: Path
    max_drop: Mapping[str, float] = field(default_factory=dict)
    iterations: int = 2000
    seed: int = 0


@dataclass(frozen=True)
class GateConfig:
    """A parsed, validated gates file."""

    source: Path
    checks: tuple[GateCheck, ...] = ()
    baseline: BaselineConfig | None = None


@dataclass(frozen=True)
class GateResult:
    """The outcome of one bound on one backend; `observed` None when the value was missing."""

    name: str
    backend: str | None
    observed: float | None
    bound: float
    passed: bool
    message: str


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _unknown_keys(table: Mapping[str, Any], allowed: frozenset[str]) -> str | None:
    unknown = sorted(set(table) - allowed)
    if not unknown:
        return None
    return f"unknown key(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(sorted(allowed))})"


def _parse_check(path: Path, number: int, table: object) -> GateCheck:
    where = f"{path}: check #{number}"
    if not isinstance(table, dict):
        raise GateConfigError(f"{where}: must be a table ([[check]])")
    if problem := _unknown_keys(table, _CHECK_KEYS):
        raise GateConfigError(f"{where}: {problem}")
    metric = table.get("metric")
    if not isinstance(metric, str) or not metric.strip():
        raise GateConfigError(f'{where}: needs metric = "<name>" (a non-empty string)')
    where = f"{where} ({metric})"
    backend = table.get("backend")
    if backend is not None and (not isinstance(backend, str) or not backend.strip()):
        raise GateConfigError(f"{where}: backend must be a non-empty string")
    if "min" not in table and "max" not in table:
        raise GateConfigError(f"{where}: needs a bound, min and/or max")
    bounds: dict[str, float | None] = {}
    for key in ("min", "max"):
        value = table.get(key)
        if value is not None and (not _is_number(value) or math.isnan(value)):
            raise GateConfigError(f"{where}: {key} must be a number, got {value!r}")
        bounds[key] = None if value is None else float(value)
    low, high = bounds["min"], bounds["max"]
    if low is not None and high is not None and low > high:
        raise GateConfigError(f"{where}: min {low} is above max {high}")
    return GateCheck(metric=metric, backend=backend, min_value=low, max_value=high)


def _parse_baseline(path: Path, table: object) -> BaselineConfig:
    where = f"{path}: [baseline]"
    if not isinstance(table, dict):
        raise GateConfigError(f"{where}: must be a table")
    if problem := _unknown_keys(table, _BASELINE_KEYS):
        raise GateConfigError(f"{where}: {problem}")
    run = table.get("run")
    if not isinstance(run, str) or not run.strip():
        raise GateConfigError(f'{where}: needs run = "<run folder>"')
    folder = Path(run).expanduser()
    folder = folder if folder.is_absolute() else path.parent / folder
    if not folder.is_dir():
        raise GateConfigError(f"{where}: baseline run folder not found: {folder}")
    max_drop = table.get("max_drop", {})
    if not isinstance(max_drop, dict):
        raise GateConfigError(f"{where}: max_drop must be a table of metric = allowed drop")
    drops: dict[str, float] = {}
    for metric, value in max_drop.items():
        if not _is_number(value) or math.isnan(value) or value < 0:
            raise GateConfigError(
                f"{where}: max_drop.{metric} must be a non-negative number, got {value!r}"
            )
        if METRIC_DIRECTIONS.get(metric, 0) == 0:
            raise GateConfigError(
                f"{where}: max_drop.{metric}: not a per-example metric with a known good "
                f"direction (known: {', '.join(k for k, v in METRIC_DIRECTIONS.items() if v)})"
            )
        drops[metric] = float(value)
    if not drops:
        raise GateConfigError(f"{where}: max_drop names no metric, so it checks nothing")
    settings: dict[str, int] = {}
    for key, default, least in (("iterations", 2000, 1), ("seed", 0, 0)):
        value = table.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise GateConfigError(f"{where}: {key} must be an integer >= {least}, got {value!r}")
        settings[key] = value
    return BaselineConfig(
        run=folder, max_drop=drops, iterations=settings["iterations"], seed=settings["seed"]
    )


def load_gates(path: Path) -> GateConfig:
    """Read and validate a gates TOML file; every problem is a GateConfigError naming it.

    Validation happens here, before any run is read, so a typo in a bound fails the gate loudly
    (exit 2) instead of silently checking nothing.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise GateConfigError(
            f"cannot read gates file {path}: {error.strerror or error}"
        ) from error
    except UnicodeDecodeError as error:
        raise GateConfigError(f"{path}: not UTF-8 text: {error}") from error
    except tomllib.TOMLDecodeError as error:
        raise GateConfigError(f"{path}: invalid TOML: {error}") from error
    if problem := _unknown_keys(data, _TOP_KEYS):
        raise GateConfigError(f"{path}: {problem}")
    raw_checks = data.get("check", [])
    if not isinstance(raw_checks, list):
        raise GateConfigError(f"{path}: 'check' must be an array of tables ([[check]])")
    checks = tuple(
        _parse_check(path, number, table) for number, table in enumerate(raw_checks, start=1)
    )
    baseline = _parse_baseline(path, data["baseline"]) if "baseline" in data else None
    if not checks and baseline is None:
        raise GateConfigError(f"{path}: defines no [[check]] and no [baseline]; nothing to gate")
    return GateConfig(source=path, checks=checks, baseline=baseline)


def _summary_value(entry: Mapping[str, Any], metric: str) -> tuple[float | None, str]:
    """A backend's value for a gate metric, or None and a sentence saying why it is missing.

    Dotted names walk the backend's object (`latency.total_ms.p95`); `error_rate`, `errors` and
    `examples` are backend fields; any other name is a key of the backend's `metrics`.
    """
    if "." in metric:
        parts = metric.split(".")
    elif metric in _RUN_LEVEL_FIELDS:
        parts = [metric]
    else:
        parts = ["metrics", metric]
    path = ".".join(parts)
    value: Any = entry
    for part in parts:
        if not isinstance(value, Mapping) or part not in value:
            return None, f"{metric} is missing from the summary (no '{path}')"
        value = value[part]
    if value is None:
        return None, f"{metric} is null in the summary"
    if not _is_number(value) or math.isnan(float(value)):
        return None, f"{metric} is not a number in the summary ({value!r})"
    return float(value), ""


def _check_results(check: GateCheck, backends: Mapping[str, Any]) -> list[GateResult]:
    """One result per bound (min, max) per backend the check applies to."""
    bounds = [
        (op, bound)
        for op, bound in ((">=", check.min_value), ("<=", check.max_value))
        if bound is not None
    ]
    names: list[str | None] = [check.backend] if check.backend else [*sorted(backends)]
    if not names:
        names = [None]  # still report the check, as failed, rather than silently skip it
    results: list[GateResult] = []
    for backend in names:
        entry = backends.get(backend) if backend is not None else None
        if backend is None:
            observed, why = None, "the run's summary lists no backend"
        elif not isinstance(entry, Mapping):
            observed, why = None, f"backend {backend!r} is not in the run's summary"
        else:
            observed, why = _summary_value(entry, check.metric)
        for op, bound in bounds:
            name = f"{check.metric} {op} {bound:g}"
            if observed is None:
                results.append(GateResult(name, backend, None, bound, False, why))
                continue
            if op == ">=":
                passed, word = observed >= bound, "min"
            else:
                passed, word = observed <= bound, "max"
            relation = "within" if passed else ("below" if op == ">=" else "above")
            message = f"{check.metric} = {observed:g}, {relation} {word} {bound:g}"
            results.append(GateResult(name, backend, observed, bound, passed, message))
    return results


def _baseline_results(run: Path, baseline: BaselineConfig) -> list[GateResult]:
    """Fail a metric when even the top of its interval is a drop larger than allowed."""
    deltas = compare_runs(
        baseline.run,
        run,
        iterations=baseline.iterations,
        seed=baseline.seed,
        metrics=baseline.max_drop,
    )
    backends = sorted(
        set(_load_metrics(baseline.run)["backend"]) & set(_load_metrics(run)["backend"])
    )
    found = {(d.backend, d.metric): d for d in deltas}
    results: list[GateResult] = []
    for metric, allowed in baseline.max_drop.items():
        name = f"baseline {metric} drop <= {allowed:g}"
        bound = -allowed
        if not backends:
            results.append(
                GateResult(name, None, None, bound, False, "no backend in common with baseline")
            )
        for backend in backends:
            delta = found.get((backend, metric))
            if delta is None:
                message = f"{metric} has no complete pairs in this run and the baseline"
                results.append(GateResult(name, backend, None, bound, False, message))
                continue
            direction = METRIC_DIRECTIONS[metric]
            # Express the change so that positive is good, whatever the metric's direction.
            good = direction * delta.delta
            good_low, good_high = sorted((direction * delta.ci_low, direction * delta.ci_high))
            passed = not good_high < bound
            state = "within" if passed else "beyond"
            message = (
                f"{metric} {delta.mean_a:g} -> {delta.mean_b:g} (n={delta.n}); change in the "
                f"good direction {good:+.4g}, 95% CI [{good_low:+.4g}, {good_high:+.4g}], "
                f"{state} the allowed drop {allowed:g}"
            )
            results.append(GateResult(name, backend, good, bound, passed, message))
    return results


def run_gates(run: Path, config: GateConfig) -> list[GateResult]:
    """Every check of the config against the run; a missing value fails its check.

    Raises RunFolderError when the run (or the baseline) cannot be read at all, since then no
    check can say anything.
    """
    backends = _load_summary(run)["backends"]
    results: list[GateResult] = []
    for check in config.checks:
        results.extend(_check_results(check, backends))
    if config.baseline is not None:
        results.extend(_baseline_results(run, config.baseline))
    return results


def format_gates(results: Sequence[GateResult]) -> str:
    """One aligned line per result (PASS/FAIL first) and a final pass/fail line."""
    rows = [
        [
            "PASS" if r.passed else "FAIL",
            r.backend or "-",
            r.name,
            _number(r.observed),
            r.message,
        ]
        for r in results
    ]
    lines = _table(["result", "backend", "check", "observed", "detail"], rows, right={3})
    failed = sum(not r.passed for r in results)
    if not results:
        lines.append("gate: no checks ran")
    elif failed:
        lines.append(f"gate: FAILED, {failed} of {_count(len(results), 'check')} failed")
    else:
        lines.append(f"gate: passed, all {_count(len(results), 'check')}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace | int:
    """argparse exits on a usage error; return its status instead so callers get an int."""
    try:
        return parser.parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 2


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main_compare(argv: list[str] | None = None) -> int:
    """`compare RUN_A RUN_B [--iterations N] [--seed S]`: print the paired comparison of B to A.

    Exit 0 with the table (a comparison is information, not a pass/fail; use `gate` for that),
    2 for a usage error or an unusable run folder.
    """
    parser = argparse.ArgumentParser(
        prog="compare", description="Paired bootstrap comparison of two eval runs (B against A)."
    )
    parser.add_argument("run_a", type=Path, metavar="RUN_A", help="the reference run folder")
    parser.add_argument("run_b", type=Path, metavar="RUN_B", help="the run compared with it")
    parser.add_argument("--iterations", type=_positive, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap random seed")
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    try:
        deltas = compare_runs(args.run_a, args.run_b, iterations=args.iterations, seed=args.seed)
    except RunFolderError as error:
        print(f"compare: {error}", file=sys.stderr)
        return 2
    print(format_comparison(deltas))
    return 0


def main_gate(argv: list[str] | None = None) -> int:
    """`gate RUN --config gates.toml`: exit 0 when all checks pass, 1 when any fails, 2 when
    the config, the run folder or the usage is wrong (the problem is printed on stderr)."""
    parser = argparse.ArgumentParser(
        prog="gate", description="Check an eval run against the bounds of a gates TOML file."
    )
    parser.add_argument("run", type=Path, metavar="RUN", help="the run folder to check")
    parser.add_argument("--config", type=Path, required=True, help="the gates TOML file")
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    try:
        config = load_gates(args.config)
        results = run_gates(args.run, config)
    except (GateConfigError, RunFolderError) as error:
        print(f"gate: {error}", file=sys.stderr)
        return 2
    print(format_gates(results))
    return 0 if all(r.passed for r in results) else 1


def _main(argv: list[str] | None = None) -> int:
    """`python -m eval.compare {compare,gate} ...`."""
    arguments = sys.argv[1:] if argv is None else argv
    commands = {"compare": main_compare, "gate": main_gate}
    if not arguments or arguments[0] not in commands:
        print("usage: python -m eval.compare {compare,gate} ...", file=sys.stderr)
        return 2
    return commands[arguments[0]](arguments[1:])


if __name__ == "__main__":
    sys.exit(_main())
