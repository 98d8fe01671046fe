"""`report.md` and a self-contained `report.html` for a run, with their plots in `plots/`:
score distributions per backend, a latency CDF with P50/P95/P99 marked, ERRANT per error type."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from .metrics import registry
from .run_folder import PLOTS, REPORT_HTML, REPORT_MD, UNEDITED

DISTRIBUTIONS = registry.metrics(
    "gleu_sentence", "errant_f05", "meaning_similarity", "edit_rate_source"
)
SCORES = registry.metrics(
    "gleu", "errant_f05", "errant_precision", "errant_recall", "meaning_similarity"
)
"""The report's selection of the registry's metrics: plotted, and the summary table's scores."""


def write_reports(folder: Path, frame: Any, summary: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    plots = folder / PLOTS
    plots.mkdir(exist_ok=True)
    made = [
        _distributions(frame, plots / "scores.png"),
        _latency_cdf(frame, summary, plots / "latency_cdf.png"),
        _error_types(summary, plots / "errant_types.png"),
    ]
    images = [path for path in made if path is not None]
    markdown = _markdown(summary, images, folder)
    (folder / REPORT_MD).write_text(markdown)
    (folder / REPORT_HTML).write_text(_html(summary, images))
    return images


def _distributions(frame: Any, path: Path) -> Path | None:
    import matplotlib.pyplot as plt

    columns = [m.name for m in DISTRIBUTIONS if m.name in frame and frame[m.name].notna().any()]
    if not columns:
        return None
    figure, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.2), squeeze=False)
    for axis, column in zip(axes[0], columns, strict=True):
        for backend, group in frame.groupby("backend"):
            values = group[column].dropna()
            if len(values):
                axis.hist(values, bins=20, alpha=0.5, label=str(backend))
        axis.set_title(column)
        axis.set_xlabel("score")
    axes[0][0].set_ylabel("examples")
    axes[0][-1].legend(fontsize="small")
    return _save(figure, path)


def _latency_cdf(frame: Any, summary: dict[str, Any], path: Path) -> Path | None:
    import matplotlib.pyplot as plt
    import numpy as np

    if "total_ms" not in frame or not frame["total_ms"].notna().any():
        return None
    figure, axis = plt.subplots(figsize=(7, 4))
    for backend, group in frame[frame["ok"] == True].groupby("backend"):  # noqa: E712
        values = np.sort(group["total_ms"].dropna().to_numpy())
        if not len(values):
            continue
        (line,) = axis.plot(values, np.arange(1, len(values) + 1) / len(values), label=str(backend))
        marks = summary["backends"].get(backend, {}).get("latency", {}).get("total_ms", {})
        for name in ("p50", "p95", "p99"):
            if marks.get(name) is not None:
                axis.axvline(marks[name], color=line.get_color(), linestyle=":", linewidth=1)
                axis.annotate(name.upper(), (marks[name], 0.02), color=line.get_color(), fontsize=7)
    target = registry.LATENCY_TARGET_MS
    axis.axvline(target, color="red", linewidth=1, label=f"{target / 1000:g} s target")
    axis.set_xlabel("total time per request (ms)")
    axis.set_ylabel("fraction of requests")
    axis.set_title("Latency CDF")
    axis.legend(fontsize="small")
    return _save(figure, path)


def _error_types(summary: dict[str, Any], path: Path) -> Path | None:
    import matplotlib.pyplot as plt
    import numpy as np

    tables = {b: s.get("errant_by_type", {}) for b, s in summary["backends"].items()}
    edits_per_kind: dict[str, int] = {}
    for table in tables.values():
        for kind, row in table.items():
            edits_per_kind[kind] = edits_per_kind.get(kind, 0) + row["tp"] + row["fp"] + row["fn"]
    if not edits_per_kind:
        return None
    kinds = sorted(sorted(edits_per_kind, key=edits_per_kind.__getitem__, reverse=True)[:25])
    figure, axis = plt.subplots(figsize=(max(7, 0.45 * len(kinds)), 4))
    width = 0.8 / max(1, len(tables))
    positions = np.arange(len(kinds))
    for index, (backend, table) in enumerate(tables.items()):
        values = [table.get(kind, {}).get("f05", 0.0) for kind in kinds]
        axis.bar(positions + index * width, values, width, label=backend)
    axis.set_xticks(positions + width * (len(tables) - 1) / 2, kinds, rotation=60, ha="right")
    axis.set_ylabel("ERRANT F0.5")
    axis.set_title("Grammar edits by ERRANT error type")
    axis.legend(fontsize="small")
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _rows(summary: dict[str, Any]) -> list[list[str]]:
    """One row per backend, its error rate and attempts beside its scores, then the do-nothing
    line (the unedited source), which has no errors or latency of its own."""
    rows = []
    for backend, data in summary["backends"].items():
        metrics, latency = data["metrics"], data["latency"]
        rows.append(
            [
                backend,
                data["model_id"],
                str(data["examples"]),
                f"{data['error_rate']:.1%}",
                _fmt(data.get("attempts")),
                _fmt(data.get("retried")),
                *(_fmt(metrics.get(m.name)) for m in SCORES),
                *(_fmt(latency["ttft_ms"].get(q), 0) for q in ("p50", "p95")),
                *(_fmt(latency["total_ms"].get(q), 0) for q in ("p50", "p95", "p99")),
            ]
        )
    unedited = summary.get("unedited_source")
    if unedited is not None:
        metrics = unedited["metrics"]
        rows.append(
            [UNEDITED, "-", str(unedited["examples"]), "-", "-", "-"]
            + [_fmt(metrics.get(m.name)) for m in SCORES]
            + ["-"] * 5
        )
    return rows


HEADER = [
    "backend",
    "model",
    "examples",
    "error rate",
    "attempts",
    "retried",
    *(m.heading for m in SCORES),
    "TTFT p50 ms",
    "TTFT p95 ms",
    "total p50 ms",
    "total p95 ms",
    "total p99 ms",
]
NOTE = (
    "Every row is scored: a failed answer counts as the unedited source (no edits), so a "
    "backend never scores better for failing, and its error rate stands beside its scores. "
    f"The `{UNEDITED}` row is the do-nothing line, each source scored as its own answer: a "
    "model is only useful above it. `attempts` counts the runner's requests over the run and "
    "its resumes; `retried`, the rows asked again after a transient failure. Latencies are "
    "over answered rows."
)


def _markdown(summary: dict[str, Any], images: list[Path], folder: Path) -> str:
    lines = [f"# Eval report: {summary['run']}", "", f"Dataset: `{summary['dataset']}`", ""]
    lines += ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(summary)]
    lines += [
        "",
        NOTE,
        "",
        "All metrics per backend: `gleu` and `errant_*` are corpus scores over the grammar rows; "
        "the rest are means of per-example values (deltas are output minus source):",
        "",
    ]
    for backend, data in summary["backends"].items():
        answered = data.get("answered", data["examples"] - data.get("errors", 0))
        lines.append(
            f"- **{backend}** (error rate {data['error_rate']:.1%}, {answered} of "
            f"{data['examples']} answered; failed rows scored as the {UNEDITED}): "
            + _means(data["metrics"])
        )
    if "unedited_source" in summary:
        lines.append(
            f"- **{UNEDITED}** (do nothing): {_means(summary['unedited_source']['metrics'])}"
        )
    lines.append("")
    lines += [f"![{image.stem}]({image.relative_to(folder)})" for image in images]
    return "\n".join(lines) + "\n"


def _means(metrics: dict[str, Any]) -> str:
    return ", ".join(
        f"{name} {_fmt(value)}" for name, value in metrics.items() if value is not None
    )


def _html(summary: dict[str, Any], images: list[Path]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in _rows(summary)
    )
    pictures = "".join(
        f'<figure><img alt="{image.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(image.read_bytes()).decode()}"><figcaption>{image.stem}</figcaption>'
        "</figure>"
        for image in images
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Eval report: {html.escape(summary['run'])}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%}</style>"
        f"</head><body><h1>Eval report: {html.escape(summary['run'])}</h1>"
        f"<p>Dataset: <code>{html.escape(summary['dataset'])}</code></p>"
        f"<table><tr>{head}</tr>{body}</table><p>{_code(html.escape(NOTE))}</p>{pictures}"
        "</body></html>\n"
    )


def _code(text: str) -> str:
    """Markdown's `code` spans as HTML."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", text)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
