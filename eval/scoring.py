"""Scores for a run folder: per-example metrics, per-backend summary, and the reports.

Every row is scored. A failed answer counts as the unedited source: the author got no edit, so
no edit is what is scored. GLEU and ERRANT see the source as the hypothesis (ERRANT finds no
edit: no true or false positive, every reference edit missed), meaning similarity is 1.0 (the
text is the source), edit rates and every clarity and proselint change are those of the source
against itself (0 against the source). A backend therefore never scores better, nor on other
rows, for failing, and its error rate stands beside every score. Serving columns (time to first
token, total time, tokens/s, client retries) describe answers: their means and percentiles are
over the answered rows. Corpus GLEU and ERRANT are computed per backend over every grammar row
with references.

The summary also holds the do-nothing line (`unedited_source`): each example scored with its
source as the answer, the same way. A model is only useful above it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .metrics.clarity import clarity_scores
from .metrics.errant_f05 import ErrantCounts, errant_scores
from .metrics.gleu import corpus_gleu, sentence_gleu
from .metrics.latency import percentiles
from .metrics.nlp import answer_tokens, prefetch, tokenize
from .metrics.registry import EXAMPLE_COLUMNS, SERVING
from .metrics.style import MeaningModel, edit_rates, style_scores
from .run_folder import (
    KEY_COLUMNS,
    UNEDITED,
    read_config,
    read_predictions,
    write_metrics,
    write_summary,
)


def score_run(folder: Path, *, reports: bool = True) -> dict[str, Any]:
    """Write metrics.csv/.parquet, summary.json and (unless told not to) the reports."""
    import pandas as pd

    rows = [_as_scored(row) for row in read_predictions(folder)]
    if not rows:
        raise ValueError(f"{folder} has no predictions to score")
    config = read_config(folder)
    tokens = GleuTokens(pretokenized=bool(config.get("pretokenized")))
    unedited = _unedited_rows(rows)
    prefetch(
        text for row in rows for text in (row["source"], row["prediction"], *row["references"])
    )
    answered = [row for row in rows if row["ok"]]
    similarities = iter(
        MeaningModel().similarity(
            [row["source"] for row in answered], [row["prediction"] for row in answered]
        )
    )
    metrics = [
        example_metrics(row, tokens)
        | {"meaning_similarity": next(similarities) if row["ok"] else 1.0}
        for row in rows
    ]
    by_backend: dict[str, Any] = {}
    for backend in config["backends_requested"]:
        mine = [row for row in rows if row["backend"] == backend]
        summary = _backend_summary(backend, mine, config)
        summary |= _corpus_scores(mine, metrics, tokens)
        by_backend[backend] = summary
    for backend, summary in by_backend.items():  # corpus scores win over per-example means
        summary["metrics"] = _means(metrics, backend) | summary["metrics"]
    unedited_metrics = [
        example_metrics(row, tokens) | {"meaning_similarity": 1.0} for row in unedited
    ]
    do_nothing = _corpus_scores(unedited, unedited_metrics, tokens)
    do_nothing["metrics"] = _means(unedited_metrics, UNEDITED) | do_nothing["metrics"]
    frame = pd.DataFrame(metrics, columns=[*KEY_COLUMNS, *EXAMPLE_COLUMNS])
    frame = frame.sort_values(["backend", "example_id"], kind="stable")
    write_metrics(folder, frame)
    summary_doc = {
        "run": folder.name,
        "dataset": config["dataset"],
        "failed_rows_scored_as": UNEDITED,
        "unedited_source": {
            "label": "the source as the answer (do nothing)",
            "examples": len(unedited),
            "metrics": do_nothing["metrics"],
        },
        "backends": by_backend,
    }
    write_summary(folder, summary_doc)
    if reports:
        from .report import write_reports

        write_reports(folder, frame, summary_doc)
    return summary_doc


def _as_scored(row: dict[str, Any]) -> dict[str, Any]:
    """The row as scoring sees it: a failed answer is the unedited source."""
    ok = bool(row.get("ok"))
    return row | {"ok": ok, "unedited": not ok} | ({} if ok else {"prediction": row["source"]})


def _unedited_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per example, in dataset order, answered with its own source."""
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen.setdefault(row["example_id"], row)
    return [
        {
            "example_id": row["example_id"],
            "backend": UNEDITED,
            "type": row["type"],
            "source": row["source"],
            "references": row["references"],
            "prediction": row["source"],
            "ok": True,
            "unedited": True,
        }
        for row in seen.values()
    ]


def _corpus_scores(
    rows: list[dict[str, Any]], metrics: list[dict[str, Any]], tokens: GleuTokens
) -> dict[str, Any]:
    """Corpus GLEU and ERRANT over the grammar rows with references (answered or not); fills
    each such row's ERRANT columns in `metrics`."""
    grammar = [row for row in rows if row["type"] == "grammar" and row["references"]]
    if not grammar:
        return {"metrics": {}}
    errant_corpus, per_sentence = errant_scores(
        [row["source"] for row in grammar],
        [row["prediction"] for row in grammar],
        [row["references"] for row in grammar],
        pretokenized=tokens.pretokenized,
    )
    _add_errant_columns(metrics, grammar, per_sentence)
    p, r, f = errant_corpus.scores()
    return {
        "metrics": {
            "gleu": grammar_corpus_gleu(grammar, tokens),
            "errant_precision": p,
            "errant_recall": r,
            "errant_f05": f,
        },
        "errant_by_type": errant_corpus.type_table(),
    }


def example_metrics(row: dict[str, Any], tokens: GleuTokens) -> dict[str, Any]:
    source, prediction, references = row["source"], row["prediction"], row["references"]
    values: dict[str, Any] = {
        "example_id": row["example_id"],
        "backend": row["backend"],
        "type": row["type"],
        "ok": bool(row.get("ok", True)),
        "error_kind": row.get("error_kind"),
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
        tokens.given(source), tokens.hypothesis(row), [tokens.given(r) for r in references]
    )
    values |= {"edit_rate_source": vs_source, "edit_rate_reference": vs_reference}
    if row["type"] == "grammar" and references:
        values["gleu_sentence"] = sentence_gleu(
            tokens.given(source),
            tokens.hypothesis(row),
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
            [tokens.hypothesis(row) for row in group],
            [[tokens.given(ref) for ref in row["references"]] for row in group],
        )
        score += result.mean * len(group) / total
    return score


def _add_errant_columns(
    metrics: list[dict[str, Any]],
    grammar: list[dict[str, Any]],
    per_sentence: list[ErrantCounts],
) -> None:
    index = {(m["example_id"], m["backend"]): m for m in metrics}
    for row, counts in zip(grammar, per_sentence, strict=True):
        p, r, f = counts.scores()
        index[(row["example_id"], row["backend"])] |= {
            "errant_precision": p,
            "errant_recall": r,
            "errant_f05": f,
        }


def _backend_summary(
    backend: str, rows: list[dict[str, Any]], config: dict[str, Any]
) -> dict[str, Any]:
    answered = [row for row in rows if row["ok"]]
    errors = len(rows) - len(answered)
    error_kinds: dict[str, int] = {}
    for row in rows:
        if not row["ok"]:
            kind = str(row.get("error_kind"))
            error_kinds[kind] = error_kinds.get(kind, 0) + 1
    retried = [row for row in rows if row.get("attempts", 1) > 1]
    model_ids = sorted({str(row.get("model_id")) for row in answered}) or [
        config["backends"].get(backend, {}).get("model_id", "?")
    ]
    return {
        "model_id": ", ".join(model_ids),
        "label": config["backends"].get(backend, {}).get("label", backend),
        "examples": len(rows),
        "answered": len(answered),
        "errors": errors,
        "error_rate": errors / len(rows) if rows else 0.0,
        "error_kinds": error_kinds,
        # The runner's asks over every `run` and `--resume` (one predictions line each).
        "attempts": sum(int(row.get("attempts", 1)) for row in rows),
        "retried": len(retried),
        "recovered": sum(row["ok"] for row in retried),
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
    """Per-example means: scores over every row, serving columns (the registry's `serving`)
    over the answered ones."""
    means: dict[str, float | None] = {}
    for column in EXAMPLE_COLUMNS:
        values = [
            float(m[column])
            for m in metrics
            if m["backend"] == backend
            and (m["ok"] or column not in SERVING)
            and m.get(column) is not None
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

    def hypothesis(self, row: dict[str, Any]) -> str:
        """A row's answer as tokens; an unedited row's is its source, as given (re-tokenizing
        JFLEG's tokenized source would move the do-nothing score off the published one)."""
        if row.get("unedited"):
            return self.given(row["source"])
        if self.pretokenized:  # ERRANT's tokens too: a word left alone is never an edit
            return " ".join(answer_tokens(row["prediction"], row["source"]))
        return self.answer(row["prediction"])

    @staticmethod
    def answer(text: str) -> str:
        return " ".join(tokenize(text))
