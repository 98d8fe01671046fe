import csv
import sqlite3
import threading
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from app.votes import (
    CSV_COLUMNS,
    MAX_COMMENT_CHARS,
    SCHEMA_VERSION,
    Side,
    Vote,
    VoteError,
    VoteStore,
)
from suggestions import LlamaRequest
from suggestions.contract import parse_request

CUSTOM = Side(
    backend="custom",
    model_id="qwen2.5-coder-1.5b-instruct",
    label="local stand-in: Qwen2.5-Coder-1.5B",
    output="She went to school yesterday and bought some books.",
    latency_ms=812.5,
    ttft_ms=240.0,
)
BASELINE = Side(
    backend="baseline",
    model_id="qwen2.5-coder-1.5b-instruct",
    label="local stand-in, generic prompt",
    output="",
    latency_ms=None,
    ttft_ms=None,
    error="The baseline did not answer in time.",
)


def _vote(request: LlamaRequest, **changes: Any) -> Vote:
    vote = Vote(session_id="s-1", request=request, a=CUSTOM, b=BASELINE, verdict="a")
    return replace(vote, **changes)


def test_a_vote_reads_back_exactly_as_recorded(
    tmp_path: Path, grammar_request: LlamaRequest
) -> None:
    store = VoteStore(tmp_path / "nested" / "votes.db")
    request = LlamaRequest(
        text="Its a long story, that I tell you know.",
        type="clarity",
        context="Chapter one.",
        manuscript_id="ms-42",
    )
    before = datetime.now(UTC)
    first = store.record(_vote(grammar_request, comment="A fixed every error; B failed."))
    second = store.record(_vote(request, a=BASELINE, b=CUSTOM, verdict="both_bad"))
    after = datetime.now(UTC)

    assert (first, second) == (1, 2)
    assert store.count() == 2
    votes = VoteStore(tmp_path / "nested" / "votes.db").votes()  # a second store, same file
    assert [vote.id for vote in votes] == [1, 2]
    got = votes[1]
    assert got.request == request
    assert (got.a, got.b) == (BASELINE, CUSTOM)
    assert (got.verdict, got.comment, got.session_id) == ("both_bad", "", "s-1")
    assert votes[0].comment == "A fixed every error; B failed."
    for vote in votes:
        assert vote.created_at is not None and vote.created_at.tzinfo is not None
        assert before <= vote.created_at <= after
        assert vote.created_at.utcoffset() == timedelta(0)


def test_file_is_wal_with_a_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "votes.db"
    VoteStore(path)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    VoteStore(path)  # opening again neither fails nor re-creates the table


def test_a_file_from_a_newer_schema_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "votes.db"
    VoteStore(path)
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(VoteError, match=r"schema version 2.*Upgrade the app"):
        VoteStore(path)


def test_a_file_that_is_not_a_database_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "votes.db"
    path.write_text("these are not the votes you are looking for " * 50)
    with pytest.raises(VoteError, match="not a usable vote database"):
        VoteStore(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"verdict": "c"}, r"verdict 'c' is not one of a, b, tie, both_bad"),
        ({"comment": "x" * (MAX_COMMENT_CHARS + 1)}, r"comment is 2,001 characters; the limit"),
        ({"session_id": "  "}, "session_id is empty"),
        ({"a": replace(CUSTOM, backend="")}, "side A has an empty backend"),
        ({"b": replace(CUSTOM, model_id=" ")}, "side B has an empty model_id"),
        ({"a": replace(CUSTOM, latency_ms=-1.0)}, "side A latency_ms is -1.0"),
        ({"b": replace(CUSTOM, ttft_ms=float("nan"))}, "side B ttft_ms is nan"),
        ({"created_at": datetime(2026, 1, 1)}, "created_at has no time zone"),
    ],
)
def test_bad_votes_are_refused_and_nothing_is_stored(
    tmp_path: Path, grammar_request: LlamaRequest, changes: dict[str, Any], message: str
) -> None:
    store = VoteStore(tmp_path / "votes.db")
    with pytest.raises(VoteError, match=message):
        store.record(_vote(grammar_request, **changes))
    assert store.count() == 0


def test_a_comment_at_the_limit_is_kept_whole(
    tmp_path: Path, grammar_request: LlamaRequest
) -> None:
    store = VoteStore(tmp_path / "votes.db")
    comment = "é" * MAX_COMMENT_CHARS
    store.record(_vote(grammar_request, verdict="tie", comment=comment))
    assert store.votes()[0].comment == comment


def test_given_times_are_kept_in_utc_and_order_the_votes(
    tmp_path: Path, grammar_request: LlamaRequest
) -> None:
    store = VoteStore(tmp_path / "votes.db")
    later = datetime(2026, 11, 26, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    earlier = datetime(2026, 11, 26, 7, 30, tzinfo=UTC)
    store.record(_vote(grammar_request, session_id="late", created_at=later))
    store.record(_vote(grammar_request, session_id="early", created_at=earlier))
    votes = store.votes()
    assert [vote.session_id for vote in votes] == ["early", "late"]
    assert votes[1].created_at == later
    assert votes[1].created_at is not None and votes[1].created_at.utcoffset() == timedelta(0)


def test_a_request_longer_than_the_default_limit_still_reads_back(tmp_path: Path) -> None:
    store = VoteStore(tmp_path / "votes.db")
    long_request = parse_request({"text": "word " * 3000, "type": "style"}, max_text_chars=20_000)
    store.record(_vote(long_request))
    assert store.votes()[0].request == long_request


def test_concurrent_writers_wait_instead_of_failing(
    tmp_path: Path, grammar_request: LlamaRequest
) -> None:
    path = tmp_path / "votes.db"
    VoteStore(path)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        store = VoteStore(path)  # each thread opens the file itself, as app workers would
        try:
            for n in range(10):
                store.record(_vote(grammar_request, session_id=f"w{worker}-{n}"))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    votes = VoteStore(path).votes()
    assert len(votes) == 20 * 10
    assert len({vote.session_id for vote in votes}) == 20 * 10
    assert sorted(vote.id for vote in votes if vote.id is not None) == list(range(1, 201))


def test_csv_export_has_one_flat_row_per_vote(
    tmp_path: Path, grammar_request: LlamaRequest
) -> None:
    store = VoteStore(tmp_path / "votes.db")
    tricky = LlamaRequest(text='He said, "no",\nthen left.', type="style", manuscript_id="ms-7")
    store.record(_vote(grammar_request, comment='clear, "better"'))
    store.record(_vote(tricky, a=BASELINE, b=CUSTOM, verdict="b"))

    target = store.export_csv(tmp_path / "out" / "votes.csv")

    with target.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == 2
    first, second = rows
    assert first["id"] == "1"
    assert first["text"] == grammar_request.text
    assert first["suggestion_type"] == "grammar"
    assert first["manuscript_id"] == ""
    assert (first["backend_a"], first["model_a"], first["label_a"]) == (
        "custom",
        CUSTOM.model_id,
        CUSTOM.label,
    )
    assert float(first["latency_a_ms"]) == 812.5 and float(first["ttft_a_ms"]) == 240.0
    assert first["latency_b_ms"] == "" and first["error_b"] == BASELINE.error
    assert first["output_a"] == CUSTOM.output and first["output_b"] == ""
    assert (first["verdict"], first["comment"]) == ("a", 'clear, "better"')
    assert datetime.fromisoformat(first["created_at"]).utcoffset() == timedelta(0)
    assert second["text"] == tricky.text  # commas, quotes and a newline survive
    assert (second["manuscript_id"], second["backend_a"], second["verdict"]) == (
        "ms-7",
        "baseline",
        "b",
    )


def test_an_empty_store_exports_just_the_header(tmp_path: Path) -> None:
    store = VoteStore(tmp_path / "votes.db")
    assert store.votes() == [] and store.count() == 0
    target = store.export_csv(tmp_path / "votes.csv")
    assert target.read_text(encoding="utf-8").strip() == ",".join(CSV_COLUMNS)


def test_csv_export_defuses_spreadsheet_formulas(
    tmp_path: Path, grammar_request: LlamaRequest
) -> None:
    store = VoteStore(tmp_path / "votes.db")
    store.record(_vote(grammar_request, comment='=HYPERLINK("http://x")'))
    with store.export_csv(tmp_path / "votes.csv").open(newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["comment"] == '\'=HYPERLINK("http://x")'
