import asyncio
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from suggestions import LlamaRequest, MockBackend, UsageEvent, UsageStore
from suggestions.service import SuggestionService


async def test_twenty_concurrent_calls_give_twenty_rows(tmp_path: Path) -> None:
    store = UsageStore(tmp_path / "usage.db")
    service = SuggestionService({"mock": MockBackend(delay_s=0.001)}, usage=store)
    requests = [LlamaRequest(text=f"Call {i} dont fail.", type="grammar") for i in range(20)]
    await asyncio.gather(*(service.suggest(r, backend="mock") for r in requests))
    await service.aclose()
    assert store.count() == 20
    [total] = store.totals()
    assert (total.calls, total.errors, total.backend, total.model_id) == (20, 0, "mock", "mock")
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _write_many(path: str, count: int) -> None:
    store = UsageStore(path)
    for _ in range(count):
        store.record(UsageEvent(backend="b", model_id="m", outcome="ok", latency_ms=1.0))


def test_threads_and_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    UsageStore(path)
    script = f"from tests.suggestions.test_usage import _write_many; _write_many({str(path)!r}, 25)"
    root = Path(__file__).parents[2]
    processes = [subprocess.Popen([sys.executable, "-c", script], cwd=root) for _ in range(3)]
    threads = [threading.Thread(target=_write_many, args=(str(path), 25)) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(process.wait(timeout=60) == 0 for process in processes)
    assert UsageStore(path).count() == 23 * 25


def test_totals_per_day_and_model_and_reopening_keeps_rows(tmp_path: Path) -> None:
    store = UsageStore(tmp_path / "usage.db")
    day1 = datetime(2026, 11, 25, 23, 59, tzinfo=UTC)
    day2 = datetime(2026, 11, 26, 0, 1, tzinfo=UTC)
    store.record(UsageEvent("custom", "v3", "ok", 10, 5, latency_ms=100, at=day1))
    store.record(UsageEvent("custom", "v3", "ok", 20, 7, True, latency_ms=300, at=day2))
    store.record(UsageEvent("custom", "v3", "error", error_kind="timeout", latency_ms=9, at=day2))
    store.record(UsageEvent("custom", "v3", "ok", cached=True, latency_ms=0.1, at=day2))
    store.record(UsageEvent("mock", "mock", "ok", 1, 1, latency_ms=1, at=day2))
    totals = UsageStore(store.path).totals()
    assert [(t.day, t.model_id) for t in totals] == [
        ("2026-11-26", "v3"),
        ("2026-11-26", "mock"),
        ("2026-11-25", "v3"),
    ]
    v3 = totals[0]
    assert (v3.calls, v3.errors, v3.cached, v3.prompt_tokens, v3.completion_tokens) == (
        3,
        1,
        1,
        20,
        7,
    )
    assert v3.estimated_calls == 1
    assert v3.mean_latency_ms == (300 + 0.1) / 2  # successful calls only
    assert [t.day for t in store.totals(day="2026-11-25")] == ["2026-11-25"]


def test_migrations_run_once(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    UsageStore(path)
    UsageStore(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM _migrations").fetchall() == [("_create_events",)]
