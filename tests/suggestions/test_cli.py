"""The CLI as a user runs it: a subprocess, real environment variables, a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from suggestions import LlamaResponse, UsageStore
from suggestions.testing import ScriptedServer, error_reply, sse_reply

KEY = "sk-cli-secret-987654"
SENTENCE = "She go to school yesterday and buyed a books."


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None):
    return subprocess.run(
        [sys.executable, "-m", "suggestions", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_suggest_streams_the_mock_and_records_usage(isolated_env: Path) -> None:
    result = run_cli("suggest", SENTENCE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("She went to school yesterday and bought books.\n")
    assert "[4:6] 'go' -> 'went'" in result.stdout
    assert "mock (MODAL_LLAMA_URL is not set)" in result.stdout
    assert UsageStore(isolated_env / "usage.db").count() == 1

    usage = run_cli("usage")
    assert usage.returncode == 0
    header, row = usage.stdout.splitlines()[:2]
    assert header.split()[:4] == ["day", "backend", "model", "calls"]
    assert row.split()[1:4] == ["custom", "mock", "1"]


def test_json_output_is_a_valid_response_and_stdin_works() -> None:
    result = run_cli("suggest", "--json", "--type", "clarity", "-", stdin="In order to go, i left.")
    assert result.returncode == 0, result.stderr
    response = LlamaResponse.model_validate_json(result.stdout)
    assert response.revised_text == "To go, I left."
    assert {s.type for s in response.suggestions} == {"clarity"}


def test_talks_to_a_real_server_with_the_key_from_the_environment() -> None:
    with ScriptedServer(
        sse_reply(["She went to school", " yesterday and bought books."])
    ) as server:
        env = {"MODAL_LLAMA_URL": server.url, "MODAL_API_KEY": KEY}
        result = run_cli("suggest", "--json", SENTENCE, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model_id"] == "scripted-model"
    assert server.requests[0].headers["Authorization"] == f"Bearer {KEY}"


def test_backend_failure_gives_a_friendly_message_and_exit_1_without_the_key() -> None:
    with ScriptedServer(default=error_reply(503, "overloaded")) as server:
        env = {
            "MODAL_LLAMA_URL": server.url,
            "MODAL_API_KEY": KEY,
            "SUGGESTIONS_MAX_RETRIES": "1",
        }
        result = run_cli("-v", "suggest", SENTENCE, env=env)
    assert result.returncode == 1
    assert (
        "error: Writing suggestions are temporarily unavailable. Please try again in a moment."
        in result.stderr
    )
    assert "status=503 attempts=2" in result.stderr  # the detail is logged for the operator
    assert len(server.requests) == 2
    assert KEY not in result.stdout + result.stderr


def test_invalid_input_exits_2_naming_the_field() -> None:
    result = run_cli("suggest", "   ")
    assert result.returncode == 2
    assert "text: text is empty" in result.stderr
    long = run_cli("suggest", "x" * 50, env={"SUGGESTIONS_MAX_TEXT_CHARS": "10"})
    assert long.returncode == 2 and "the limit is 10" in long.stderr


def test_missing_configuration_says_what_to_set() -> None:
    baseline = run_cli("suggest", "--backend", "baseline", SENTENCE)
    assert baseline.returncode == 2 and "BASELINE_URL is not set" in baseline.stderr
    production = run_cli("suggest", SENTENCE, env={"APP_ENV": "production"})
    assert production.returncode == 2 and "MODAL_LLAMA_URL is not set" in production.stderr


def test_schema_command_prints_the_snapshot() -> None:
    result = run_cli("schema")
    snapshot = Path(__file__).parent / "snapshots" / "contract.schema.json"
    assert json.loads(result.stdout) == json.loads(snapshot.read_text())


def test_a_copied_env_example_works_as_is(isolated_env: Path) -> None:
    example = Path(__file__).parents[2] / ".env.example"
    Path(".env").write_text(example.read_text())
    result = run_cli("suggest", SENTENCE)
    assert result.returncode == 0, result.stderr
    assert UsageStore(isolated_env / "usage.db").count() == 1


def test_a_dotenv_file_in_the_working_directory_is_read() -> None:
    with ScriptedServer(sse_reply(["She went to school yesterday and bought books."])) as server:
        Path(".env").write_text(f"MODAL_LLAMA_URL={server.url}\nMODAL_API_KEY={KEY}\n")
        result = run_cli("suggest", "--json", SENTENCE)
    assert result.returncode == 0, result.stderr
    assert server.requests[0].headers["Authorization"] == f"Bearer {KEY}"


def test_undecodable_input_is_bad_input_not_a_crash() -> None:
    """Bytes that are not UTF-8, on standard input or as an argument (which Python turns into
    lone surrogates), exit 2 with words, not 1 with a traceback."""
    piped = subprocess.run(
        [sys.executable, "-m", "suggestions", "suggest", "-"],
        input=b"She go \xff\xfe home.",
        capture_output=True,
        timeout=60,
    )
    assert piped.returncode == 2, piped.stderr
    assert b"not UTF-8" in piped.stderr and b"Traceback" not in piped.stderr
    argument = subprocess.run(
        [sys.executable.encode(), b"-m", b"suggestions", b"suggest", b"She go \xff home."],
        capture_output=True,
        timeout=60,
    )
    assert argument.returncode == 2, argument.stderr
    assert b"not valid Unicode" in argument.stderr and b"Traceback" not in argument.stderr
