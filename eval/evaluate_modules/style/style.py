"""Style metrics: meaning preservation (MiniLM cosine, source against prediction), word edit
rates against the source and the closest reference, and the change in proselint issues; the
computation is `eval.metrics.style`."""

import evaluate

import datasets
from eval.metrics.style import MeaningModel, style_scores


class Style(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="sources, predictions: plain text; references: a list of "
            "references per example (may be empty).",
            features=datasets.Features(
                {
                    "sources": datasets.Value("string"),
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, sources, predictions, references):
        similarity = MeaningModel().similarity(list(sources), list(predictions))
        rows = [
            style_scores(s, p, list(r))
            for s, p, r in zip(sources, predictions, references, strict=True)
        ]
        result = {"meaning_similarity": sum(similarity) / len(similarity) if similarity else None}
        for key in ("edit_rate_source", "edit_rate_reference", "proselint_delta"):
            values = [row[key] for row in rows if row[key] is not None]
            result[key] = sum(values) / len(values) if values else None
        return result
