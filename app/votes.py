"""Blind A/B votes, kept in SQLite so reviewers' judgements survive restarts and can be exported.

Each call opens its own short-lived connection, so one store can be shared by Gradio's worker
threads (or `asyncio.to_thread`). The database runs in WAL mode with a busy timeout: several
reviewers voting at once wait their turn instead of failing.
"""

from __future__ import annotations

import csv
import math
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from suggestions.contract import MAX_TEXT_CHARS_KEY, LlamaRequest

Verdict = Literal["a", "b", "tie", "both_bad"]
VERDICTS: tuple[Verdict, ...] = ("a", "b", "tie", "both_bad")
MAX_COMMENT_CHARS = 2000

SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 10.0

UNVERSIONED = "unversioned"
"""The version of a model whose server names none (the mock, a server without versions)."""
UNKNOWN_VERSION = "unknown"
"""The version could not be learned (the lookup failed), or changed while the answer was made."""
UNRECORDED = "unrecorded"
"""The version of a vote recorded before votes kept one (schema 1): not known, so not merged."""


def _side_columns(slot: str) -> tuple[str, ...]:
    return (
        f"backend_{slot}",
        f"model_{slot}",
        f"version_{slot}",
        f"label_{slot}",
        f"output_{slot}",
        f"latency_{slot}_ms",
        f"ttft_{slot}_ms",
        f"error_{slot}",
    )


# The columns of a CSV export, in order; the table uses the same names.
CSV_COLUMNS = (
    "id",
    "created_at",
    "session_id",
    "suggestion_type",
    "text",
    "manuscript_id",
    *_side_columns("a"),
    *_side_columns("b"),
    "verdict",
    "comment",
)

_SCHEMA_V1 = (
    f"""
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
    verdict TEXT NOT NULL CHECK (verdict IN ({", ".join(repr(v) for v in VERDICTS)})),
    comment TEXT NOT NULL DEFAULT ''
)""",
    "CREATE INDEX votes_created_at ON votes (created_at)",
)
# Schema 2: which version of each side's model answered. Older rows did not say.
_SCHEMA_V2 = tuple(
    f"ALTER TABLE votes ADD COLUMN version_{slot} TEXT NOT NULL DEFAULT '{UNRECORDED}'"
    for slot in ("a", "b")
)
_MIGRATIONS = {1: _SCHEMA_V1, 2: _SCHEMA_V2}
"""The statements that bring a file from the version before each key to that key."""


@dataclass(frozen=True)
class Side:
    """One of the two answers a reviewer compared, with what produced it."""

    backend: str  # slot name: custom, baseline, mock...
    model_id: str  # the model that answered, as its server named it
    label: str  # what it really is, e.g. "local stand-in: Qwen2.5-Coder-1.5B"
    output: str  # the revised text shown to the reviewer ("" if it failed)
    latency_ms: float | None
    ttft_ms: float | None
    error: str | None = None  # the user-facing message if this side failed
    version: str = UNVERSIONED  # which version of the model answered (a run id, say)


@dataclass(frozen=True)
class Vote:
    """A reviewer's verdict on one blind pairing; `id` and `created_at` come from the store."""

    session_id: str
    request: LlamaRequest
    a: Side
    b: Side
    verdict: Verdict
    comment: str = ""
    id: int | None = None
    created_at: datetime | None = None  # UTC


class VoteError(ValueError):
    """A vote the store refuses (bad verdict, comment too long...), or a store it cannot use."""


class VoteStore:
    """Votes in one SQLite file; safe to share between threads."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    def record(self, vote: Vote) -> int:
        """Validate the vote and store it in one transaction; the new row's id."""
        row = _vote_row(vote)
        columns = ", ".join(row)
        marks = ", ".join(f":{name}" for name in row)
        with self._transaction() as connection:
            cursor = connection.execute(f"INSERT INTO votes ({columns}) VALUES ({marks})", row)
            row_id = cursor.lastrowid
        assert row_id is not None  # an INSERT into a rowid table always sets it
        return row_id

    def votes(self) -> list[Vote]:
        """Every vote, oldest first, rebuilt as it was recorded."""
        with self._connect() as connection:
            rows = connection.execute("SELECT * FROM votes ORDER BY created_at, id").fetchall()
        return [_row_vote(row) for row in rows]

    def count(self) -> int:
        with self._connect() as connection:
            (total,) = connection.execute("SELECT COUNT(*) FROM votes").fetchone()
        return int(total)

    def export_csv(self, path: Path | str) -> Path:
        """One row per vote, oldest first, flat columns a spreadsheet can open."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as connection:
            rows = connection.execute(
                f"SELECT {', '.join(CSV_COLUMNS)} FROM votes ORDER BY created_at, id"
            ).fetchall()
        with target.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for row in rows:
                writer.writerow([spreadsheet_safe(value) for value in row])
        return target

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: no implicit transactions; writes say BEGIN IMMEDIATE themselves,
        # so a writer takes the lock up front and waits (busy timeout) rather than deadlocking.
        with closing(
            sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        ) as connection:
            connection.row_factory = sqlite3.Row
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            yield connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def _migrate(self) -> None:
        """Bring the file to SCHEMA_VERSION, one step at a time, in one transaction; a later
        schema change adds a step to `_MIGRATIONS`."""
        try:
            with self._connect() as connection:
                connection.execute("PRAGMA journal_mode = WAL")
            with self._transaction() as connection:
                (version,) = connection.execute("PRAGMA user_version").fetchone()
                if version > SCHEMA_VERSION:
                    raise VoteError(
                        f"{self.path} holds votes in schema version {version}; this version of "
                        f"the app reads up to {SCHEMA_VERSION}. Upgrade the app to open it"
                    )
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[step]:
                        connection.execute(statement)
                if version < SCHEMA_VERSION:
                    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as error:
            raise VoteError(f"{self.path} is not a usable vote database: {error}") from error


def _vote_row(vote: Vote) -> dict[str, Any]:
    """The vote as table columns, after checking everything a reviewer or caller can get wrong."""
    if vote.verdict not in VERDICTS:
        raise VoteError(f"verdict {vote.verdict!r} is not one of {', '.join(VERDICTS)}")
    if not isinstance(vote.request, LlamaRequest):
        raise VoteError("request must be a LlamaRequest")
    if not vote.session_id.strip():
        raise VoteError("session_id is empty; every vote belongs to a reviewer session")
    if len(vote.comment) > MAX_COMMENT_CHARS:
        raise VoteError(
            f"comment is {len(vote.comment):,} characters; the limit is {MAX_COMMENT_CHARS:,}"
        )
    row: dict[str, Any] = {
        "created_at": _timestamp(vote.created_at),
        "session_id": vote.session_id,
        "request_json": vote.request.model_dump_json(),
        "suggestion_type": vote.request.type,
        "text": vote.request.text,
        "manuscript_id": vote.request.manuscript_id,
    }
    for slot, side in (("a", vote.a), ("b", vote.b)):
        for name in ("backend", "model_id", "version"):
            if not getattr(side, name).strip():
                raise VoteError(f"side {slot.upper()} has an empty {name}")
        for name in ("latency_ms", "ttft_ms"):
            value = getattr(side, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise VoteError(f"side {slot.upper()} {name} is {value}; expected a time >= 0")
        row |= {
            f"backend_{slot}": side.backend,
            f"model_{slot}": side.model_id,
            f"version_{slot}": side.version,
            f"label_{slot}": side.label,
            f"output_{slot}": side.output,
            f"latency_{slot}_ms": side.latency_ms,
            f"ttft_{slot}_ms": side.ttft_ms,
            f"error_{slot}": side.error,
        }
    return row | {"verdict": vote.verdict, "comment": vote.comment}


def _timestamp(when: datetime | None) -> str:
    """UTC, fixed width, so text order is time order."""
    if when is None:
        when = datetime.now(UTC)
    elif when.tzinfo is None:
        raise VoteError("created_at has no time zone; give an aware datetime (UTC)")
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _row_vote(row: sqlite3.Row) -> Vote:
    # Votes are read back whatever text limit the app runs with now.
    request = LlamaRequest.model_validate_json(
        row["request_json"], context={MAX_TEXT_CHARS_KEY: sys.maxsize}
    )

    def side(slot: str) -> Side:
        return Side(
            backend=row[f"backend_{slot}"],
            model_id=row[f"model_{slot}"],
            label=row[f"label_{slot}"],
            output=row[f"output_{slot}"],
            latency_ms=row[f"latency_{slot}_ms"],
            ttft_ms=row[f"ttft_{slot}_ms"],
            error=row[f"error_{slot}"],
            version=row[f"version_{slot}"],
        )

    return Vote(
        session_id=row["session_id"],
        request=request,
        a=side("a"),
        b=side("b"),
        verdict=row["verdict"],
        comment=row["comment"],
        id=row["id"],
        created_at=datetime.fromisoformat(row["created_at"]),
    )


# A cell starting with one of these is run as a formula by spreadsheet programs, and comments and
# model outputs are untrusted text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """The value as written to CSV: None as empty, formula-like text prefixed with a quote."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value
