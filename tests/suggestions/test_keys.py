"""One way to read a key and one way to check `Authorization`, for the model service and the
app's REST API alike: a key from a secrets file with a trailing newline works everywhere, and
every server accepts the same spellings of the header."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.config import AppConfig
from suggestions.backends import MockBackend
from suggestions.errors import ConfigurationError
from suggestions.keys import authorization_matches, bearer_token, read_api_key
from tests.app_support import app_config, running_app
from tests.model_service_support import API_KEY

APP_KEY = "app-key-9d41"
WIRE_SPELLINGS = ("Bearer {k}", "bearer {k}", "BEARER {k}", "Bearer   {k}")
# HTTP strips the value's ends before a server sees it; a direct caller may not
SPELLINGS = (*WIRE_SPELLINGS, "  Bearer   {k}  ", "Bearer {k}\t")


@pytest.mark.parametrize("raw", ["k-1", " k-1", "k-1\n", "\tk-1\r\n"])
def test_a_key_is_read_without_surrounding_whitespace(raw: str) -> None:
    assert read_api_key(raw, "APP_API_KEY") == "k-1"


@pytest.mark.parametrize("raw", [None, "", "  \n"])
def test_a_blank_key_is_no_key(raw: str | None) -> None:
    assert read_api_key(raw, "APP_API_KEY") is None


@pytest.mark.parametrize("raw", ["two words", "caf\u00e9", "k\x00ey"])
def test_a_key_no_header_can_carry_is_refused_by_name(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="APP_API_KEY") as refused:
        read_api_key(raw, "APP_API_KEY")
    assert raw not in str(refused.value)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_of_bearer_gives_the_token(spelling: str) -> None:
    assert bearer_token(spelling.format(k="abc")) == "abc"
    assert authorization_matches(spelling.format(k="abc"), "abc")


@pytest.mark.parametrize("header", [None, "", "abc", "Basic abc", "Bearer", "Bearer ", "Bearerabc"])
def test_other_headers_carry_no_token(header: str | None) -> None:
    assert bearer_token(header) is None
    assert not authorization_matches(header, "abc")


def test_app_api_key_from_the_environment_is_trimmed(tmp_path: Path) -> None:
    config = AppConfig.from_env({"APP_API_KEY": f"{APP_KEY}\n"}, eval_runs_dir=tmp_path)
    assert config.api_key == APP_KEY


@pytest.fixture(scope="module")
def guarded_app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app with its key read as from a secrets file (trailing newline included)."""
    root = tmp_path_factory.mktemp("keys")
    key = AppConfig.from_env({"APP_API_KEY": f"{APP_KEY}\n"}).api_key
    config = app_config(root, ("mock",), api_key=key)
    with running_app(config, {"mock": MockBackend()}) as url:
        yield url


@pytest.mark.parametrize("spelling", WIRE_SPELLINGS)
def test_both_servers_accept_the_same_spellings(
    spelling: str, guarded_app_url: str, taught_model_url: str
) -> None:
    app = httpx.post(
        f"{guarded_app_url}/api/manuscripts/ms-1/suggest?backend=mock",
        json={"text": "She go home.", "type": "grammar"},
        headers={"Authorization": spelling.format(k=APP_KEY)},
        timeout=30,
    )
    assert app.status_code == 200, app.text
    model = httpx.get(
        f"{taught_model_url}/v1/models", headers={"Authorization": spelling.format(k=API_KEY)}
    )
    assert model.status_code == 200, model.text


@pytest.mark.parametrize("header", ["", f"Basic {APP_KEY}", APP_KEY, f"Bearer {APP_KEY}x"])
def test_the_app_refuses_anything_else(header: str, guarded_app_url: str) -> None:
    response = httpx.post(
        f"{guarded_app_url}/api/manuscripts/ms-1/suggest?backend=mock",
        json={"text": "She go home.", "type": "grammar"},
        headers={"Authorization": header} if header else {},
        timeout=30,
    )
    assert response.status_code == 401
    assert APP_KEY not in response.text
