"""Gate a run: fixed bounds on its summary, and no significant drop against a baseline run.

A gates file is TOML (`eval/gates.toml`, `modal_backend/promotion_gates.toml`): `[[check]]`s
with a `metric`, a `min` and/or `max` and an optional `backend`, and an optional `[baseline]`
with the earlier `run` and the largest allowed drop per per-example metric (`max_drop`). The
file is read into the pydantic models below (`extra="forbid"`, strict types), before any run is
read, so a typo in a bound fails loudly, naming the file and the problem, instead of silently
checking nothing. `python -m eval gate` exits 0 when every check passes, 1 when one fails, and
2 for a bad gates file or run folder.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .compare import compare_runs, metric_order, number_text, plural, text_table
from .metrics.registry import DIRECTIONS, LATENCY_TARGET_MS, METRICS
from .run_folder import read_metrics, read_summary

__all__ = [
    "EXAMPLE_GATES",
    "BaselineConfig",
    "GateCheck",
    "GateConfig",
    "GateConfigError",
    "GateResult",
    "format_gates",
    "load_gates",
    "run_gates",
]

EXAMPLE_GATES: Final = f"""\
# gates.toml: the service target for the fine-tuned ("custom") backend.
# Run: python -m eval gate runs/<run> --config eval/gates.toml
# Exit status: 0 all checks pass, 1 a check failed, 2 bad config or run folder.

# Latency: 95% of suggestions complete within {LATENCY_TARGET_MS / 1000:g} s end to end.
[[check]]
backend = "custom"
metric = "latency.total_ms.p95"
max = {LATENCY_TARGET_MS:g}

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
# max_drop = {{ errant_f05 = 0.02, meaning_similarity = 0.01 }}
"""
"""An example gates file with the service targets (eval/gates.toml is this text)."""

DROPPABLE: Final = tuple(
    sorted(
        (m.name for m in METRICS.values() if m.direction and m.scope != "corpus"),
        key=metric_order,
    )
)
"""What `max_drop` may name: the paired metrics (per-example columns and the error rate) with a
good direction, in the comparison's order."""

_BACKEND_FIELDS: Final = frozenset(
    {"errors", "examples", *(m.name for m in METRICS.values() if m.scope == "run")}
)
"""Gate metrics that are fields of a backend's summary entry rather than of its `metrics`."""


class GateConfigError(ValueError):
    """A gates TOML file cannot be used; the message names the file and the problem."""


# --- the gates file -------------------------------------------------------------------------


class _Table(BaseModel):
    """A TOML table: no unknown keys, no coercion (`"0.4"` is not a number, `true` not 1)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GateCheck(_Table):
    """A bound on one summary value; `backend` None means every backend of the run."""

    metric: str
    backend: str | None = None
    min: float | None = None
    max: float | None = None

    @field_validator("metric")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(_PROBLEMS["metric"])
        return value

    @field_validator("backend")
    @classmethod
    def _backend_named(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(_PROBLEMS["backend"])
        return value

    @field_validator("min", "max")
    @classmethod
    def _not_nan(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and math.isnan(value):
            raise ValueError(_PROBLEMS[str(info.field_name)].format(input=value))
        return value

    @model_validator(mode="after")
    def _bounded(self) -> GateCheck:
        if self.min is None and self.max is None:
            raise ValueError("needs a bound, min and/or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    @property
    def min_value(self) -> float | None:
        return self.min

    @property
    def max_value(self) -> float | None:
        return self.max


class BaselineConfig(_Table):
    """A regression check against an earlier run: allowed drop per per-example metric."""

    run: Annotated[Path, Field(strict=False)]
    max_drop: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, validate_default=True
    )
    iterations: int = Field(2000, ge=1)
    seed: int = Field(0, ge=0)

    @field_validator("run", mode="before")
    @classmethod
    def _given(cls, value: object) -> object:
        if not isinstance(value, str | Path) or not str(value).strip():
            raise ValueError(_PROBLEMS["run"])
        return value

    @field_validator("max_drop")
    @classmethod
    def _judged(cls, drops: dict[str, float]) -> dict[str, float]:
        for name in drops:
            if name not in DROPPABLE:
                raise ValueError(
                    f"max_drop.{name}: not a per-example metric with a known good direction "
                    f"(known: {', '.join(DROPPABLE)})"
                )
        if not drops:
            raise ValueError("max_drop names no metric, so it checks nothing")
        return drops


class _GateFile(_Table):
    check: list[GateCheck] = Field(default_factory=list)
    baseline: BaselineConfig | None = None

    @model_validator(mode="after")
    def _gates_something(self) -> _GateFile:
        if not self.check and self.baseline is None:
            raise ValueError("defines no [[check]] and no [baseline]; nothing to gate")
        return self


@dataclass(frozen=True)
class GateConfig:
    """A parsed, validated gates file."""

    source: Path
    checks: tuple[GateCheck, ...] = ()
    baseline: BaselineConfig | None = None


_PROBLEMS: Final = {
    "metric": 'needs metric = "<name>" (a non-empty string)',
    "backend": "backend must be a non-empty string",
    "min": "min must be a number, got {input!r}",
    "max": "max must be a number, got {input!r}",
    "run": 'needs run = "<run folder>"',
    "max_drop": "max_drop must be a table of metric = allowed drop",
    "iterations": "iterations must be an integer >= 1, got {input!r}",
    "seed": "seed must be an integer >= 0, got {input!r}",
    "check": "'check' must be an array of tables ([[check]])",
}
"""What a wrong value of each key means, in the file's own words."""


def load_gates(path: Path) -> GateConfig:
    """Read and validate a gates TOML file; every problem is a GateConfigError naming it.

    A baseline `run` is relative to the gates file and must exist.
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
    try:
        parsed = _GateFile.model_validate(data)
    except ValidationError as error:
        raise GateConfigError(f"{path}: {_problem(error, data)}") from None
    baseline = parsed.baseline
    if baseline is not None:
        folder = baseline.run.expanduser()
        folder = folder if folder.is_absolute() else path.parent / folder
        if not folder.is_dir():
            raise GateConfigError(f"{path}: [baseline]: baseline run folder not found: {folder}")
        baseline = baseline.model_copy(update={"run": folder})
    return GateConfig(source=path, checks=tuple(parsed.check), baseline=baseline)


def _problem(error: ValidationError, data: Mapping[str, Any]) -> str:
    """The first problem pydantic found, as the gates file's author would say it; unknown keys
    first, all of one table's together."""
    errors = sorted(error.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    if first["type"] == "extra_forbidden":
        table = first["loc"][:-1]
        unknown = sorted(
            str(e["loc"][-1])
            for e in errors
            if e["type"] == "extra_forbidden" and e["loc"][:-1] == table
        )
        allowed = sorted(_model_at(table).model_fields)
        return _where(
            table,
            data,
            f"unknown key(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(allowed)})",
        )
    loc = first["loc"]
    if first["type"] == "model_type":  # a [[check]] or [baseline] that is not a table
        return _where(loc, data, "must be a table" + (" ([[check]])" if len(loc) > 1 else ""))
    if first["type"] == "value_error":  # our validators' own sentences
        message = str(first.get("ctx", {}).get("error", first["msg"]))
        return _where(loc[:-1] if loc and loc[-1] in _PROBLEMS else loc, data, message)
    if len(loc) == 3 and loc[:2] == ("baseline", "max_drop"):
        got = first.get("input")
        return _where(
            loc[:1], data, f"max_drop.{loc[2]} must be a non-negative number, got {got!r}"
        )
    key = str(loc[-1])
    problem = _PROBLEMS.get(key, f"{key}: {first['msg']}, got {{input!r}}")
    return _where(loc[:-1], data, problem.format(input=first.get("input")))


def _model_at(table: tuple[int | str, ...]) -> type[BaseModel]:
    """The model of the table at `table`: the file, [baseline], or a [[check]]."""
    if not table:
        return _GateFile
    return BaselineConfig if table[0] == "baseline" else GateCheck


def _where(table: tuple[int | str, ...], data: Mapping[str, Any], message: str) -> str:
    """`check #2 (gleu): ...`, `[baseline]: ...`, or the message alone at the top."""
    if not table:
        return message
    if table[0] == "baseline":
        return f"[baseline]: {message}"
    if len(table) == 1:
        return message  # 'check' itself
    number = int(table[1])
    raw = data.get("check", [])[number]
    metric = raw.get("metric") if isinstance(raw, dict) else None
    named = f" ({metric})" if isinstance(metric, str) and metric.strip() else ""
    return f"check #{number + 1}{named}: {message}"


# --- checking a run -------------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    """The outcome of one bound on one backend; `observed` None when the value was missing."""

    name: str
    backend: str | None
    observed: float | None
    bound: float
    passed: bool
    message: str


def run_gates(run: Path, config: GateConfig) -> list[GateResult]:
    """Every check of the config against the run; a missing value fails its check.

    Raises RunFolderError when the run (or the baseline) cannot be read at all, since then no
    check can say anything.
    """
    backends = read_summary(run)["backends"]
    results: list[GateResult] = []
    for check in config.checks:
        results.extend(_check_results(check, backends))
    if config.baseline is not None:
        results.extend(_baseline_results(run, config.baseline))
    return results


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _summary_value(entry: Mapping[str, Any], metric: str) -> tuple[float | None, str]:
    """A backend's value for a gate metric, or None and a sentence saying why it is missing.

    Dotted names walk the backend's object (`latency.total_ms.p95`); `error_rate`, `errors` and
    `examples` are backend fields; any other name is a key of the backend's `metrics`.
    """
    if "." in metric:
        parts = metric.split(".")
    elif metric in _BACKEND_FIELDS:
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
        (op, bound) for op, bound in ((">=", check.min), ("<=", check.max)) if bound is not None
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
        set(read_metrics(baseline.run)["backend"]) & set(read_metrics(run)["backend"])
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
            direction = DIRECTIONS[metric]
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


def format_gates(results: Sequence[GateResult]) -> str:
    """One aligned line per result (PASS/FAIL first) and a final pass/fail line."""
    rows = [
        [
            "PASS" if r.passed else "FAIL",
            r.backend or "-",
            r.name,
            number_text(r.observed),
            r.message,
        ]
        for r in results
    ]
    lines = text_table(["result", "backend", "check", "observed", "detail"], rows, right={3})
    failed = sum(not r.passed for r in results)
    if not results:
        lines.append("gate: no checks ran")
    elif failed:
        lines.append(f"gate: FAILED, {failed} of {plural(len(results), 'check')} failed")
    else:
        lines.append(f"gate: passed, all {plural(len(results), 'check')}")
    return "\n".join(lines)
