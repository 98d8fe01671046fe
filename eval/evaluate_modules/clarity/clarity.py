"""Offline clarity metrics (readability, sentence length, passive voice, wordiness), each as
the mean change from source to prediction; the computation is `eval.metrics.clarity`."""

import evaluate

import datasets
from eval.metrics.clarity import clarity_scores


class Clarity(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="sources, predictions: plain text.",
            features=datasets.Features(
                {"sources": datasets.Value("string"), "predictions": datasets.Value("string")}
            ),
        )

    def _compute(self, sources, predictions):
        rows = [clarity_scores(s, p) for s, p in zip(sources, predictions, strict=True)]
        return {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]} if rows else {}
