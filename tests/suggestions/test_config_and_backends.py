from types import ModuleType

import pytest
from pydantic import ValidationError

import suggestions
from suggestions import ChatBackend, MockBackend, Settings, build_backend
from suggestions.backends import chat_completions_url, complete
from suggestions.backends.mock import revise
from suggestions.contract import LlamaRequest
from suggestions.errors import AuthenticationFailed, ConfigurationError
from suggestions.prompts import build_baseline_messages, build_messages
from suggestions.retry import RetryPolicy, parse_retry_after


def test_settings_come_from_the_environment(monkeypatch, isolated_env) -> None:
    monkeypatch.setenv("MODAL_LLAMA_URL", "https://acme--writing-llama.modal.run")
    monkeypatch.setenv("MODAL_API_KEY", "sk-env-secret")
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("SUGGESTIONS_READ_TIMEOUT_S", "12.5")
    monkeypatch.setenv("SUGGESTIONS_CACHE_TTL_S", "60")
    settings = Settings()
    assert settings.is_production and settings.read_timeout_s == 12.5
    assert settings.cache_ttl_s == 60
    assert settings.usage_db_path == isolated_env / "usage.db"
    assert "sk-env-secret" not in repr(settings) and "sk-env-secret" not in str(settings)


def test_bad_settings_name_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("APP_ENV", "prod")
    with pytest.raises(ValidationError, match="APP_ENV"):
        Settings()


def test_custom_slot_is_the_mock_outside_production_without_a_url() -> None:
    backend = build_backend("custom", Settings(app_env="development"))
    assert isinstance(backend, MockBackend)
    assert (backend.name, backend.model_id) == ("custom", "mock")
    assert "MODAL_LLAMA_URL is not set" in backend.label


def test_custom_slot_refuses_to_fake_it_in_production() -> None:
    with pytest.raises(ConfigurationError, match="MODAL_LLAMA_URL is not set"):
        build_backend("custom", Settings(app_env="production"))


def test_configured_slots_use_their_prompt_key_and_model() -> None:
    settings = Settings(
        modal_llama_url="https://acme--writing-llama.modal.run",
        modal_api_key="k1",
        baseline_url="http://127.0.0.1:9000/v1",
        baseline_model="llama-3.1-8b",
    )
    custom = build_backend("custom", settings)
    baseline = build_backend("baseline", settings)
    assert isinstance(custom, ChatBackend) and isinstance(baseline, ChatBackend)
    assert custom.url == "https://acme--writing-llama.modal.run/v1/chat/completions"
    assert custom.label == "Modal: writing-llama"
    assert baseline.url == "http://127.0.0.1:9000/v1/chat/completions"
    assert baseline.model_id == "llama-3.1-8b" and baseline.key_env_var == "BASELINE_API_KEY"
    assert custom._build_prompt is build_messages
    assert baseline._build_prompt is build_baseline_messages


def test_baseline_without_url_says_what_to_set() -> None:
    with pytest.raises(ConfigurationError, match="BASELINE_URL is not set"):
        build_backend("baseline", Settings())


@pytest.mark.parametrize(
    "base",
    ["http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/chat/completions"],
)
def test_chat_url_accepts_root_v1_or_endpoint(base: str) -> None:
    assert chat_completions_url(base) == "http://h:1/v1/chat/completions"


def test_retry_after_parses_seconds_and_http_dates() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3", now=now) == 3.0
    assert parse_retry_after("Thu, 26 Nov 2026 12:00:05 GMT", now=now) == 5.0
    assert parse_retry_after("yesterday", now=now) is None
    assert parse_retry_after(None) is None


def test_backoff_grows_is_jittered_and_stops() -> None:
    policy = RetryPolicy(max_retries=3, base_delay_s=1.0, max_delay_s=3.0)
    delays = [policy.delay_before_retry(n, None) for n in (1, 2, 3)]
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0 and 1.5 <= delays[2] <= 3.0
    assert policy.delay_before_retry(4, None) is None
    assert policy.delay_before_retry(1, 2.5) == 2.5


async def test_mock_streams_word_by_word_with_real_edits() -> None:
    request = LlamaRequest(
        text="In order to win, i think their is a very big chance.", type="style"
    )
    backend = MockBackend(delay_s=0.001)
    deltas = [e.text async for e in backend.stream(request) if hasattr(e, "text")]
    assert len(deltas) > 5
    assert "".join(deltas) == "To win, I think there is an enormous chance."
    done = await complete(backend, request)
    assert done.text == "".join(deltas) and done.end.usage.completion_tokens == len(deltas)


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        (
            "grammar",
            "She go to school yesterday and buyed a books.",
            "She went to school yesterday and bought books.",
        ),
        ("clarity", "Due to the fact that it rained, we left.", "Because it rained, we left."),
        (
            "grammar",
            "Due to the fact that it rained, we left.",
            "Due to the fact that it rained, we left.",
        ),
        ("style", "It was very good and really very big.", "It was excellent and enormous."),
    ],
)
def test_mock_rules_depend_on_the_type(kind: str, text: str, expected: str) -> None:
    assert revise(text, kind) == expected  # type: ignore[arg-type]


def test_public_names_are_exactly_the_exported_ones() -> None:
    public = {
        name
        for name in dir(suggestions)
        if not name.startswith("_") and not isinstance(getattr(suggestions, name), ModuleType)
    }
    assert public == set(suggestions.__all__)


def test_modal_proxy_headers_go_to_modal_hosts_only() -> None:
    proxy = {"modal_proxy_key": "wk-1", "modal_proxy_secret": "ws-2\n"}
    on_modal = build_backend(
        "custom", Settings(modal_llama_url="https://acme--writing.modal.run", **proxy)
    )
    elsewhere = build_backend("baseline", Settings(baseline_url="https://api.example.com", **proxy))
    assert isinstance(on_modal, ChatBackend) and isinstance(elsewhere, ChatBackend)
    assert on_modal._extra_headers == {"Modal-Key": "wk-1", "Modal-Secret": "ws-2"}
    assert elsewhere._extra_headers == {}  # a third party never sees the token
    with pytest.raises(ConfigurationError, match="MODAL_PROXY_KEY and MODAL_PROXY_SECRET"):
        build_backend(
            "custom",
            Settings(modal_llama_url="https://acme.modal.run", modal_proxy_key="wk-1"),
        )


async def test_proxy_headers_are_sent_and_never_shown(grammar_request: LlamaRequest) -> None:
    from suggestions.testing import ScriptedServer, error_reply

    with ScriptedServer(error_reply(403, "token ws-secret-2 refused")) as server:
        backend = ChatBackend(
            name="custom",
            base_url=server.url,
            model="m",
            label="scripted",
            extra_headers={"Modal-Key": "wk-1", "Modal-Secret": "ws-secret-2"},
        )
        with pytest.raises(AuthenticationFailed) as failed:
            async for _ in backend.stream(grammar_request):
                pass
        await backend.aclose()
    headers = server.requests[0].headers
    assert headers["Modal-Key"] == "wk-1" and headers["Modal-Secret"] == "ws-secret-2"
    assert "ws-secret-2" not in failed.value.detail
