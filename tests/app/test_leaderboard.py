import math
import random
from dataclasses import replace
from pathlib import Path
from typing import cast

import pandas as pd
import pytest

from app.leaderboard import (
    COLUMNS,
    bradley_terry,
    export_csv,
    leaderboard,
    system_name,
    wilson_interval,
)
from app.votes import UNRECORDED, UNVERSIONED, Side, Verdict, Vote, VoteStore
from suggestions import LlamaRequest

REQUEST = LlamaRequest(text="She go to school yesterday.", type="grammar")
ELO_80 = 400 * math.log10(0.8 / 0.2)  # the rating gap at which the stronger side scores 0.8


def _side(backend: str, model_id: str = "m") -> Side:
    return Side(backend, model_id, f"{backend} label", "out", 100.0, 10.0)


def _votes(first: str, second: str, verdicts: list[str]) -> list[Vote]:
    return [
        Vote("s", REQUEST, _side(first), _side(second), cast(Verdict, verdict))
        for verdict in verdicts
    ]


def _name(backend: str) -> str:
    return f"{backend}: m @ {UNVERSIONED}"


def _row(table: pd.DataFrame, backend: str) -> pd.Series:
    rows = table[table["system"] == _name(backend)]
    assert len(rows) == 1
    return rows.iloc[0]


def _simulated(first: str, second: str, p_first: float, n: int, seed: int) -> list[Vote]:
    """n votes where `first` wins with probability p_first, shown on either side at random."""
    rng = random.Random(seed)
    votes = []
    for _ in range(n):
        first_wins = rng.random() < p_first
        if rng.random() < 0.5:
            votes += _votes(first, second, ["a" if first_wins else "b"])
        else:
            votes += _votes(second, first, ["b" if first_wins else "a"])
    return votes


def test_system_name_keeps_the_slot_the_model_and_its_version() -> None:
    custom, baseline = _side("custom", "qwen"), _side("baseline", "qwen")
    assert system_name(custom) == f"custom: qwen @ {UNVERSIONED}"
    assert system_name(custom) != system_name(baseline)  # one model, two prompts
    promoted = replace(_side("custom", "writing-llama"), version="run-8")
    assert system_name(promoted) == "custom: writing-llama @ run-8"
    assert system_name(promoted) != system_name(replace(promoted, version="run-7"))


def _versioned(model_id: str, version: str, backend: str = "custom") -> Side:
    return replace(_side(backend, model_id), version=version, label=f"{model_id} {version}")


def test_two_models_on_one_engine_and_two_versions_are_told_apart() -> None:
    """After a promotion, run-8 and run-7 of writing-llama are two rows, and their games
    against each other count; the stock base is a third, named by its own model id."""
    base = _versioned("smollm2-135m-instruct", "stock", backend="baseline")
    old, new = _versioned("writing-llama", "run-7"), _versioned("writing-llama", "run-8")
    votes = [Vote("s", REQUEST, old, base, "a") for _ in range(6)]
    votes += [Vote("s", REQUEST, new, old, "a") for _ in range(4)]
    votes += [Vote("s", REQUEST, base, new, "b") for _ in range(3)]
    table = leaderboard(votes).set_index("system")

    assert list(table.index) == [
        "custom: writing-llama @ run-8",
        "custom: writing-llama @ run-7",
        "baseline: smollm2-135m-instruct @ stock",
    ]
    assert table["games"].tolist() == [7, 10, 9]
    assert table["model_id"].tolist() == ["writing-llama", "writing-llama", base.model_id]
    assert table["version"].tolist() == ["run-8", "run-7", "stock"]
    assert table.loc["custom: writing-llama @ run-7", "label"] == "writing-llama run-7"


def test_votes_from_before_versions_were_kept_stay_apart_from_newer_ones(tmp_path: Path) -> None:
    """An old vote's version is not known, so it is not credited to the version now served."""
    old = Vote("s", REQUEST, _versioned("writing-llama", UNRECORDED), _side("mock"), "a")
    new = Vote("s", REQUEST, _versioned("writing-llama", "run-8"), _side("mock"), "b")
    store = VoteStore(tmp_path / "votes.db")
    for vote in (old, new):
        store.record(vote)
    table = leaderboard(store.votes()).set_index("system")
    assert table.loc[f"custom: writing-llama @ {UNRECORDED}", "wins"] == 1
    assert table.loc["custom: writing-llama @ run-8", "losses"] == 1
    assert table.loc[_name("mock"), "games"] == 2


def test_wilson_interval_matches_the_textbook_value() -> None:
    low, high = wilson_interval(0.8, 100, 1.959963984540054)
    assert low == pytest.approx(0.7112, abs=1e-4)
    assert high == pytest.approx(0.8666, abs=1e-4)
    assert wilson_interval(0.0, 10, 1.96)[0] == 0.0
    assert wilson_interval(1.0, 10, 1.96)[1] == pytest.approx(1.0)
    assert wilson_interval(0.5, 0, 1.96) == (0.0, 1.0)


def test_an_80_percent_winner_leads_with_intervals_around_the_truth() -> None:
    votes = _simulated("custom", "baseline", 0.8, 300, seed=3)
    table = leaderboard(votes)

    assert list(table.columns) == list(COLUMNS)
    assert list(table["system"]) == [_name("custom"), _name("baseline")]
    custom, baseline = _row(table, "custom"), _row(table, "baseline")
    assert custom["games"] == baseline["games"] == 300
    assert custom["wins"] == baseline["losses"] and custom["losses"] == baseline["wins"]
    assert custom["win_rate"] + baseline["win_rate"] == pytest.approx(1.0)
    assert custom["win_rate_low"] < 0.8 < custom["win_rate_high"]
    assert baseline["win_rate_low"] < 0.2 < baseline["win_rate_high"]
    assert custom["rating"] > baseline["rating"]
    assert (custom["rating"] + baseline["rating"]) / 2 == pytest.approx(1000.0)
    # Two systems with mean 1000 and the 80% gap between them sit at 1000 +- ELO_80 / 2.
    assert custom["rating_low"] < 1000 + ELO_80 / 2 < custom["rating_high"]
    assert baseline["rating_low"] < 1000 - ELO_80 / 2 < baseline["rating_high"]
    assert custom["rating_low"] < custom["rating"] < custom["rating_high"]
    assert custom["label"] == "custom label"


def test_exact_win_counts_give_the_textbook_gap() -> None:
    ratings = bradley_terry([("a", "b", 1.0)] * 800 + [("a", "b", 0.0)] * 200)
    # The prior (one virtual tie each) pulls the gap in a little, and only a little.
    assert ratings["a"] - ratings["b"] == pytest.approx(ELO_80, abs=1.0)
    assert ratings["a"] - ratings["b"] < ELO_80


def test_fit_satisfies_the_bradley_terry_equations() -> None:
    """At the maximum, each system's expected score equals its actual score."""
    rng = random.Random(7)
    names = ["p", "q", "r", "s"]
    games = []
    for _ in range(400):
        first, second = rng.sample(names, 2)
        games.append((first, second, rng.choice([0.0, 0.5, 1.0, 1.0])))
    ratings = bradley_terry(games, prior=1e-6)
    strength = {name: 10 ** (rating / 400) for name, rating in ratings.items()}
    for name in names:
        actual = expected = 0.0
        for first, second, score in games:
            if name in (first, second):
                other = second if name == first else first
                actual += score if name == first else 1.0 - score
                expected += strength[name] / (strength[name] + strength[other])
        assert expected == pytest.approx(actual, abs=1e-3)


def test_symmetric_results_give_equal_ratings() -> None:
    votes = _votes("custom", "baseline", ["a", "b"] * 20) + _votes("baseline", "custom", ["a"] * 5)
    votes += _votes("custom", "baseline", ["a"] * 5)
    table = leaderboard(votes)
    custom, baseline = _row(table, "custom"), _row(table, "baseline")
    assert custom["rating"] == pytest.approx(1000.0) and baseline["rating"] == pytest.approx(1000.0)
    assert custom["win_rate"] == baseline["win_rate"] == 0.5
    assert custom["rating_low"] < 1000 < custom["rating_high"]


def test_ties_and_both_bad_count_as_half_a_win() -> None:
    votes = _votes("custom", "mock", ["tie"] * 6 + ["both_bad"] * 4 + ["a"] * 10)
    table = leaderboard(votes)
    custom, mock = _row(table, "custom"), _row(table, "mock")
    assert (custom["wins"], custom["losses"], custom["ties"], custom["both_bad"]) == (10, 0, 6, 4)
    assert (mock["wins"], mock["losses"], mock["ties"], mock["both_bad"]) == (0, 10, 6, 4)
    assert custom["win_rate"] == pytest.approx(0.75)
    assert mock["win_rate"] == pytest.approx(0.25)
    # Same scores as 15 wins and 5 losses, so the same ratings.
    as_wins = leaderboard(_votes("custom", "mock", ["a"] * 15 + ["b"] * 5))
    assert custom["rating"] == pytest.approx(_row(as_wins, "custom")["rating"])
    only_ties = leaderboard(_votes("custom", "mock", ["tie"] * 8))
    assert list(only_ties["rating"]) == pytest.approx([1000.0, 1000.0])


def test_an_undefeated_system_gets_a_finite_rating() -> None:
    table = leaderboard(_votes("custom", "mock", ["a"] * 12))
    assert table["rating"].map(math.isfinite).all()
    assert table["rating_low"].map(math.isfinite).all()
    assert _row(table, "custom")["rating"] > _row(table, "mock")["rating"]
    assert _row(table, "custom")["win_rate_high"] == pytest.approx(1.0)


def test_a_transitive_order_of_three_is_recovered() -> None:
    votes = (
        _simulated("custom", "baseline", 0.75, 150, seed=1)
        + _simulated("baseline", "mock", 0.75, 150, seed=2)
        + _simulated("custom", "mock", 0.9, 150, seed=3)
    )
    table = leaderboard(votes)
    assert list(table["system"]) == [_name("custom"), _name("baseline"), _name("mock")]
    assert table["rating"].mean() == pytest.approx(1000.0)
    assert table["games"].tolist() == [300, 300, 300]


def test_the_order_is_recovered_from_games_a_system_never_played() -> None:
    """custom never met mock; beating the system that beats mock still ranks it first."""
    votes = _simulated("custom", "baseline", 0.8, 100, seed=4) + _simulated(
        "baseline", "mock", 0.8, 100, seed=5
    )
    ratings = leaderboard(votes).set_index("system")["rating"]
    assert ratings[_name("custom")] > ratings[_name("baseline")] > ratings[_name("mock")]
    assert ratings[_name("custom")] - ratings[_name("mock")] > ELO_80  # further than each step


def test_intervals_narrow_with_more_votes() -> None:
    few = leaderboard(_votes("custom", "baseline", ["a"] * 14 + ["b"] * 6))
    many = leaderboard(_votes("custom", "baseline", ["a"] * 140 + ["b"] * 60))
    few_row, many_row = _row(few, "custom"), _row(many, "custom")
    assert few_row["win_rate"] == many_row["win_rate"] == pytest.approx(0.7)
    few_width = few_row["win_rate_high"] - few_row["win_rate_low"]
    many_width = many_row["win_rate_high"] - many_row["win_rate_low"]
    assert many_width < few_width / 2
    assert (many_row["rating_high"] - many_row["rating_low"]) < (
        few_row["rating_high"] - few_row["rating_low"]
    ) / 2


def test_the_bootstrap_is_seeded_and_confidence_sets_the_width() -> None:
    votes = _simulated("custom", "baseline", 0.6, 80, seed=6)
    first, again = leaderboard(votes, seed=11), leaderboard(votes, seed=11)
    pd.testing.assert_frame_equal(first, again)
    narrow = _row(leaderboard(votes, confidence=0.5), "custom")
    wide = _row(leaderboard(votes, confidence=0.99), "custom")
    assert narrow["rating_high"] - narrow["rating_low"] < wide["rating_high"] - wide["rating_low"]
    assert narrow["win_rate_high"] - narrow["win_rate_low"] < (
        wide["win_rate_high"] - wide["win_rate_low"]
    )


def test_a_vote_between_the_same_system_is_left_out() -> None:
    votes = _votes("custom", "custom", ["a"] * 5) + _votes("custom", "mock", ["a", "b"])
    table = leaderboard(votes)
    assert table["games"].tolist() == [2, 2]
    assert leaderboard(_votes("custom", "custom", ["a"])).empty


def test_no_votes_give_an_empty_table_with_the_columns() -> None:
    table = leaderboard([])
    assert table.empty
    assert list(table.columns) == list(COLUMNS)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="confidence"):
        leaderboard([], confidence=1.0)
    with pytest.raises(ValueError, match="prior"):
        bradley_terry([("a", "b", 1.0)], prior=0.0)
    with pytest.raises(ValueError, match=r"score 1.5 of a against b"):
        bradley_terry([("a", "b", 1.5)])


def test_votes_from_the_store_to_csv_and_back(tmp_path: Path) -> None:
    store = VoteStore(tmp_path / "votes.db")
    for vote in _simulated("custom", "baseline", 0.7, 40, seed=8):
        store.record(vote)
    table = leaderboard(store.votes())

    target = export_csv(table, tmp_path / "reports" / "leaderboard.csv")

    assert target == tmp_path / "reports" / "leaderboard.csv"
    pd.testing.assert_frame_equal(pd.read_csv(target), table)
