"""`python -m app` as a user runs it: it starts a local model server for the custom and baseline
columns, serves the page and the API, and on Ctrl-C stops, taking the model server with it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.config import AppConfig
from modal_backend.serving.local import free_port
from modal_backend.serving.model_parts import GEMMA_270M, ensure_model


@pytest.fixture(scope="module")
def gemma_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real GGUF model, assembled from its installed part packages (no download)."""
    return ensure_model(GEMMA_270M, tmp_path_factory.mktemp("cache"), download=False)


def wait_for(url: str, process: subprocess.Popen[bytes], timeout_s: float = 90) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the app exited early"
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout_s:.0f} s")


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_the_app_starts_its_local_model_and_stops_it_on_ctrl_c_or_sigterm(
    gemma_path: Path, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    port = free_port()
    env = {**os.environ, "SUGGESTIONS_HOME": str(tmp_path / "state")}
    command = [sys.executable, "-m", "app", "--port", str(port), "--local-model", str(gemma_path)]
    process = subprocess.Popen(
        command,
        env=env,
        cwd=Path(__file__).parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        health = wait_for(f"http://127.0.0.1:{port}/healthz", process).json()
        custom, baseline = health["backends"]["custom"], health["backends"]["baseline"]
        assert custom["label"] == f"local model: {gemma_path.name}, task prompt"
        assert baseline["label"] == f"local model: {gemma_path.name}, old generic prompt"
        assert custom["model_id"] == baseline["model_id"] == gemma_path.stem
        assert health["backends"]["mock"]["model_id"] == "mock"
        # The page itself is served.
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status_code == 200 and "gradio" in page.text.lower()
        # A real answer from the local model server (Gemma is a base model that never ends its
        # turn, so it runs to its token limit: the API says so in words).
        answer = httpx.post(
            f"http://127.0.0.1:{port}/api/manuscripts/m-1/suggest",
            json={"text": "She go home.", "type": "grammar"},
            timeout=120,
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["kind"] == "truncated"
        model_log = (tmp_path / "state" / "local-model-server.log").read_text()
        found = re.search(r"Model service on http://127\.0\.0\.1:(\d+)", model_log)
        assert found, model_log
        model_port = int(found.group(1))
    finally:
        process.send_signal(stop_signal)
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == (0 if stop_signal == signal.SIGINT else 128 + stop_signal), output
    assert f"http://127.0.0.1:{port}" in output
    with pytest.raises(httpx.TransportError):  # the model server went with the app
        httpx.get(f"http://127.0.0.1:{model_port}/health", timeout=2)


def test_a_bad_configuration_is_reported_in_words(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SUGGESTIONS_HOME": str(tmp_path),
        "APP_COLUMNS": "custom,sparkle",
    }
    result = subprocess.run(
        [sys.executable, "-m", "app", "--no-local-model"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "APP_COLUMNS names unknown backends sparkle" in result.stderr
    assert "Traceback" not in result.stderr
    flag = subprocess.run(
        [sys.executable, "-m", "app", "--columns", "mock,glitter"],
        env={**env, "APP_COLUMNS": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert flag.returncode == 1
    assert "--columns names unknown backends glitter" in flag.stderr


def test_login_needs_both_variables() -> None:
    with pytest.raises(Exception, match="APP_USERNAME and APP_PASSWORD"):
        AppConfig.from_env({"APP_USERNAME": "reviewer"})
    config = AppConfig.from_env({"APP_USERNAME": "reviewer", "APP_PASSWORD": "s3cret"})
    assert config.auth == ("reviewer", "s3cret")
