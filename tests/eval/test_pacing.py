"""Pacing: a run against an overloaded server slows down and asks again instead of failing.

The server is the project's scripted server on loopback; its 503s and 429s are real HTTP.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import eval.runner as runner
from eval.cli import main as eval_main
from eval.pacing import Pacer, overloaded, pause_s
from eval.run_folder import read_predictions
from suggestions.testing import ScriptedServer, error_reply, sse_reply


def _dataset(path: Path, count: int) -> Path:
    rows = [
        {
            "id": f"g{i}",
            "type": "grammar",
            "source": f"She go to school {i} times.",
            "references": [f"She goes to school {i} times."],
        }
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def quick_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pauses' length is not under test here; their being taken is."""
    monkeypatch.setattr(runner, "pause_s", lambda tries: 0.01)
    monkeypatch.setenv("SUGGESTIONS_MAX_RETRIES", "0")  # every refusal reaches the runner


def test_a_row_refused_as_overloaded_is_asked_again_until_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quick_pauses: None
) -> None:
    dataset = _dataset(tmp_path / "d.jsonl", 1)
    replies = (
        error_reply(503, "busy", headers={"Retry-After": "1"}),
        error_reply(429),
        sse_reply(["She goes to school 0 times."]),
    )
    with ScriptedServer(*replies) as server:
        monkeypatch.setenv("MODAL_LLAMA_URL", server.url)
        args = ["run", "--dataset", str(dataset), "--backends", "custom", "--no-progress"]
        assert eval_main([*args, "--out", str(tmp_path / "run")]) == 0
        assert len(server.requests) == 3
    [row] = read_predictions(tmp_path / "run")
    assert row["ok"] and row["paced_tries"] == 3


def test_a_broken_server_is_not_asked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quick_pauses: None
) -> None:
    dataset = _dataset(tmp_path / "d.jsonl", 1)
    with ScriptedServer(error_reply(500), sse_reply(["never asked"])) as server:
        monkeypatch.setenv("MODAL_LLAMA_URL", server.url)
        args = ["run", "--dataset", str(dataset), "--backends", "custom", "--no-progress"]
        assert eval_main([*args, "--out", str(tmp_path / "run")]) == 0
        assert len(server.requests) == 1
    [row] = read_predictions(tmp_path / "run")
    assert not row["ok"] and row["status"] == 500 and row["paced_tries"] == 1


def test_the_tries_are_bounded_and_the_last_failure_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quick_pauses: None
) -> None:
    dataset = _dataset(tmp_path / "d.jsonl", 1)
    with ScriptedServer(*(error_reply(503) for _ in range(4))) as server:
        monkeypatch.setenv("MODAL_LLAMA_URL", server.url)
        args = ["run", "--dataset", str(dataset), "--backends", "custom", "--no-progress"]
        out = ["--out", str(tmp_path / "run"), "--overload-tries", "3"]
        assert eval_main([*args, *out]) == 0
        assert len(server.requests) == 3
    [row] = read_predictions(tmp_path / "run")
    assert row["error_kind"] == "unavailable" and row["paced_tries"] == 3


async def test_the_pacer_halves_on_overload_and_grows_back_on_success() -> None:
    pacer = Pacer(8)
    await pacer.overloaded()
    await pacer.overloaded()
    assert pacer.limit == 2
    for _ in range(6):
        await pacer.succeeded()
    assert 3.5 < pacer.limit < 5  # about one more per `limit` successes
    for _ in range(100):
        await pacer.succeeded()
    assert pacer.limit == 8 and pacer.lowest == 2


async def test_the_pacer_keeps_no_more_than_its_limit_in_flight() -> None:
    pacer = Pacer(4)
    await pacer.overloaded()  # 2 at once
    most = 0

    async def request() -> None:
        nonlocal most
        async with pacer.slot():
            most = max(most, pacer.in_flight)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(request() for _ in range(10)))
    assert most == 2 and pacer.in_flight == 0


def test_what_counts_as_overload() -> None:
    assert overloaded({"ok": False, "error_kind": "unavailable", "status": 503})
    assert overloaded({"ok": False, "error_kind": "rate_limited", "status": 429})
    assert overloaded({"ok": False, "error_kind": "timeout"})
    assert not overloaded({"ok": False, "error_kind": "unavailable"})  # unreachable: no status
    assert not overloaded({"ok": False, "error_kind": "internal", "status": 500})
    assert not overloaded({"ok": True})
    assert all(0.5 <= pause_s(1) <= 1 and 15 <= pause_s(9) <= 30 for _ in range(20))
