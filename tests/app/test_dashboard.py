import io
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from app.dashboard import (
    LATENCY_COLUMNS,
    SCORE_COLUMNS,
    SCORE_TABLE_COLUMNS,
    UNEDITED,
    DashboardError,
    find_runs,
    latency_figure,
    latency_table,
    read_summary,
    scores_figure,
    scores_table,
)


def _backend(**changes: Any) -> dict[str, Any]:
    """A backend entry shaped like eval/scoring.py writes it."""
    entry: dict[str, Any] = {
        "model_id": "qwen2.5-coder-1.5b-instruct",
        "label": "127.0.0.1: qwen2.5-coder-1.5b-instruct",
        "examples": 100,
        "errors": 2,
        "error_rate": 0.02,
        "error_kinds": {"timeout": 2},
        "metrics": {
            "gleu": 0.48,
            "errant_f05": 0.57,
            "errant_precision": 0.62,
            "meaning_similarity": 0.95,
            "edit_rate_source": 0.16,
            "proselint_delta": -0.06,
            "flesch_reading_ease_delta": 0.3,
            "total_ms": 4769.9,
        },
        "latency": {
            "ttft_ms": {"p50": 522.7, "p90": 1637.2, "p95": 1884.4, "p99": 4245.4},
            "total_ms": {"p50": 1489.9, "p90": 1801.4, "p95": 1906.0, "p99": 3742.4},
        },
        "errant_by_type": {"M:DET": {"tp": 12, "fp": 3, "fn": 8}},
    }
    return entry | changes


def _write_run(root: Path, name: str, backends: dict[str, Any], *, mtime: float) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    summary = folder / "summary.json"
    summary.write_text(json.dumps({"run": name, "dataset": "/data/dev.src", "backends": backends}))
    os.utime(summary, (mtime, mtime))
    return folder


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """Two runs: a full grammar run, and a style run without grammar scores or latencies."""
    root = tmp_path / "runs"
    _write_run(root, "jfleg-dev-100", {"custom": _backend()}, mtime=1_000_000)
    style = {
        "custom": _backend(
            metrics={"meaning_similarity": 0.91, "flesch_reading_ease_delta": 4.5, "gleu": None},
            latency={
                "ttft_ms": {"p50": None, "p90": None, "p95": None, "p99": None},
                "total_ms": {"p50": None, "p90": None, "p95": None, "p99": None},
            },
        ),
        "baseline": _backend(
            label="baseline prompt", errors=0, error_rate=0.0, metrics={"proselint_delta": 0.1}
        ),
    }
    _write_run(root, "style-50", style, mtime=2_000_000)
    (root / "notes").mkdir()  # a folder without a summary is not a run
    (root / "notes" / "readme.txt").write_text("not a run")
    (root / "stray.json").write_text("{}")
    return root


def _png_size(figure: Figure) -> tuple[int, int]:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=50)
    data = buffer.getvalue()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


def test_find_runs_lists_run_folders_newest_first(runs: Path) -> None:
    assert find_runs(runs) == [runs / "style-50", runs / "jfleg-dev-100"]
    assert find_runs(str(runs / "jfleg-dev-100")) == [runs / "jfleg-dev-100"]  # root is a run


def test_find_runs_on_a_missing_or_empty_root_finds_nothing(tmp_path: Path) -> None:
    assert find_runs(tmp_path / "nowhere") == []
    assert find_runs(tmp_path) == []


def test_scores_table_has_one_row_per_run_and_backend(runs: Path) -> None:
    table = scores_table(find_runs(runs))

    assert list(table.columns) == list(SCORE_TABLE_COLUMNS)
    assert list(table.columns[-len(SCORE_COLUMNS) :]) == list(SCORE_COLUMNS)
    assert list(zip(table["run"], table["backend"], strict=True)) == [
        ("style-50", "custom"),
        ("style-50", "baseline"),
        ("jfleg-dev-100", "custom"),
    ]
    full = table.iloc[2]
    assert full["label"] == "127.0.0.1: qwen2.5-coder-1.5b-instruct"
    assert full["model_id"] == "qwen2.5-coder-1.5b-instruct"
    assert (full["examples"], full["errors"], full["error_rate"]) == (100, 2, 0.02)
    assert [full[c] for c in SCORE_COLUMNS] == [0.48, 0.57, 0.95, 0.16, 0.3, -0.06]
    style = table.iloc[0]
    assert math.isnan(style["gleu"])  # null
    assert math.isnan(style["errant_f05"])  # missing
    assert (style["meaning_similarity"], style["flesch_reading_ease_delta"]) == (0.91, 4.5)
    assert table.iloc[1]["label"] == "baseline prompt"
    assert table.iloc[1]["proselint_delta"] == 0.1
    assert table["examples"].dtype == "Int64"
    assert all(table[c].dtype == "float64" for c in SCORE_COLUMNS)


def test_latency_table_flags_the_two_second_target(runs: Path) -> None:
    table = latency_table(find_runs(runs))

    assert list(table.columns) == list(LATENCY_COLUMNS)
    full = table[table["run"] == "jfleg-dev-100"].iloc[0]
    assert (full["ttft_p50"], full["ttft_p95"], full["ttft_p99"]) == (522.7, 1884.4, 4245.4)
    assert (full["total_p50"], full["total_p95"], full["total_p99"]) == (1489.9, 1906.0, 3742.4)
    assert bool(full["meets_target"]) is True  # P95 1.9 s; P99 may be over
    unknown = table[(table["run"] == "style-50") & (table["backend"] == "custom")].iloc[0]
    assert math.isnan(unknown["total_p95"])
    assert bool(unknown["meets_target"]) is False
    assert table["meets_target"].dtype == bool


def test_p95_at_or_over_the_target_fails_it(tmp_path: Path) -> None:
    at = _backend(latency={"total_ms": {"p50": 900.0, "p95": 2000.0, "p99": 2100.0}})
    _write_run(tmp_path, "r", {"at": at, "nolatency": _backend(latency=None)}, mtime=1.0)
    table = latency_table([tmp_path / "r"])
    assert table["meets_target"].tolist() == [False, False]
    assert math.isnan(table.iloc[0]["ttft_p50"])


def test_the_eval_harness_summary_is_read(tmp_path: Path) -> None:
    """A summary as the harness writes it (eval/scoring.py), corpus scores and all."""
    _write_run(
        tmp_path,
        "jfleg-dev-100",
        {"custom": _backend(), "mock": _backend(metrics={}, latency={})},
        mtime=5.0,
    )
    scores = scores_table(find_runs(tmp_path))
    assert scores["backend"].tolist() == ["custom", "mock"]
    assert scores.iloc[1][list(SCORE_COLUMNS)].isna().all()


def test_the_do_nothing_line_and_each_error_rate_are_shown(tmp_path: Path) -> None:
    """A failed answer is scored as the unedited source, so every score is read beside its
    error rate, against the run's do-nothing line."""
    stock = _backend(errors=69, error_rate=0.69, metrics={"gleu": 0.211, "errant_f05": 0.05})
    unedited = {
        "label": "the source as the answer (do nothing)",
        "examples": 100,
        "metrics": {
            "gleu": 0.3821,
            "errant_f05": 0.0,
            "meaning_similarity": 1.0,
            "edit_rate_source": 0.0,
            "flesch_reading_ease_delta": 0.0,
            "proselint_delta": 0.0,
        },
    }
    folder = _write_run(tmp_path, "jfleg-dev", {"stock": stock, "tuned": _backend()}, mtime=1.0)
    document = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps(document | {"unedited_source": unedited}))

    table = scores_table([folder])
    assert table["backend"].tolist() == ["stock", "tuned", UNEDITED]
    line = table.iloc[2]
    assert (line["gleu"], line["meaning_similarity"], line["examples"]) == (0.3821, 1.0, 100)
    assert line["label"] == "the source as the answer (do nothing)"
    assert math.isnan(line["error_rate"]) and line["errors"] is pd.NA  # not a backend
    assert table.iloc[0]["error_rate"] == 0.69
    assert latency_table([folder])["backend"].tolist() == ["stock", "tuned"]

    figure = scores_figure(table)
    gleu = figure.get_axes()[0]
    assert [text.get_text() for text in gleu.texts] == [
        "0.21\n69% failed",
        "0.48\n2% failed",
        "0.38",
    ]
    assert [bar.get_hatch() for bar in gleu.patches] == [None, None, "//"]
    legend = figure.legends[0]
    assert [text.get_text() for text in legend.get_texts()][-1] == f"jfleg-dev: {UNEDITED}"
    handle = legend.legend_handles[-1]
    assert isinstance(handle, Patch) and handle.get_hatch() == "//"

    document["unedited_source"] = {"metrics": {"gleu": "high"}}
    (folder / "summary.json").write_text(json.dumps(document))
    with pytest.raises(DashboardError, match=r"unedited_source.metrics.gleu is 'high'"):
        scores_table([folder])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"run": "x"}', "'backends' must map"),
        ('{"backends": {"custom": 3}}', "'backends' must map"),
        ('{"backends": {"custom": {"metrics": []}}}', "backends.custom.metrics is not an object"),
        (
            '{"backends": {"custom": {"metrics": {"gleu": "high"}}}}',
            "custom.metrics.gleu is 'high'",
        ),
        ('{"backends": {"custom": {"examples": -1}}}', "custom.examples is -1, not a count"),
    ],
)
def test_a_malformed_summary_is_an_error_naming_the_file(
    runs: Path, content: str, message: str
) -> None:
    broken = runs / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text(content)
    found = find_runs(runs)
    assert broken in found
    with pytest.raises(DashboardError, match=message) as caught:
        scores_table(found)
    assert str(broken / "summary.json") in str(caught.value)
    assert len(scores_table([path for path in found if path != broken])) == 3


def test_latency_table_refuses_a_malformed_summary_too(runs: Path) -> None:
    (runs / "style-50" / "summary.json").write_bytes(b"\xff\xfe not text")
    with pytest.raises(DashboardError, match=r"style-50.summary\.json: .*not valid JSON"):
        latency_table(find_runs(runs))
    bad_latency = _backend(latency={"total_ms": {"p95": "fast"}})
    _write_run(runs, "odd", {"custom": bad_latency}, mtime=1.0)
    with pytest.raises(DashboardError, match=r"custom.latency.total_ms.p95 is 'fast'"):
        latency_table([runs / "odd"])


def test_a_missing_summary_is_an_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(DashboardError, match="cannot read") as caught:
        scores_table([tmp_path / "gone"])
    assert str(tmp_path / "gone" / "summary.json") in str(caught.value)


def test_run_name_falls_back_to_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "nightly-7"
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps({"backends": {"custom": _backend()}}))
    assert read_summary(folder)["run"] == "nightly-7"
    assert scores_table([folder])["run"].tolist() == ["nightly-7"]


def test_no_runs_give_empty_tables_with_the_columns() -> None:
    assert list(scores_table([]).columns) == list(SCORE_TABLE_COLUMNS)
    assert list(latency_table([]).columns) == list(LATENCY_COLUMNS)
    assert scores_table([]).empty and latency_table([]).empty


@pytest.mark.parametrize("rows", [1, 8])
def test_figures_render_for_one_to_eight_rows(tmp_path: Path, rows: int) -> None:
    backends = {
        f"backend-{n}": _backend(
            metrics={"gleu": 0.1 * n, "flesch_reading_ease_delta": 3.0 - n}
            | ({"errant_f05": None} if n % 2 else {"errant_f05": 0.5}),
            latency={"total_ms": {"p50": 500.0 * (n + 1), "p95": 900.0 * (n + 1), "p99": None}},
        )
        for n in range(rows)
    }
    _write_run(tmp_path, "many", backends, mtime=1.0)
    scores, latency = scores_table([tmp_path / "many"]), latency_table([tmp_path / "many"])
    assert len(scores) == len(latency) == rows

    score_figure = scores_figure(scores)
    assert _png_size(score_figure) == (600, 350)  # 12 x 7 inches at 50 dpi
    panels = score_figure.get_axes()
    assert panels[0].get_title().startswith("GLEU")
    assert len(panels) == len(SCORE_COLUMNS)
    assert all(len(ax.patches) == rows for ax in panels)
    legend = [text.get_text() for text in score_figure.legends[0].get_texts()]
    assert legend == [f"many: backend-{n}" for n in range(rows)]

    latency_plot = latency_figure(latency)
    width, height = _png_size(latency_plot)
    assert width >= 300 and height == 240
    (ax,) = latency_plot.get_axes()
    assert len(ax.patches) == 3 * rows  # P50, P95, P99 for each row
    (target,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert list(target.get_ydata()) == [2.0, 2.0]  # seconds
    assert "2 s target" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_empty_tables_give_a_figure_that_says_so() -> None:
    for figure in (scores_figure(scores_table([])), latency_figure(latency_table([]))):
        texts = [text.get_text() for ax in figure.get_axes() for text in ax.texts]
        assert texts == ["no eval runs found"]
        assert _png_size(figure) == (400, 150)


def test_drawing_never_loads_pyplot(tmp_path: Path) -> None:
    """pyplot would pick a GUI backend behind the app's back; Figure needs none."""
    _write_run(tmp_path, "r", {"custom": _backend()}, mtime=1.0)
    script = (
        "import sys, io; from app.dashboard import *; "
        f"runs = find_runs({str(tmp_path)!r}); "
        "scores_figure(scores_table(runs)).savefig(io.BytesIO()); "
        "latency_figure(latency_table(runs)).savefig(io.BytesIO()); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'"
    )
    root = Path(__file__).parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_panels_and_the_target_come_from_the_metric_registry(runs: Path) -> None:
    """Titles, arrows and the 2 s line are the registry's; the dashboard only picks metrics."""
    from app import dashboard
    from eval.metrics import registry

    assert dashboard.LATENCY_TARGET_MS == registry.LATENCY_TARGET_MS
    figure = scores_figure(scores_table(find_runs(runs)))
    titles = [ax.get_title() for ax in figure.get_axes()]
    assert titles == [registry.metric(name).label for name in SCORE_COLUMNS]
    assert titles[0] == "GLEU ↑" and titles[3] == "edit rate vs source"
