"""The one list of metrics: each one's name, which way is better, its title, and any target.

Scoring's per-example columns, the comparison's verdicts and order, the gates, the reports and
the app's dashboard all read this module, so a metric is added, or a target moved, here and
nowhere else. It imports only the standard library: the app imports it, and the other modules
of `eval.metrics` load spaCy and MiniLM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

Direction = Literal[1, -1, 0]
"""+1: higher is better, -1: lower is better, 0: neutral (a change is reported, not judged)."""
HIGHER: Final = 1
LOWER: Final = -1
NEUTRAL: Final = 0

Scope = Literal["example", "corpus", "run"]
"""Where a value lives: `example`, a column of metrics.csv (and its mean in the summary);
`corpus`, only a corpus score in the summary's `metrics`; `run`, a field of a backend's
summary entry (its error rate)."""

LATENCY_TARGET_MS: Final = 2000.0
"""The service target: 95% of suggestions complete within 2 s end to end (warm requests)."""


@dataclass(frozen=True)
class Target:
    """A service objective on one statistic of a metric: `statistic` at most `limit`."""

    statistic: str
    limit: float
    unit: str


@dataclass(frozen=True)
class Metric:
    """One metric as every reader shows and judges it."""

    name: str
    direction: Direction
    title: str
    short: str = ""
    """The heading in narrow tables; the title when empty."""
    scope: Scope = "example"
    serving: bool = False
    """About delivering an answer: a failed row has none, so these go over answered rows."""
    target: Target | None = None

    @property
    def heading(self) -> str:
        return self.short or self.title

    @property
    def label(self) -> str:
        """The title with an arrow for the better way, where one way is better (plots)."""
        return self.title + {HIGHER: " ↑", LOWER: " ↓", NEUTRAL: ""}[self.direction]


_ALL: Final = (
    Metric("gleu", HIGHER, "GLEU", scope="corpus"),
    Metric("gleu_sentence", HIGHER, "sentence GLEU"),
    Metric("errant_precision", HIGHER, "ERRANT precision", short="P"),
    Metric("errant_recall", HIGHER, "ERRANT recall", short="R"),
    Metric("errant_f05", HIGHER, "ERRANT F0.5"),
    Metric("meaning_similarity", HIGHER, "meaning kept", short="meaning"),
    # How much of the source was rewritten: neither good nor bad by itself.
    Metric("edit_rate_source", NEUTRAL, "edit rate vs source"),
    Metric("edit_rate_reference", LOWER, "edit rate vs closest reference"),
    Metric("proselint_delta", LOWER, "proselint issues Δ"),
    Metric("flesch_reading_ease_delta", HIGHER, "Flesch reading ease Δ"),
    Metric("fk_grade_delta", LOWER, "Flesch-Kincaid grade Δ"),
    Metric("avg_sentence_length_delta", LOWER, "average sentence length Δ"),
    Metric("passive_rate_delta", LOWER, "passive-voice rate Δ"),
    Metric("wordiness_delta", LOWER, "wordy phrases Δ"),
    Metric("ttft_ms", LOWER, "time to first token (ms)", short="TTFT", serving=True),
    Metric(
        "total_ms",
        LOWER,
        "total time (ms)",
        short="total",
        serving=True,
        target=Target("p95", LATENCY_TARGET_MS, "ms"),
    ),
    Metric("tokens_per_s", HIGHER, "tokens/s", serving=True),
    # The client's retries: a symptom of the service, reported but not judged.
    Metric("retries", NEUTRAL, "client retries", serving=True),
    Metric("error_rate", LOWER, "error rate", scope="run"),
)

METRICS: Final[Mapping[str, Metric]] = MappingProxyType({m.name: m for m in _ALL})
"""Every metric by name, in the order of metrics.csv's columns (corpus and run values among
them where they read best)."""

DIRECTIONS: Final[Mapping[str, Direction]] = MappingProxyType({m.name: m.direction for m in _ALL})

EXAMPLE_COLUMNS: Final = tuple(m.name for m in _ALL if m.scope == "example")
"""The per-example metric columns of metrics.csv, in order."""

SERVING: Final = frozenset(m.name for m in _ALL if m.serving)


def metric(name: str) -> Metric:
    """The registry's entry; a KeyError naming the known metrics for a name that is not one,
    so a reader's typo fails at import rather than showing an empty column."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r} (known: {', '.join(METRICS)})") from None


def metrics(*names: str) -> tuple[Metric, ...]:
    """Several entries, in the order given (a reader's own selection)."""
    return tuple(metric(name) for name in names)


__all__ = [
    "DIRECTIONS",
    "EXAMPLE_COLUMNS",
    "HIGHER",
    "LATENCY_TARGET_MS",
    "LOWER",
    "METRICS",
    "NEUTRAL",
    "SERVING",
    "Direction",
    "Metric",
    "Scope",
    "Target",
    "metric",
    "metrics",
]
