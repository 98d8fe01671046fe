"""In production the reviewer app has no unguarded door: Gradio's own API does what the REST
route does, so the page must require a login (or Modal proxy auth must stand in front of the
whole app), and the app refuses to start otherwise, saying which variables to set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from suggestions.backends import MockBackend
from suggestions.errors import ConfigurationError
from tests.app_support import app_config, running_app

PRODUCTION = {
    "APP_ENV": "production",
    "APP_API_KEY": "app-key-3b7e",
    "MODAL_LLAMA_URL": "http://127.0.0.1:9/",
}


def test_production_without_a_login_refuses_to_start_and_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.config import AppConfig

    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as refused:
        AppConfig.from_env()
    for variable in ("APP_USERNAME", "APP_PASSWORD", "APP_PROXY_AUTH", "WRITING_UI_LOGIN_SECRET"):
        assert variable in str(refused.value)
    monkeypatch.setenv("APP_PROXY_AUTH", "1")  # Modal's proxy guards every route instead
    assert AppConfig.from_env().proxy_auth
    monkeypatch.setenv("APP_PROXY_AUTH", "0")
    monkeypatch.setenv("APP_USERNAME", "reviewer")
    monkeypatch.setenv("APP_PASSWORD", "pass-1")
    assert AppConfig.from_env().auth == ("reviewer", "pass-1")


def test_python_m_app_refuses_production_without_a_login(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "app", "--columns", "mock", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **PRODUCTION},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "APP_USERNAME and APP_PASSWORD" in run.stderr
    assert "app-key-3b7e" not in run.stderr


def test_with_a_login_gradio_api_needs_it_as_the_rest_route_needs_the_key(
    tmp_path: Path,
) -> None:
    config = app_config(tmp_path, ("mock",), api_key="app-key-3b7e", auth=("reviewer", "pw-9"))
    with running_app(config, {"mock": MockBackend()}) as url:
        with pytest.raises(ValueError, match="credentials were not provided"):
            Client(url, verbose=False)
        assert httpx.get(f"{url}/gradio_api/info").status_code == 401
        reviewer = Client(url, auth=("reviewer", "pw-9"), verbose=False)
        assert (
            "/compare"
            in reviewer.view_api(return_format="dict", print_info=False)["named_endpoints"]
        )
        rest = httpx.post(
            f"{url}/api/manuscripts/m/suggest?backend=mock",
            json={"text": "She go home.", "type": "grammar"},
        )
        assert rest.status_code == 401
