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
    UNRECORDED,
    UNVERSIONED,
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
    version="run-20261201",
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
    with pytest.raises(VoteError, match=rf"schema version {SCHEMA_VERSION + 1}.*Upgrade the app"):
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
        ({"a": replace(CUSTOM, version="")}, "side A has an empty version"),
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
    assert (first["version_a"], first["version_b"]) == ("run-20261201", UNVERSIONED)
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


# The schema-1 table exactly as the app created it before votes kept each side's version.
SCHEMA_1 = """
CREATE TABLE votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    session_id TEXT NOT NULL,
    request_json TEXT NOT NULL,
    suggestion_type TEXT NOT NULL,
    text TEXT NOT NULL,
    manuscript_id TEXT,
    backend_a TEXT NOT NULL,
    model_a TEXT NOT NULL,
    label_a TEXT NOT NULL,
    output_a TEXT NOT NULL,
    latency_a_ms REAL,
    ttft_a_ms REAL,
    error_a TEXT,
    backend_b TEXT NOT NULL,
    model_b TEXT NOT NULL,
    label_b TEXT NOT NULL,
    output_b TEXT NOT NULL,
    latency_b_ms REAL,
    ttft_b_ms REAL,
    error_b TEXT,
    verdict TEXT NOT NULL CHECK (verdict IN ('a', 'b', 'tie', 'both_bad')),
    comment TEXT NOT NULL DEFAULT ''
);
CREATE INDEX votes_created_at ON votes (created_at);
PRAGMA user_version = 1;
"""


def _schema_1_file(path: Path, request: LlamaRequest) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(SCHEMA_1)
        db.execute(
            "INSERT INTO votes (created_at, session_id, request_json, suggestion_type, text, "
            "backend_a, model_a, label_a, output_a, latency_a_ms, ttft_a_ms, backend_b, model_b, "
            "label_b, output_b, verdict) VALUES (?, 's-old', ?, ?, ?, 'custom', 'writing-llama', "
            "'ours', 'She went.', 900.0, 200.0, 'baseline', 'smollm2-135m-instruct', 'stock', "
            "'She goes.', 'a')",
            (
                "2026-11-01T09:00:00.000000+00:00",
                request.model_dump_json(),
                request.type,
                request.text,
            ),
        )
        db.commit()


def test_a_schema_1_file_is_migrated_and_its_votes_read_as_unrecorded(
    tmp_path: Path, grammar_request: LlamaRequest
) -> None:
    """A vote file from before versions were kept still opens: its votes say they were not
    recorded (not 'unversioned', which would merge them with a model that has no version)."""
    path = tmp_path / "votes.db"
    _schema_1_file(path, grammar_request)

    store = VoteStore(path)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    (old,) = store.votes()
    assert (old.a.model_id, old.a.version) == ("writing-llama", UNRECORDED)
    assert (old.b.model_id, old.b.version) == ("smollm2-135m-instruct", UNRECORDED)
    assert (old.session_id, old.verdict, old.a.latency_ms) == ("s-old", "a", 900.0)

    store.record(_vote(grammar_request))
    VoteStore(path)  # opening the migrated file again changes nothing
    votes = VoteStore(path).votes()
    assert [vote.a.version for vote in votes] == [UNRECORDED, "run-20261201"]
    assert [vote.b.version for vote in votes] == [UNRECORDED, UNVERSIONED]
    with store.export_csv(tmp_path / "votes.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["version_a"] for row in rows] == [UNRECORDED, "run-20261201"]


def test_a_failed_migration_leaves_the_file_as_it_was(
    tmp_path: Path, grammar_request: LlamaRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The steps run in one transaction: a file is never left half-migrated."""
    from app import votes

    path = tmp_path / "votes.db"
    _schema_1_file(path, grammar_request)
    broken = (*votes._MIGRATIONS[2], "ALTER TABLE no_such_table ADD COLUMN x TEXT")
    monkeypatch.setitem(votes._MIGRATIONS, 2, broken)
    with pytest.raises(VoteError, match="not a usable vote database"):
        VoteStore(path)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        columns = [row[1] for row in db.execute("PRAGMA table_info(votes)")]
    assert "version_a" not in columns
    monkeypatch.undo()
    assert VoteStore(path).votes()[0].a.version == UNRECORDED
