"""JFLEG's GLEU (the official script's corpus score, and sentence scores) as an `evaluate`
module; the computation is `eval.metrics.gleu`."""

import evaluate

import datasets
from eval.metrics.gleu import corpus_gleu, sentence_gleu


class JflegGleu(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Napoles, Sakaguchi, Post and Tetreault. Ground Truth for Grammatical "
            "Error Correction Metrics. ACL 2015.",
            inputs_description="sources, predictions: whitespace-tokenized strings; references: "
            "a list of reference strings per example (the same number for each).",
            features=datasets.Features(
                {
                    "sources": datasets.Value("string"),
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, sources, predictions, references, iterations=500):
        result = corpus_gleu(sources, predictions, references, iterations=iterations)
        return {
            "gleu": result.mean,
            "gleu_std": result.std,
            "sentence_gleu": [
                sentence_gleu(s, p, r)
                for s, p, r in zip(sources, predictions, references, strict=True)
            ],
        }
