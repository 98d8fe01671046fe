"""The app's REST API over real HTTP: JSON and SSE answers from a real tiny model behind our model
service, and a clear error for each kind of bad input or failure."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.config import AppConfig
from suggestions import LlamaRequest
from suggestions.backends import ChatBackend, MockBackend
from suggestions.prompts import max_output_tokens
from tests.app_support import TINY_MODEL_ID, app_config, running_app, tiny_model_backend
from tests.model_service_support import GRAMMAR_ANSWER, GRAMMAR_REQUEST, running_service

APP_KEY = "app-key-51c2"


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> AppConfig:
    return app_config(tmp_path_factory.mktemp("app"), ("custom", "broken", "mock"))


@pytest.fixture(scope="module")
def app_url(taught_model_url: str, config: AppConfig) -> Iterator[str]:
    backends = {
        "custom": tiny_model_backend(taught_model_url),
        "broken": MockBackend(name="broken", fail_after=1),
        "mock": MockBackend(),
    }
    with running_app(config, backends) as url:
        yield url


def suggest_url(app_url: str, manuscript: str = "ms-42", backend: str | None = None) -> str:
    query = f"?backend={backend}" if backend else ""
    return f"{app_url}/api/manuscripts/{manuscript}/suggest{query}"


BODY = {"text": GRAMMAR_REQUEST.text, "type": "grammar"}


def test_json_answer_comes_from_the_model(app_url: str) -> None:
    response = httpx.post(suggest_url(app_url), json=BODY, timeout=60)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["revised_text"] == GRAMMAR_ANSWER
    assert answer["backend"] == "custom"
    assert answer["model_id"] == TINY_MODEL_ID
    assert [(s["original"], s["replacement"], s["start"]) for s in answer["suggestions"]] == [
        ("go", "went", 4)
    ]
    assert answer["usage"]["completion_tokens"] > 0


def test_sse_streams_deltas_then_the_final_response(app_url: str) -> None:
    events: list[tuple[str, dict[str, object]]] = []
    with httpx.stream(
        "POST",
        suggest_url(app_url, manuscript="ms-sse"),
        json={**BODY, "manuscript_id": "ms-sse"},
        headers={"Accept": "text/event-stream"},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    names = [name for name, _ in events]
    assert names[-1] == "response" and set(names[:-1]) == {"delta"}
    assert "".join(str(data["text"]) for _, data in events[:-1]).strip() == GRAMMAR_ANSWER
    assert events[-1][1]["revised_text"] == GRAMMAR_ANSWER


def test_a_failing_backend_gets_a_clear_error_in_json_and_in_sse(app_url: str) -> None:
    response = httpx.post(suggest_url(app_url, backend="broken"), json=BODY)
    assert response.status_code == 502
    assert response.json()["error"] == {
        "kind": "interrupted",
        "message": "The suggestion was interrupted before it finished. Please try again.",
    }
    streamed = httpx.post(
        suggest_url(app_url, backend="broken"),
        json=BODY,
        headers={"Accept": "text/event-stream"},
    )
    assert streamed.status_code == 200
    assert "event: delta" in streamed.text
    assert streamed.text.rstrip().splitlines()[-2] == "event: error"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"text": "", "type": "grammar"}, 422, "text"),
        ({"text": "Fine.", "type": "poetry"}, 422, "type"),
        ({"text": 42, "type": "grammar"}, 422, "text"),
        ({"text": "Fine.", "type": "grammar", "manuscript_id": "other"}, 422, "does not match"),
        ([1, 2], 422, "JSON object"),
    ],
)
def test_bad_input_gets_a_clear_error(app_url: str, body: object, status: int, words: str) -> None:
    response = httpx.post(suggest_url(app_url), json=body)
    assert response.status_code == status
    assert words in response.json()["error"]["message"]


def test_invalid_json_oversized_text_and_unknown_backend(app_url: str, config: AppConfig) -> None:
    bad = httpx.post(suggest_url(app_url), content=b"{not json", headers={"content-type": "x"})
    assert bad.status_code == 400
    huge = {"text": "a" * (config.settings.max_text_chars + 1), "type": "grammar"}
    too_long = httpx.post(suggest_url(app_url), json=huge)
    assert too_long.status_code == 422
    assert "limit" in too_long.json()["error"]["message"]
    enormous = httpx.post(suggest_url(app_url), content=b"x" * 2_000_000)
    assert enormous.status_code == 413
    unknown = httpx.post(suggest_url(app_url, backend="nope"), json=BODY)
    assert unknown.status_code == 404
    assert "nope" in unknown.json()["error"]["message"]


DEEP = b'{"text": ' + b"[" * 10_000 + b"]" * 10_000 + b', "type": "grammar"}'
SURROGATE = rb'{"text": "She go \ud800 home.", "type": "grammar"}'
SURROGATE_CONTEXT = rb'{"text": "She go home.", "type": "grammar", "context": "x\udfff"}'


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream"])
@pytest.mark.parametrize(
    ("raw", "status", "words"),
    [
        (DEEP, 400, "nested too deeply"),
        (SURROGATE, 422, "text has a character that is not valid Unicode text (U+D800"),
        (SURROGATE_CONTEXT, 422, "context has a character that is not valid Unicode"),
    ],
)
def test_hostile_bodies_get_words_not_a_500(
    app_url: str, raw: bytes, status: int, words: str, accept: str
) -> None:
    response = httpx.post(
        suggest_url(app_url, backend="mock"),
        content=raw,
        headers={"Content-Type": "application/json", "Accept": accept},
    )
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]


def sse_event_names(response: httpx.Response) -> list[str]:
    return [
        line.removeprefix("event: ")
        for line in response.text.splitlines()
        if line.startswith("event: ")
    ]


def test_a_model_answer_no_text_can_hold_is_a_clear_error(tmp_path: Path) -> None:
    """A server that streams a lone surrogate escape: refused as an unreadable answer, never a
    500 or a stream that ends without its last event."""
    from suggestions.testing import ScriptedServer, sse_reply

    broken = sse_reply(["She went", " \\ud800 home."])
    broken.parts[:] = [
        part.replace(b"\\\\ud800", b"\\ud800") if isinstance(part, bytes) else part
        for part in broken.parts
    ]
    with ScriptedServer(broken, broken) as server:
        backend = ChatBackend(name="custom", base_url=server.url, model="m", label="scripted")
        with running_app(app_config(tmp_path, ("custom",)), {"custom": backend}) as url:
            plain = httpx.post(suggest_url(url), json=BODY)
            streamed = httpx.post(
                suggest_url(url), json=BODY, headers={"Accept": "text/event-stream"}
            )
    assert plain.status_code == 502
    assert plain.json()["error"]["kind"] == "bad_response"
    names = sse_event_names(streamed)
    assert names[-1] == "error" and names.count("error") == 1 and "response" not in names
    assert '"kind": "bad_response"' in streamed.text


def test_healthz_lists_the_backends(app_url: str) -> None:
    health = httpx.get(f"{app_url}/healthz").json()
    assert health["status"] == "ok"
    assert health["columns"] == ["custom", "broken", "mock"]
    assert health["backends"]["custom"]["model_id"] == TINY_MODEL_ID


def test_an_api_key_when_configured_is_required(tmp_path: Path) -> None:
    config = app_config(tmp_path, ("mock",), api_key=APP_KEY)
    with running_app(config, {"mock": MockBackend()}) as url:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": APP_KEY}):
            refused = httpx.post(suggest_url(url, backend="mock"), json=BODY, headers=headers)
            assert refused.status_code == 401
            assert APP_KEY not in refused.text
        allowed = httpx.post(
            suggest_url(url, backend="mock"),
            json=BODY,
            headers={"Authorization": f"Bearer {APP_KEY}"},
        )
        assert allowed.status_code == 200
        assert allowed.json()["revised_text"] == "She went to school yesterday."


def test_a_client_that_leaves_a_json_request_stops_the_model(
    rambling_engine: object, tmp_path: Path
) -> None:
    """Without SSE the app only learns of a departed client by watching the connection: it must,
    or the model goes on writing an answer nobody will read (and holds the slot)."""
    from modal_backend.serving.engines.transformers_engine import TransformersEngine

    assert isinstance(rambling_engine, TransformersEngine)
    body = {"text": "word " * 800, "type": "style"}  # its prompt and budget fit the context
    budget = max_output_tokens(LlamaRequest.model_validate(body))  # what it would run to
    config = app_config(tmp_path, ("custom",))
    with (
        running_service(rambling_engine) as model_url,
        running_app(config, {"custom": tiny_model_backend(model_url)}) as url,
    ):
        before = rambling_engine.tokens_generated
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
            httpx.post(suggest_url(url), json=body, timeout=0.8)
        assert rambling_engine.tokens_generated > before, "the model had started"
        settled = -1
        while settled != rambling_engine.tokens_generated:
            settled = rambling_engine.tokens_generated
            time.sleep(0.5)
        assert settled - before < budget * 0.75, "generation went on after the client left"
        time.sleep(0.2)  # the usage row is written off the request's path
        with sqlite3.connect(config.settings.usage_db_path) as db:
            outcomes = [row[0] for row in db.execute("SELECT outcome FROM usage_events")]
        assert outcomes == ["cancelled"]


def test_a_client_that_leaves_an_sse_stream_stops_the_model(
    rambling_engine: object, tmp_path: Path
) -> None:
    from modal_backend.serving.engines.transformers_engine import TransformersEngine

    assert isinstance(rambling_engine, TransformersEngine)
    config = app_config(tmp_path, ("custom",))
    with (
        running_service(rambling_engine) as model_url,
        running_app(config, {"custom": tiny_model_backend(model_url)}) as url,
    ):
        before = rambling_engine.tokens_generated
        with httpx.stream(
            "POST",
            suggest_url(url),
            json={"text": "word " * 400, "type": "style"},
            headers={"Accept": "text/event-stream"},
            timeout=60,
        ) as response:
            for line in response.iter_lines():
                if line == "event: delta":
                    break
        time.sleep(1.0)
        settled = rambling_engine.tokens_generated
        time.sleep(0.5)
        assert rambling_engine.tokens_generated == settled, "generation went on"
        assert settled - before < 1500
