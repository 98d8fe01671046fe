"""Usage tracking: one row per suggestion call, in a SQLite file (WAL mode).

Writers open a short-lived connection each, so threads and processes can record at once; WAL plus
a busy timeout makes them queue instead of failing. The schema grows only through the append-only
`MIGRATIONS` list.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

Outcome = Literal["ok", "error", "cancelled"]


@dataclass(frozen=True)
class UsageEvent:
    """What one call cost and how it went."""

    backend: str
    model_id: str
    outcome: Outcome
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_estimated: bool = False
    time_to_first_token_ms: float | None = None
    latency_ms: float = 0.0
    cached: bool = False
    error_kind: str | None = None
    suggestion_type: str | None = None
    manuscript_id: str | None = None
    at: datetime | None = None  # defaults to now, in UTC


@dataclass(frozen=True)
class UsageTotals:
    """Totals for one model on one day (UTC)."""

    day: str
    backend: str
    model_id: str
    calls: int
    errors: int
    cached: int
    prompt_tokens: int
    completion_tokens: int
    estimated_calls: int
    mean_latency_ms: float | None


def _create_events(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE usage_events (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            day TEXT NOT NULL,
            backend TEXT NOT NULL,
            model_id TEXT NOT NULL,
            outcome TEXT NOT NULL,
            error_kind TEXT,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            tokens_estimated INTEGER NOT NULL,
            time_to_first_token_ms REAL,
            latency_ms REAL NOT NULL,
            cached INTEGER NOT NULL,
            suggestion_type TEXT,
            manuscript_id TEXT
        )
        """
    )
    db.execute("CREATE INDEX usage_events_day_model ON usage_events (day, model_id)")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_create_events]


class UsageStore:
    """Appends usage events to a SQLite file and sums them up."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            _migrate(db)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30.0, isolation_level=None)) as db:
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; a commit needs no fsync
            yield db

    def record(self, event: UsageEvent) -> None:
        at = (event.at or datetime.now(UTC)).astimezone(UTC)
        row = asdict(event) | {"at": at.isoformat(), "day": at.date().isoformat()}
        row["tokens_estimated"] = int(event.tokens_estimated)
        row["cached"] = int(event.cached)
        columns = ", ".join(row)
        placeholders = ", ".join(f":{name}" for name in row)
        with self._connect() as db:
            db.execute(f"INSERT INTO usage_events ({columns}) VALUES ({placeholders})", row)

    def count(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM usage_events").fetchone()[0])

    def totals(self, *, day: str | None = None) -> list[UsageTotals]:
        """Per day, backend and model; newest day first. `day` (YYYY-MM-DD) narrows to one."""
        query = """
            SELECT day, backend, model_id, COUNT(*),
                   SUM(outcome = 'error'), SUM(cached),
                   SUM(prompt_tokens), SUM(completion_tokens), SUM(tokens_estimated),
                   AVG(CASE WHEN outcome = 'ok' THEN latency_ms END)
            FROM usage_events
            WHERE (:day IS NULL OR day = :day)
            GROUP BY day, backend, model_id
            ORDER BY day DESC, backend, model_id
        """
        with self._connect() as db:
            rows = db.execute(query, {"day": day}).fetchall()
        return [UsageTotals(*row) for row in rows]


def _migrate(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, at TEXT)")
        done = {name for (name,) in db.execute("SELECT name FROM _migrations")}
        for migration in MIGRATIONS:
            if migration.__name__ not in done:
                migration(db)
                db.execute(
                    "INSERT INTO _migrations VALUES (?, ?)",
                    (migration.__name__, datetime.now(UTC).isoformat()),
                )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
