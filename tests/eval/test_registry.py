"""The metric registry is the one source: what scoring computes, what the comparison judges,
what the gates accept, and what the report and the CLI show all come from it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from eval import cli, compare, gates, report
from eval.metrics import registry
from eval.run_folder import KEY_COLUMNS, read_metrics


def test_every_value_scoring_writes_is_registered(tmp_path: Path) -> None:
    """A per-example value without an entry would be dropped from metrics.csv unseen."""
    from eval.runner import RunPlan, run
    from eval.scoring import score_run
    from suggestions.backends.mock import MockBackend

    dataset = tmp_path / "d.jsonl"
    rows = [
        {"id": "g", "type": "grammar", "source": "She go home.", "references": ["She goes home."]},
        {"id": "c", "type": "clarity", "source": "Due to the fact that it rained, we left."},
        {"id": "s", "type": "style", "source": "The results was good.", "references": ["Good."]},
    ]
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "run"
    plan = RunPlan(dataset=dataset, backends=("mock",), out=out, concurrency=1)
    asyncio.run(run(plan, backends={"mock": MockBackend()}, progress=False))
    summary = score_run(out, reports=False)
    assert list(read_metrics(out).columns) == [*KEY_COLUMNS, *registry.EXAMPLE_COLUMNS]
    for scores in (summary["backends"]["mock"]["metrics"], summary["unedited_source"]["metrics"]):
        assert set(scores) <= set(registry.METRICS)
    assert "gleu" in summary["backends"]["mock"]["metrics"]


def test_entries_are_consistent() -> None:
    assert all(name == m.name for name, m in registry.METRICS.items())
    assert set(registry.DIRECTIONS.values()) <= {-1, 0, 1}
    assert set(registry.SERVING) == {"ttft_ms", "total_ms", "tokens_per_s", "retries"}
    targets = {m.name: m.target for m in registry.METRICS.values() if m.target is not None}
    assert targets == {"total_ms": registry.Target("p95", registry.LATENCY_TARGET_MS, "ms")}
    with pytest.raises(KeyError, match="unknown metric 'gleu_corpus'"):
        registry.metric("gleu_corpus")


def test_the_comparison_orders_metrics_by_the_registry() -> None:
    """Judged scores (higher is better, then lower), then serving, then neutral ones."""
    assert sorted(registry.EXAMPLE_COLUMNS, key=compare.metric_order) == [
        "gleu_sentence",
        "errant_precision",
        "errant_recall",
        "errant_f05",
        "meaning_similarity",
        "flesch_reading_ease_delta",
        "edit_rate_reference",
        "proselint_delta",
        "fk_grade_delta",
        "avg_sentence_length_delta",
        "passive_rate_delta",
        "wordiness_delta",
        "ttft_ms",
        "total_ms",
        "tokens_per_s",
        "edit_rate_source",
        "retries",
    ]
    assert compare.metric_order("retries") < compare.metric_order("a_column_not_registered")


def test_the_gates_take_droppable_metrics_from_the_registry() -> None:
    assert set(gates.DROPPABLE) == {
        m.name for m in registry.METRICS.values() if m.direction and m.scope != "corpus"
    }
    assert "gleu" not in gates.DROPPABLE  # a corpus score has no per-example pairs
    assert "error_rate" in gates.DROPPABLE and "edit_rate_source" not in gates.DROPPABLE


def test_the_latency_target_lives_in_the_registry_only(tmp_path: Path) -> None:
    shipped = gates.load_gates(Path(gates.__file__).with_name("gates.toml"))
    (latency,) = [c for c in shipped.checks if c.metric == "latency.total_ms.p95"]
    assert latency.max_value == registry.LATENCY_TARGET_MS
    options = cli._parser().parse_args(["latency"])
    assert options.target_ms == registry.LATENCY_TARGET_MS


def test_the_report_shows_registry_metrics() -> None:
    assert all(isinstance(m, registry.Metric) for m in (*report.SCORES, *report.DISTRIBUTIONS))
    headings = [m.heading for m in report.SCORES]
    assert report.HEADER[6 : 6 + len(headings)] == headings
