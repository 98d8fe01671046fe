"""Eval run folders as tables and figures for the app's dashboard tab.

The eval harness leaves one folder per run with a `summary.json`, read here through
`eval.run_folder`; the metrics' titles, directions and the latency target come from
`eval.metrics.registry` (both light: no spaCy, no torch). Any metric in the summary may be
missing or null (a run without grammar rows has no GLEU or ERRANT), so the tables carry NaN
there rather than failing. Figures are built on `matplotlib.figure.Figure` directly: no pyplot,
so importing this module never picks or changes a GUI backend.

The harness scores a failed answer as the unedited source, so each score is read with its error
rate beside it (a column of the table, and under each bar of a backend that failed), and each
run's do-nothing line (`unedited_source` in the summary: the source as the answer) is a row of
its own, drawn hatched: a model is only useful above it.

Base vs run: the fine-tuning pipeline scores the stock base and the tuned run into two folders,
`<prefix>-base` and `<prefix>-tuned`; `find_pairs` finds them and `comparison_table` puts them
through `eval.compare.compare_runs` (paired bootstrap per backend and metric, B against A).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from eval import run_folder
from eval.compare import compare_runs, error_type_counts, plural
from eval.metrics import registry
from eval.run_folder import UNEDITED, RunFolderError

LATENCY_TARGET_MS = registry.LATENCY_TARGET_MS
"""The registry's P95 target for the total time of a suggestion."""
SCORE_METRICS = registry.metrics(
    "gleu",
    "errant_f05",
    "meaning_similarity",
    "edit_rate_source",
    "flesch_reading_ease_delta",
    "proselint_delta",
)
"""The dashboard's selection of the registry's metrics, one panel each."""
SCORE_COLUMNS = tuple(m.name for m in SCORE_METRICS)
SCORE_TABLE_COLUMNS = (
    "run",
    "backend",
    "label",
    "model_id",
    "examples",
    "errors",
    "error_rate",
    *SCORE_COLUMNS,
)
LATENCY_COLUMNS = (
    "run",
    "backend",
    "ttft_p50",
    "ttft_p95",
    "ttft_p99",
    "total_p50",
    "total_p95",
    "total_p99",
    "meets_target",
)
NO_RUNS = "no eval runs found"
BASE_SUFFIX, TUNED_SUFFIX = "-base", "-tuned"
COMPARISON_ITERATIONS = 500
"""Bootstrap rounds in the app: a 754-row pair compares in a fraction of a second. Each end of
the interval then wanders by about 0.14 standard errors from seed to seed (0.06 at the CLI's
2000), so a verdict on the edge is best settled with `python -m eval compare`."""
COMPARISON_COLUMNS = (
    "backend",
    "metric",
    "title",
    "n",
    "mean_a",
    "mean_b",
    "delta",
    "ci_low",
    "ci_high",
    "verdict",
)


ERROR_TYPE_COLUMNS = ("type", "tp_a", "tp_b", "fp_a", "fp_b", "fn_a", "fn_b", "fp_change")
"""Per ERRANT error type: edits right (tp), wrong (fp) and missed (fn) in runs A and B."""


class DashboardError(ValueError):
    """A run summary that cannot be read; the message names the file."""


def find_runs(root: Path | str) -> list[Path]:
    """Run folders: `root` itself and its immediate subfolders with a summary, newest first."""
    base = Path(root)
    if not base.is_dir():
        return []
    return run_folder.scored_folders([base, *(c for c in base.iterdir() if c.is_dir())])


def read_summary(run: Path | str) -> dict[str, Any]:
    """A run's summary (given the folder or the file), checked for the shape the tables need.

    `run` is filled in from the folder name when the file lacks it. The app can call this per
    folder to skip a broken run with a warning instead of losing the whole table.
    """
    return _summary(run)[1]


def _summary(run: Path | str) -> tuple[str, dict[str, Any]]:
    path = Path(run)
    folder = path.parent if path.is_file() or path.name == run_folder.SUMMARY else path
    path = run_folder.summary_path(folder)
    try:
        document = run_folder.read_summary(folder)
    except RunFolderError as error:
        raise DashboardError(str(error)) from error
    backends = document["backends"]
    if not all(isinstance(b, dict) for b in backends.values()):
        raise DashboardError(f"{path}: 'backends' must map each backend name to an object")
    for name, backend in backends.items():
        for key in ("metrics", "latency"):
            if not isinstance(backend.get(key, {}), dict | None):
                raise DashboardError(f"{path}: backends.{name}.{key} is not an object")
    if not isinstance(document.get("run"), str) or not document["run"]:
        document["run"] = path.parent.name
    return str(path), document


@dataclass(frozen=True)
class RunPair:
    """The stock base and the fine-tuned run, scored by the same pipeline on one dataset."""

    prefix: str
    base: Path
    tuned: Path


def list_runs(root: Path | str) -> list[Path]:
    """Folders under `root` (and `root` itself) where a run was started or scored, newest
    first: what the comparison can be asked about, so an unscored one is named, not hidden."""
    base = Path(root)
    if not base.is_dir():
        return []
    folders = [base, *(c for c in base.iterdir() if c.is_dir())]
    found = [f for f in folders if run_folder.has_run(f) or run_folder.has_summary(f)]
    return sorted(sorted(found, key=lambda f: f.name), key=_stamp, reverse=True)


def find_pairs(root: Path | str) -> list[RunPair]:
    """Every `<prefix>-base` with a `<prefix>-tuned` beside it, the newest pair first."""
    runs = {folder.name: folder for folder in list_runs(root)}
    pairs = [
        RunPair(name.removesuffix(BASE_SUFFIX), folder, runs[tuned])
        for name, folder in runs.items()
        if name.endswith(BASE_SUFFIX)
        and (tuned := name.removesuffix(BASE_SUFFIX) + TUNED_SUFFIX) in runs
    ]
    return sorted(pairs, key=lambda p: max(_stamp(p.base), _stamp(p.tuned)), reverse=True)


def comparison_table(
    run_a: Path | str, run_b: Path | str, *, iterations: int = COMPARISON_ITERATIONS
) -> pd.DataFrame:
    """B against A per shared backend and metric: paired means, delta, 95% CI and verdict.

    A folder that is missing, unscored or damaged, or two runs with no backend in common, is a
    DashboardError saying which and what to do, so the tab shows a message instead of failing.
    """
    first, second = Path(run_a), Path(run_b)
    if first.resolve() == second.resolve():
        raise DashboardError(f"run A and run B are both {first.name}: pick two different runs")
    for folder in (first, second):
        _require_scored(folder)
    try:
        deltas = compare_runs(first, second, iterations=iterations)
    except ValueError as error:  # a RunFolderError names the file and what to do
        raise DashboardError(str(error)) from error
    if not deltas:
        raise DashboardError(f"{first.name} and {second.name} have no backend in common")
    titles = {name: entry.title for name, entry in registry.METRICS.items()}
    rows = [asdict(d) | {"title": titles.get(d.metric, d.metric)} for d in deltas]
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def error_types_table(
    run_a: Path | str, run_b: Path | str, backend: str = "custom"
) -> pd.DataFrame:
    """Which grammar edits changed, per official ERRANT type, the wrong edits that grew most
    first (empty when the runs scored no grammar rows)."""
    try:
        types = error_type_counts(Path(run_a), Path(run_b), backend)
    except ValueError as error:  # a RunFolderError names the file and what to do
        raise DashboardError(str(error)) from error
    rows = [(t.kind, t.a[0], t.b[0], t.a[1], t.b[1], t.a[2], t.b[2], t.fp_change) for t in types]
    return pd.DataFrame(rows, columns=list(ERROR_TYPE_COLUMNS))


def comparison_notes(run_a: Path | str, run_b: Path | str, table: pd.DataFrame) -> list[str]:
    """What to read beside the table: the verdict count, backends only one run has, and a
    warning when the two runs were not made on the same dataset file."""
    first, second = Path(run_a), Path(run_b)
    counts = table["verdict"].value_counts()
    better, worse, same, changed = (
        int(counts.get(verdict, 0)) for verdict in ("better", "worse", "no change", "changed")
    )
    summary = f"B is better on {plural(better, 'metric')}, worse on {worse}, unchanged on {same}"
    notes = [summary + (f", changed on {changed} (neutral)." if changed else ".")]
    in_a, in_b = (set(_summary(folder)[1]["backends"]) for folder in (first, second))
    for folder, own, other in ((first, in_a, in_b), (second, in_b, in_a)):
        if only := sorted(own - other):
            notes.append(f"Only in {folder.name}, not compared: {', '.join(only)}.")
    configs = [run_folder.find_config(f) or {} for f in (first, second)]
    hashes = [config.get("dataset_sha256") for config in configs]
    if None not in hashes and hashes[0] != hashes[1]:
        names = " and ".join(str(c.get("dataset")) for c in configs)
        notes.append(f"Warning: the two runs used different datasets ({names}).")
    return notes


def _require_scored(folder: Path) -> None:
    if not folder.is_dir():
        raise DashboardError(f"{folder.name}: run folder not found ({folder})")
    if not run_folder.has_metrics(folder):
        started = run_folder.has_run(folder)
        raise DashboardError(
            f"{folder.name} is not scored yet: run `python -m eval score {folder}`"
            if started
            else f"{folder.name} is not an eval run folder (no {run_folder.CONFIG})"
        )


def _stamp(folder: Path) -> float:
    """When the run last changed: its summary, else its config (0 for one removed meanwhile)."""
    for path in (run_folder.summary_path(folder), folder / run_folder.CONFIG):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0


def scores_table(runs: Sequence[Path]) -> pd.DataFrame:
    """One row per (run, backend): who it was, how many examples failed, and the headline
    scores; then the run's do-nothing row (`UNEDITED`, no errors of its own) when it has one."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        where, document = _summary(run)
        for backend, entry in document["backends"].items():
            metrics = entry.get("metrics") or {}
            rows.append(
                {
                    "run": document["run"],
                    "backend": backend,
                    "label": str(entry.get("label") or backend),
                    "model_id": str(entry.get("model_id") or ""),
                    "examples": _count(entry.get("examples"), where, f"{backend}.examples"),
                    "errors": _count(entry.get("errors"), where, f"{backend}.errors"),
                    "error_rate": _number(entry.get("error_rate"), where, f"{backend}.error_rate"),
                    **_scores(metrics, where, f"{backend}.metrics"),
                }
            )
        unedited = document.get("unedited_source")
        if unedited is not None:
            if not isinstance(unedited, dict) or not isinstance(
                unedited.get("metrics") or {}, dict
            ):
                raise DashboardError(f"{where}: unedited_source is not an object with metrics")
            rows.append(
                {
                    "run": document["run"],
                    "backend": UNEDITED,
                    "label": str(unedited.get("label") or "do nothing"),
                    "model_id": "",
                    "examples": _count(unedited.get("examples"), where, "unedited_source.examples"),
                    "errors": None,
                    "error_rate": math.nan,
                    **_scores(unedited.get("metrics") or {}, where, "unedited_source.metrics"),
                }
            )
    table = pd.DataFrame(rows, columns=list(SCORE_TABLE_COLUMNS))
    for column in ("examples", "errors"):
        table[column] = table[column].astype("Int64")  # a count, or <NA> when not given
    for column in ("error_rate", *SCORE_COLUMNS):
        table[column] = table[column].astype("float64")
    return table


def _scores(metrics: dict[str, Any], where: str, prefix: str) -> dict[str, float]:
    return {
        column: _number(metrics.get(column), where, f"{prefix}.{column}")
        for column in SCORE_COLUMNS
    }


def latency_table(runs: Sequence[Path]) -> pd.DataFrame:
    """One row per (run, backend): latency percentiles in ms and whether P95 meets the target."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        where, document = _summary(run)
        for backend, entry in document["backends"].items():
            latency = entry.get("latency") or {}
            row: dict[str, Any] = {"run": document["run"], "backend": backend}
            for kind in ("ttft", "total"):
                spread = latency.get(f"{kind}_ms") or {}
                if not isinstance(spread, dict):
                    raise DashboardError(f"{where}: {backend}.latency.{kind}_ms is not an object")
                for q in ("p50", "p95", "p99"):
                    field = f"{backend}.latency.{kind}_ms.{q}"
                    row[f"{kind}_{q}"] = _number(spread.get(q), where, field)
            row["meets_target"] = bool(row["total_p95"] < LATENCY_TARGET_MS)  # NaN: False
            rows.append(row)
    table = pd.DataFrame(rows, columns=list(LATENCY_COLUMNS))
    for column in LATENCY_COLUMNS[2:-1]:
        table[column] = table[column].astype("float64")
    table["meets_target"] = table["meets_target"].astype(bool)
    return table


def scores_figure(table: pd.DataFrame) -> Figure:
    """One panel per score, one coloured bar per run/backend: scales differ, so panels do too."""
    if table.empty:
        return _message_figure(NO_RUNS)
    names = _row_names(table)
    unedited = (table["backend"] == UNEDITED).to_numpy(dtype=bool)
    colours = [
        _DO_NOTHING_COLOUR if flag else colour
        for flag, colour in zip(unedited, _colours(len(names)), strict=True)
    ]
    failed = table["error_rate"].to_numpy(dtype=float)
    figure = Figure(figsize=(12, 7), layout="constrained")
    axes = figure.subplots(2, 3).ravel()
    for ax, column in zip(axes, SCORE_COLUMNS, strict=True):
        values = (
            table[column].to_numpy(dtype=float) if column in table else np.full(len(names), np.nan)
        )
        positions = np.arange(len(names))
        bars = ax.bar(positions, np.nan_to_num(values), color=colours, width=0.8)
        for bar, flag in zip(bars, unedited, strict=True):
            if flag:
                bar.set_hatch("//")
                bar.set_edgecolor("0.45")
        ax.set_title(registry.metric(column).label, fontsize=11)
        ax.set_xticks([])
        ax.axhline(0.0, color="0.3", linewidth=0.8)
        finite = values[np.isfinite(values)]
        top = float(np.abs(finite).max()) if finite.size else 1.0
        for x, value, rate in zip(positions, values, failed, strict=True):
            text = "n/a" if math.isnan(value) else f"{value + 0.0:.2f}".replace("-0.00", "0.00")
            if rate > 0:  # NaN (the do-nothing row) compares False
                text += f"\n{rate:.0%} failed"
            offset = top * 0.02 if math.isnan(value) or value >= 0 else -top * 0.02
            ax.text(
                x,
                (0.0 if math.isnan(value) else value) + offset,
                text,
                ha="center",
                va="bottom" if offset >= 0 else "top",
                fontsize=8 if len(names) <= 4 else 7,
                color="0.4" if math.isnan(value) else "0.1",
            )
        low = min(0.0, float(finite.min()) if finite.size else 0.0)
        high = max(0.0, float(finite.max()) if finite.size else 1.0)
        margin = (high - low) * 0.15 or 0.1
        ax.set_ylim(low - (margin if low < 0 else 0.0), high + margin)
        _narrow(ax, len(names))
    _legend(figure, names, colours, unedited)
    return figure


def latency_figure(table: pd.DataFrame) -> Figure:
    """P50/P95/P99 total latency per run/backend, in seconds, against the dashed 2 s target."""
    if table.empty:
        return _message_figure(NO_RUNS)
    few = len(table) <= 3  # room for upright two-line labels; more rows get slanted ones
    names = _row_names(table, separator="\n" if few else ": ")
    figure = Figure(figsize=(max(6.0, 1.3 * len(names) + 3.0), 4.8), layout="constrained")
    ax = figure.subplots()
    positions = np.arange(len(names))
    width = 0.26
    seconds = table[["total_p50", "total_p95", "total_p99"]].to_numpy(dtype=float) / 1000.0
    shades = ("#9ecae1", "#4292c6", "#08519c")
    for column, (name, shade) in enumerate(zip(("P50", "P95", "P99"), shades, strict=True)):
        values = seconds[:, column]
        xs = positions + (column - 1) * width
        ax.bar(xs, np.nan_to_num(values), width=width, color=shade, label=name)
        for x, value in zip(xs, values, strict=True):
            if math.isnan(value):
                ax.text(x, 0.0, "n/a", ha="center", va="bottom", fontsize=7, color="0.4")
    target = LATENCY_TARGET_MS / 1000.0
    ax.axhline(target, color="#d62728", linestyle="--", linewidth=1.5, label=f"{target:g} s target")
    ax.set_xticks(
        positions,
        names,
        rotation=0 if few else 30,
        ha="center" if few else "right",
        fontsize=8,
    )
    ax.set_ylabel("total latency (s)")
    ax.set_title("Total latency per run and backend (lower is better)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    _narrow(ax, len(names))
    known = seconds[np.isfinite(seconds)]
    ax.set_ylim(0.0, max(target, float(known.max()) if known.size else 0.0) * 1.2)
    return figure


def _narrow(ax: Any, count: int) -> None:
    """Keep one or two groups from stretching across the whole panel."""
    pad = max(0.0, (3 - count) / 2)
    ax.set_xlim(-0.5 - pad, count - 0.5 + pad)


def _row_names(table: pd.DataFrame, separator: str = ": ") -> list[str]:
    pairs = zip(table["run"], table["backend"], strict=True)
    return [f"{run}{separator}{backend}" for run, backend in pairs]


_DO_NOTHING_COLOUR = "#d9d9d9"


def _colours(count: int) -> list[str]:
    palette = (
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
    )
    return [palette[i % len(palette)] for i in range(count)]


def _legend(
    figure: Figure, names: list[str], colours: list[str], hatched: Sequence[bool] = ()
) -> None:
    flags = list(hatched) or [False] * len(colours)
    handles = [
        Patch(facecolor=colour, edgecolor="0.45", hatch="//") if flag else Patch(color=colour)
        for colour, flag in zip(colours, flags, strict=True)
    ]
    figure.legend(
        handles,
        names,
        loc="outside lower center",
        ncols=min(4, len(names)),
        fontsize=9,
        frameon=False,
    )


def _message_figure(message: str) -> Figure:
    figure = Figure(figsize=(8, 3))
    ax = figure.subplots()
    ax.axis("off")
    ax.text(
        0.5,
        0.5,
        message,
        ha="center",
        va="center",
        fontsize=14,
        color="0.35",
        transform=ax.transAxes,
    )
    return figure


def _number(value: Any, where: str, field: str) -> float:
    """A float from the summary; null or missing is NaN, anything else not a number is an error."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DashboardError(f"{where}: {field} is {value!r}, not a number")
    return float(value)


def _count(value: Any, where: str, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DashboardError(f"{where}: {field} is {value!r}, not a count")
    return value
