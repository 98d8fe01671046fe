"""Scores for a run folder: per-example metrics, per-backend summary, and the reports.

Grammar rows with references get sentence GLEU and ERRANT; every answered row gets the clarity
and style metrics and its latency. Corpus GLEU and ERRANT are computed per backend over the
grammar rows it answered; failures count in the error rate, not in the scores.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .metrics.clarity import clarity_scores
from .metrics.errant_f05 import ErrantCounts, errant_scores
from .metrics.gleu import corpus_gleu, sentence_gleu
from .metrics.latency import percentiles
from .metrics.nlp import prefetch, tokenize
from .metrics.style import MeaningModel, edit_rates, style_scores
from .runner import CONFIG, read_predictions

SUMMARY = "summary.json"
METRIC_COLUMNS = (
    "gleu_sentence",
    "errant_precision",
    "errant_recall",
    "errant_f05",
    "meaning_similarity",
    "edit_rate_source",
    "edit_rate_reference",
    "proselint_delta",
    "flesch_reading_ease_delta",
    "fk_grade_delta",
    "avg_sentence_length_delta",
    "passive_rate_delta",
    "wordiness_delta",
    "ttft_ms",
    "total_ms",
    "tokens_per_s",
    "retries",
)


def score_run(folder: Path, *, reports: bool = True) -> dict[str, Any]:
    """Write metrics.csv/.parquet, summary.json and (unless told not to) the reports."""
    import pandas as pd

    rows = read_predictions(folder)
    if not rows:
        raise ValueError(f"{folder} has no predictions to score")
    config = json.loads((folder / CONFIG).read_text())
    answered = [row for row in rows if row.get("ok")]
    tokens = GleuTokens(pretokenized=bool(config.get("pretokenized")))
    prefetch(
        text for row in answered for text in (row["source"], row["prediction"], *row["references"])
    )
    similarities = MeaningModel().similarity(
        [row["source"] for row in answered], [row["prediction"] for row in answered]
    )
    metrics: list[dict[str, Any]] = []
    for row, similarity in zip(answered, similarities, strict=True):
        metrics.append(example_metrics(row, tokens) | {"meaning_similarity": similarity})
    for row in rows:
        if not row.get("ok"):
            metrics.append(
                {
                    "example_id": row["example_id"],
                    "backend": row["backend"],
                    "type": row["type"],
                    "ok": False,
                    "error_kind": row.get("error_kind"),
                    "total_ms": row.get("total_ms"),
                    "retries": row.get("retries"),
                }
            )
    by_backend: dict[str, Any] = {}
    corpus_errant: dict[str, ErrantCounts] = {}
    for backend in config["backends_requested"]:
        mine = [row for row in rows if row["backend"] == backend]
        grammar = [
            row for row in mine if row.get("ok") and row["type"] == "grammar" and row["references"]
        ]
        summary = _backend_summary(backend, mine, metrics, config)
        if grammar:
            errant_corpus, per_sentence = errant_scores(
                [row["source"] for row in grammar],
                [row["prediction"] for row in grammar],
                [row["references"] for row in grammar],
            )
            corpus_errant[backend] = errant_corpus
            _add_errant_columns(metrics, backend, grammar, per_sentence)
            p, r, f = errant_corpus.scores()
            summary["metrics"] |= {
                "gleu": grammar_corpus_gleu(grammar, tokens),
                "errant_precision": p,
                "errant_recall": r,
                "errant_f05": f,
            }
            summary["errant_by_type"] = errant_corpus.type_table()
        by_backend[backend] = summary
    for backend, summary in by_backend.items():  # corpus scores win over per-example means
        summary["metrics"] = _means(metrics, backend) | summary["metrics"]
    frame = pd.DataFrame(
        metrics, columns=["example_id", "backend", "type", "ok", "error_kind", *METRIC_COLUMNS]
    )
    frame = frame.sort_values(["backend", "example_id"], kind="stable")
    frame.to_csv(folder / "metrics.csv", index=False)
    frame.to_parquet(folder / "metrics.parquet", index=False)
    summary_doc = {"run": folder.name, "dataset": config["dataset"], "backends": by_backend}
    (folder / SUMMARY).write_text(json.dumps(summary_doc, indent=2, default=_json_float) + "\n")
    if reports:
        from .report import write_reports

        write_reports(folder, frame, summary_doc)
    return summary_doc


def example_metrics(row: dict[str, Any], tokens: GleuTokens) -> dict[str, Any]:
    source, prediction, references = row["source"], row["prediction"], row["references"]
    values: dict[str, Any] = {
        "example_id": row["example_id"],
        "backend": row["backend"],
        "type": row["type"],
        "ok": True,
        "ttft_ms": row.get("ttft_ms"),
        "total_ms": row.get("total_ms"),
        "tokens_per_s": row.get("tokens_per_s"),
        "retries": row.get("retries"),
    }
    values |= clarity_scores(source, prediction)
    values |= style_scores(source, prediction, references)
    # Edit rates over the same tokens GLEU uses, so tokenized data (JFLEG) against a model's
    # plain text does not count `do n't` / `don't` as an edit.
    vs_source, vs_reference = edit_rates(
        tokens.given(source), tokens.answer(prediction), [tokens.given(r) for r in references]
    )
    values |= {"edit_rate_source": vs_source, "edit_rate_reference": vs_reference}
    if row["type"] == "grammar" and references:
        values["gleu_sentence"] = sentence_gleu(
            tokens.given(source),
            tokens.answer(prediction),
            [tokens.given(ref) for ref in references],
        )
    return values


def grammar_corpus_gleu(rows: list[dict[str, Any]], tokens: GleuTokens) -> float:
    """Corpus GLEU over rows with the same number of references (JFLEG's requirement); rows are
    grouped by reference count and weighted by size when counts differ."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(len(row["references"]), []).append(row)
    total = sum(len(group) for group in groups.values())
    score = 0.0
    for group in groups.values():
        result = corpus_gleu(
            [tokens.given(row["source"]) for row in group],
            [tokens.answer(row["prediction"]) for row in group],
            [[tokens.given(ref) for ref in row["references"]] for row in group],
        )
        score += result.mean * len(group) / total
    return score


def _add_errant_columns(
    metrics: list[dict[str, Any]],
    backend: str,
    grammar: list[dict[str, Any]],
    per_sentence: list[ErrantCounts],
) -> None:
    index = {(m["example_id"], m["backend"]): m for m in metrics}
    for row, counts in zip(grammar, per_sentence, strict=True):
        p, r, f = counts.scores()
        index[(row["example_id"], backend)] |= {
            "errant_precision": p,
            "errant_recall": r,
            "errant_f05": f,
        }


def _backend_summary(
    backend: str, rows: list[dict[str, Any]], metrics: list[dict[str, Any]], config: dict[str, Any]
) -> dict[str, Any]:
    answered = [row for row in rows if row.get("ok")]
    errors = len(rows) - len(answered)
    error_kinds: dict[str, int] = {}
    for row in rows:
        if not row.get("ok"):
            kind = str(row.get("error_kind"))
            error_kinds[kind] = error_kinds.get(kind, 0) + 1
    model_ids = sorted({str(row.get("model_id")) for row in answered}) or [
        config["backends"].get(backend, {}).get("model_id", "?")
    ]
    return {
        "model_id": ", ".join(model_ids),
        "label": config["backends"].get(backend, {}).get("label", backend),
        "examples": len(rows),
        "errors": errors,
        "error_rate": errors / len(rows) if rows else 0.0,
        "error_kinds": error_kinds,
        "metrics": {},
        "latency": {
            "ttft_ms": percentiles(
                [r["ttft_ms"] for r in answered if r.get("ttft_ms") is not None]
            ),
            "total_ms": percentiles(
                [r["total_ms"] for r in answered if r.get("total_ms") is not None]
            ),
        },
    }


def _means(metrics: list[dict[str, Any]], backend: str) -> dict[str, float | None]:
    means: dict[str, float | None] = {}
    for column in METRIC_COLUMNS:
        values = [
            float(m[column])
            for m in metrics
            if m["backend"] == backend and m.get("ok") and m.get(column) is not None
        ]
        values = [value for value in values if not math.isnan(value)]
        means[column] = sum(values) / len(values) if values else None
    return means


@dataclass(frozen=True)
class GleuTokens:
    """Texts as GLEU's whitespace tokens. JFLEG-style files come tokenized: their sources and
    references are left as they are (re-tokenizing would move the scores away from the
    official ones), and only a model's plain-text answer is tokenized to match."""

    pretokenized: bool = False

    def given(self, text: str) -> str:
        return text if self.pretokenized else self.answer(text)

    @staticmethod
    def answer(text: str) -> str:
        return " ".join(tokenize(text))


def _json_float(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
