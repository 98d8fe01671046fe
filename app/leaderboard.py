"""Ratings from blind A/B votes: which backend reviewers prefer, and how sure we can be.

Scoring of one game (one vote) from a system's side: a win is 1, a loss 0, and a tie or
"both bad" is 0.5 each (neither answer was preferred). Two numbers come out of that:

- `win_rate`: the mean game score, with a Wilson score interval. Ties make the score not quite
  a coin flip; the interval treats it as one, which is close and errs wide.
- `rating`: Bradley-Terry strengths, which also account for whom each system played, fitted by
  Hunter's MM algorithm (2004) with ties as half wins, on an Elo-like scale (400 * log10 of the
  strength, mean 1000: 100 points apart means the higher one is expected to score 0.64). A small
  prior, `prior` virtual ties against a fixed reference player, keeps undefeated and winless
  systems finite. Its interval comes from a seeded bootstrap over votes.

A system is a slot, a model id and its version (`system_name`): two models on one engine, two
versions of one model after a promotion, or one model behind two prompts (the slots) are told
apart. A vote whose two sides are the same system says nothing about either, so it is left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import numpy.typing as npt
import pandas as pd

from .votes import Side, Vote

COLUMNS = (
    "system",
    "label",
    "model_id",
    "version",
    "games",
    "wins",
    "losses",
    "ties",
    "both_bad",
    "win_rate",
    "win_rate_low",
    "win_rate_high",
    "rating",
    "rating_low",
    "rating_high",
)
DEFAULT_PRIOR = 1.0  # virtual tied games of each system against the reference player
MEAN_RATING = 1000.0
ELO_SCALE = 400.0

_SCORES = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}
_TOLERANCE = 1e-10  # largest change of a log10 strength at convergence
_MAX_ITERATIONS = 100_000

Array = npt.NDArray[np.float64]


def system_name(side: Side) -> str:
    """Slot, model id and version, e.g. `custom: writing-llama @ run-7`: the slot stays because
    one model behind two slots is two systems (each slot has its own prompt)."""
    return f"{side.backend}: {side.model_id} @ {side.version}"


def wilson_interval(rate: float, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval for a rate seen over n games; (0, 1) when there are none."""
    if n <= 0:
        return 0.0, 1.0
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate {rate} is not in [0, 1]")
    z2 = z * z
    centre = (rate + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bradley_terry(
    games: Sequence[tuple[str, str, float]], *, prior: float = DEFAULT_PRIOR
) -> dict[str, float]:
    """Elo-like ratings (mean 1000) from (first, second, score of first in [0, 1]) games."""
    for name, other, result in games:
        if not 0.0 <= result <= 1.0:
            raise ValueError(f"score {result} of {name} against {other} is not in [0, 1]")
    names = sorted({name for game in games for name in game[:2]})
    index = {name: i for i, name in enumerate(names)}
    counted = [(index[f], index[s], result) for f, s, result in games if f != s]
    first = np.array([game[0] for game in counted], dtype=np.int_)
    second = np.array([game[1] for game in counted], dtype=np.int_)
    score = np.array([game[2] for game in counted], dtype=np.float64)
    ratings = _ratings(*_tables(first, second, score, None, len(names)), prior)[0]
    return {name: float(ratings[index[name]]) for name in names}


def leaderboard(
    votes: Sequence[Vote], *, confidence: float = 0.95, bootstrap: int = 200, seed: int = 0
) -> pd.DataFrame:
    """One row per system, best rating first, with `confidence` intervals (see module doc)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence} is not between 0 and 1")
    if bootstrap < 0:
        raise ValueError(f"bootstrap {bootstrap} is negative")
    records: dict[str, _Record] = {}
    pairs: list[tuple[int, int, float]] = []  # (first, second, score of first) per counted vote
    for vote in votes:
        first, second = system_name(vote.a), system_name(vote.b)
        if first == second:
            continue
        score = _SCORES[vote.verdict]
        for name, side in ((first, vote.a), (second, vote.b)):
            record = records.setdefault(name, _Record(len(records), side.model_id, side.version))
            record.label = side.label  # latest wins
        records[first].add(vote.verdict, mine="a")
        records[second].add(vote.verdict, mine="b")
        pairs.append((records[first].index, records[second].index, score))
    if not pairs:
        return _empty_table()

    size = len(records)
    first_index = np.array([pair[0] for pair in pairs], dtype=np.int_)
    second_index = np.array([pair[1] for pair in pairs], dtype=np.int_)
    first_score = np.array([pair[2] for pair in pairs], dtype=np.float64)
    point = _ratings(*_tables(first_index, second_index, first_score, None, size), DEFAULT_PRIOR)[0]
    low, high = _bootstrap_bounds(
        first_index, second_index, first_score, size, confidence, bootstrap, seed
    )

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    rows = []
    for name, record in records.items():
        games = record.games
        rate = (record.wins + 0.5 * (record.ties + record.both_bad)) / games
        rate_low, rate_high = wilson_interval(rate, games, z)
        rows.append(
            {
                "system": name,
                "label": record.label,
                "model_id": record.model_id,
                "version": record.version,
                "games": games,
                "wins": record.wins,
                "losses": record.losses,
                "ties": record.ties,
                "both_bad": record.both_bad,
                "win_rate": rate,
                "win_rate_low": rate_low,
                "win_rate_high": rate_high,
                "rating": float(point[record.index]),
                "rating_low": float(low[record.index]),
                "rating_high": float(high[record.index]),
            }
        )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.sort_values(
        ["rating", "win_rate", "system"], ascending=[False, False, True], ignore_index=True
    )


def export_csv(table: pd.DataFrame, path: Path | str) -> Path:
    """The table as CSV (no index column), for a spreadsheet or a report."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(target, index=False)
    return target


def _empty_table() -> pd.DataFrame:
    text = ("system", "label", "model_id", "version")
    count = ("games", "wins", "losses", "ties", "both_bad")
    return pd.DataFrame(
        {
            column: pd.Series(
                [], dtype="str" if column in text else "int64" if column in count else "float64"
            )
            for column in COLUMNS
        }
    )


@dataclass
class _Record:
    index: int
    model_id: str
    version: str
    label: str = ""
    wins: int = 0
    losses: int = 0
    ties: int = 0
    both_bad: int = 0

    @property
    def games(self) -> int:
        return self.wins + self.losses + self.ties + self.both_bad

    def add(self, verdict: str, *, mine: str) -> None:
        if verdict == mine:
            self.wins += 1
        elif verdict in ("a", "b"):
            self.losses += 1
        elif verdict == "tie":
            self.ties += 1
        else:
            self.both_bad += 1


def _tables(
    first: npt.NDArray[np.int_],
    second: npt.NDArray[np.int_],
    score: Array,
    samples: npt.NDArray[np.int_] | None,
    size: int,
) -> tuple[Array, Array]:
    """Score and games matrices, one pair per sample of votes (all votes once when None)."""
    if samples is None:
        samples = np.arange(len(score))[None, :]
    count = samples.shape[0]
    scores = np.zeros((count, size, size))
    played = np.zeros((count, size, size))
    replicate = np.repeat(np.arange(count), samples.shape[1])
    i, j, s = first[samples].ravel(), second[samples].ravel(), score[samples].ravel()
    np.add.at(scores, (replicate, i, j), s)
    np.add.at(scores, (replicate, j, i), 1.0 - s)
    np.add.at(played, (replicate, i, j), 1.0)
    np.add.at(played, (replicate, j, i), 1.0)
    return scores, played


def _ratings(scores: Array, played: Array, prior: float) -> Array:
    """Elo-like ratings, mean 1000, for each of a stack of (score, games) matrices.

    MM update (Hunter 2004): strength_i <- W_i / sum_j n_ij / (strength_i + strength_j), where
    the reference player (strength 1) adds `prior` games and prior / 2 to W_i. Only the weak
    prior pins the common level of all strengths, which plain MM finds slowly; each round
    therefore also moves that level to its best value, a one-dimensional step that can only
    improve the fit, so the iteration stays a monotone ascent.
    """
    if not prior > 0:
        raise ValueError(f"prior {prior} must be positive; it keeps unbeaten systems finite")
    if scores.shape[-1] == 0:
        return np.zeros(scores.shape[:-1])
    won = scores.sum(axis=2) + prior / 2
    strength = np.ones(scores.shape[:2])
    for _ in range(_MAX_ITERATIONS):
        pairs = strength[:, :, None] + strength[:, None, :]
        updated = won / ((played / pairs).sum(axis=2) + prior / (strength + 1.0))
        updated = _best_level(updated)
        change = np.abs(np.log10(updated) - np.log10(strength)).max()
        strength = updated
        if change < _TOLERANCE:
            break
    ratings = ELO_SCALE * np.log10(strength)
    return np.asarray(ratings - ratings.mean(axis=1, keepdims=True) + MEAN_RATING)


def _best_level(strength: Array) -> Array:
    """Scale each row of strengths by the factor that best fits the ties with the reference.

    Games between systems do not change with a common factor; the prior's do, and are best when
    the expected scores against the reference add up to half the systems (Newton on the log of
    the factor, a concave problem; steps are capped so a far start cannot overshoot).
    """
    log_strength = np.log(strength)
    shift = np.zeros((strength.shape[0], 1))
    half = strength.shape[1] / 2
    for _ in range(50):
        expected = 1.0 / (1.0 + np.exp(-(log_strength + shift)))
        slope = (expected * (1.0 - expected)).sum(axis=1, keepdims=True)
        step = np.clip((half - expected.sum(axis=1, keepdims=True)) / slope, -1.0, 1.0)
        shift += step
        if np.abs(step).max() < 1e-13:
            break
    return np.asarray(np.exp(log_strength + shift))


def _bootstrap_bounds(
    first: npt.NDArray[np.int_],
    second: npt.NDArray[np.int_],
    score: Array,
    size: int,
    confidence: float,
    rounds: int,
    seed: int,
) -> tuple[Array, Array]:
    """Percentile bounds of each rating over votes resampled with replacement.

    A system none of whose games were drawn in a round has no rating there; its bounds come from
    the rounds that drew it, and the round's mean is taken over the systems it drew.
    """
    low, high = np.full(size, np.nan), np.full(size, np.nan)
    if rounds == 0:
        return low, high
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(score), size=(rounds, len(score)))
    scores, played = _tables(first, second, score, samples, size)
    ratings = _ratings(scores, played, DEFAULT_PRIOR)
    present = played.sum(axis=2) > 0
    # Re-centre each round on the systems it drew, so an absent one does not shift the rest.
    present_mean = np.where(present, ratings, 0.0).sum(axis=1) / present.sum(axis=1)
    ratings = ratings - present_mean[:, None] + MEAN_RATING
    tail = (1 - confidence) / 2 * 100
    for system in range(size):
        drawn = ratings[present[:, system], system]
        if drawn.size:
            low[system], high[system] = np.percentile(drawn, [tail, 100 - tail])
    return low, high
