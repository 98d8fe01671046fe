"""The smoke CLI against a real local model service (tiny model, loopback HTTP)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modal_backend.deploy.smoke import base_url, main
from modal_backend.serving.engines.transformers_engine import TransformersEngine
from modal_backend.serving.local import serve_in_thread
from modal_backend.serving.server import create_app
from tests.model_service_support import (
    API_KEY,
    running_service,
    tiny_model_dir,
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> TransformersEngine:
    folder = tiny_model_dir(tmp_path_factory.mktemp("models"), "rambling")
    return TransformersEngine.load(folder, model_id="writing-llama", version="run-7")


@pytest.fixture(scope="module")
def service_url(engine: TransformersEngine) -> Iterator[str]:
    with running_service(engine) as url:
        yield url


def smoke(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(["--wait", "10", "--timeout", "30", *args], out=out)
    return status, out.getvalue()


def test_all_checks_pass_against_the_local_server(service_url: str) -> None:
    status, output = smoke("--url", service_url, "--api-key", API_KEY, "--max-tokens", "16")
    assert status == 0, output
    assert "ok    health: ready, model writing-llama, version run-7" in output
    assert "ok    auth: a request without the key gets 401" in output
    assert "ok    models: writing-llama is served (version run-7)" in output
    assert "ok    stream: " in output
    assert "time to first token" in output and "16 tokens, finish length" in output
    assert output.rstrip().endswith("All 4 checks passed.")
    assert API_KEY not in output


def test_the_key_is_read_from_the_environment_and_urls_are_normalised(
    service_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODAL_API_KEY", API_KEY)
    status, output = smoke("--url", f"{service_url}/v1/chat/completions", "--max-tokens", "8")
    assert status == 0, output
    assert base_url("https://x.modal.run/v1/") == "https://x.modal.run"


def test_a_server_with_another_key_fails_the_checks_that_need_the_key(service_url: str) -> None:
    wrong = "not-the-right-key-93"
    status, output = smoke("--url", service_url, "--api-key", wrong)
    assert status == 1
    assert "ok    health" in output and "ok    auth" in output
    assert "FAIL  models: GET /v1/models: HTTP 401: missing or wrong API key" in output
    assert "FAIL  stream: streaming request: HTTP 401" in output
    assert output.rstrip().endswith("2 of 4 checks failed.")
    assert wrong not in output


def test_a_model_the_server_does_not_serve_is_named(service_url: str) -> None:
    status, output = smoke("--url", service_url, "--api-key", API_KEY, "--model", "other")
    assert status == 1
    assert "FAIL  models: model 'other' is not served; the server serves writing-llama" in output
    assert "FAIL  stream: streaming request: HTTP 404" in output


def test_a_server_that_lets_everyone_in_fails_the_auth_check(
    engine: TransformersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment whose key check is bypassed (here: a front that adds the key) is caught."""
    inner = create_app(engine, api_key=API_KEY)

    async def adds_the_key(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
            scope = {
                **scope,
                "headers": [*headers, (b"authorization", f"Bearer {API_KEY}".encode())],
            }
        await inner(scope, receive, send)

    with serve_in_thread(adds_the_key) as url:
        status, output = smoke("--url", url, "--api-key", API_KEY, "--max-tokens", "8")
    assert status == 1
    assert "FAIL  auth: expected 401 without a key, got HTTP 200" in output


def test_an_unreachable_server_fails_health_after_the_wait() -> None:
    status, output = smoke("--url", "http://127.0.0.1:9", "--api-key", API_KEY, "--wait", "1")
    assert status == 1
    assert "FAIL  health: not ready within 1 s (last: ConnectError" in output


def test_the_module_runs_as_a_command_and_never_prints_the_key(service_url: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modal_backend.deploy.smoke",
            "--url",
            service_url,
            "--max-tokens",
            "8",
        ],
        env={**os.environ, "MODAL_API_KEY": API_KEY},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All 4 checks passed." in result.stdout
    assert API_KEY not in result.stdout + result.stderr

    missing = subprocess.run(
        [sys.executable, "-m", "modal_backend.deploy.smoke", "--url", service_url],
        env={k: v for k, v in os.environ.items() if k != "MODAL_API_KEY"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert missing.returncode == 2
    assert "no API key" in missing.stderr


def test_a_stream_chunk_that_is_not_json_fails_the_check_in_words() -> None:
    from suggestions.testing import Reply, ScriptedServer, error_reply

    def body(data: object) -> Reply:
        return Reply(
            headers={"Content-Type": "application/json"}, parts=[json.dumps(data).encode()]
        )

    garbled = Reply(
        headers={"Content-Type": "text/event-stream"},
        parts=[b"data: {not json\n\n", b"data: [DONE]\n\n"],
    )
    health = {"status": "ready", "model": "writing-llama", "version": "v1"}
    models = {"data": [{"id": "writing-llama", "version": "v1"}]}
    with ScriptedServer(body(health), error_reply(401), body(models), garbled) as server:
        status, output = smoke("--url", server.url, "--api-key", API_KEY)
    assert status == 1
    assert "FAIL  stream: a stream chunk is not JSON: '{not json'" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("engine_choice", "baseline_class"), [("vllm", "WritingModel"), ("transformers", "Baseline")]
)
def test_modal_run_smoke_tests_the_deployed_endpoint(
    engine_choice: str,
    baseline_class: str,
    service_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`modal run modal_backend/deploy/smoke_app.py`: the same checks, against the URL Modal
    gives for the deployed class (here our local server stands in for it). `--baseline` asks
    the class that answers as the baseline: the one GPU class with vLLM."""
    import modal_backend.deploy.smoke_app as serving
    from modal_backend.deploy.settings import DeploySettings

    looked_up: list[str] = []

    def endpoint_url(name: str) -> str:
        looked_up.append(name)
        return service_url

    monkeypatch.setattr(serving, "endpoint_url", endpoint_url)
    monkeypatch.setattr(
        serving, "SETTINGS", DeploySettings.from_env({"WRITING_ENGINE": engine_choice})
    )
    monkeypatch.setenv("MODAL_API_KEY", API_KEY)
    serving.smoke_test(wait=10)
    output = capsys.readouterr().out
    assert looked_up == ["WritingModel"]
    assert output.rstrip().endswith("All 4 checks passed."), output

    with pytest.raises(SystemExit) as failed:  # the baseline's model id is not served there
        serving.smoke_test(baseline=True, wait=10)
    assert failed.value.code == 1
    assert looked_up[-1] == baseline_class
    assert "model 'meta-llama/Meta-Llama-3.1-8B-Instruct' is not served" in capsys.readouterr().out
