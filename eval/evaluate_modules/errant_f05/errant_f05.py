"""ERRANT precision, recall and F0.5 with a per-error-type table, as an `evaluate` module;
the computation is `eval.metrics.errant_f05`."""

import evaluate

import datasets
from eval.metrics.errant_f05 import errant_scores


class ErrantF05(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Bryant, Felice and Briscoe. Automatic Annotation and Evaluation of Error "
            "Types for Grammatical Error Correction. ACL 2017.",
            inputs_description="sources, predictions: plain text; references: a list of "
            "corrected texts per example.",
            features=datasets.Features(
                {
                    "sources": datasets.Value("string"),
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, sources, predictions, references):
        corpus, _ = errant_scores(sources, predictions, references)
        precision, recall, f05 = corpus.scores()
        return {
            "precision": precision,
            "recall": recall,
            "f0.5": f05,
            "by_type": corpus.type_table(),
        }
