"""Which version of a model answered a blind vote: asked of our real model service (one engine,
two model ids, a promotion in the middle), recorded with the vote, and told apart by the
leaderboard. The engine is a stand-in that answers at once, so no model is loaded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gradio_client import Client

from app.compare import Column, ModelVersions, settled
from app.config import AppConfig
from app.votes import UNKNOWN_VERSION, UNVERSIONED, VoteStore
from modal_backend.serving.engines.base import Delta, Finished, StopFlag, ThreadedStream
from suggestions.backends import ChatBackend, MockBackend, build_backends
from suggestions.config import Settings
from suggestions.service import SuggestionService
from suggestions.testing import Reply, ScriptedServer, error_reply
from tests.app_support import app_config, running_app
from tests.model_service_support import API_KEY, GRAMMAR_ANSWER, GRAMMAR_REQUEST, running_service

BASE_ID, TUNED_ID = "smollm2-135m-instruct", "writing-llama"


class TwoModels:
    """One engine serving the stock base and our adapter as two model ids, as vLLM does; the
    adapter's version changes when a run is promoted."""

    model_id = BASE_ID
    version = "stock"
    max_concurrency = 4

    def __init__(self) -> None:
        self.versions = {BASE_ID: "stock", TUNED_ID: "run-7"}

    def models(self) -> dict[str, str]:
        return dict(self.versions)

    def stream(self, messages: object, params: object, model: str | None = None) -> ThreadedStream:
        def work(emit: Callable[[Any], None], stop: StopFlag) -> None:
            emit(Delta(GRAMMAR_ANSWER))
            emit(Finished("stop", prompt_tokens=20, completion_tokens=7))

        return ThreadedStream(work)

    def status(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


@pytest.fixture
def engine() -> TwoModels:
    return TwoModels()


@pytest.fixture
def model_url(engine: TwoModels) -> Iterator[str]:
    with running_service(engine) as url:  # type: ignore[arg-type]
        yield url


def _settings(url: str, **changes: Any) -> Settings:
    """Both model slots on one server, as the deployment and the local launcher set them."""
    values: dict[str, Any] = {
        "modal_llama_url": url,
        "modal_api_key": API_KEY,
        "modal_llama_model": TUNED_ID,
        "baseline_url": url,
        "baseline_api_key": API_KEY,
        "baseline_model": BASE_ID,
    }
    return Settings(**(values | changes))


def _service(settings: Settings) -> SuggestionService:
    return SuggestionService(build_backends(("custom", "baseline", "mock"), settings))


async def test_each_model_id_gets_its_own_version_and_a_promotion_is_seen_at_once(
    engine: TwoModels, model_url: str
) -> None:
    settings = _settings(model_url)
    service, versions = _service(settings), ModelVersions()
    names = ("custom", "baseline", "mock")

    assert await versions.of(service, names) == ("run-7", "stock", UNVERSIONED)
    engine.versions[TUNED_ID] = "run-8"  # promoted while the app runs: nothing is cached
    assert await versions.of(service, names) == ("run-8", "stock", UNVERSIONED)
    assert await versions.of(service, names, [TUNED_ID, TUNED_ID, "mock"]) == (
        "run-8",
        "run-8",  # the id that answered is the one asked about
        UNVERSIONED,
    )
    await service.aclose()


async def test_a_failed_lookup_is_unknown_not_an_error(model_url: str) -> None:
    versions = ModelVersions(timeout_s=2.0)
    not_served = ChatBackend(
        name="custom", base_url=model_url, model="no-such-model", label="x", api_key=API_KEY
    )
    assert await versions.version(not_served) == UNKNOWN_VERSION  # 404 from the service
    wrong_key = _settings(model_url, modal_api_key="not-the-key")
    custom = build_backends(("custom",), wrong_key)["custom"]
    assert await versions.version(custom) == UNKNOWN_VERSION  # 401
    gone = _settings("http://127.0.0.1:9")
    down = build_backends(("custom",), gone)["custom"]
    assert await ModelVersions(timeout_s=1.0).version(down) == UNKNOWN_VERSION
    assert await versions.version(MockBackend(name="custom")) == UNVERSIONED


def _card(body: bytes) -> Reply:
    return Reply(headers={"Content-Type": "application/json"}, parts=[body])


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (_card(b'{"id": "writing-llama", "object": "model"}'), UNVERSIONED),  # plain OpenAI
        (_card(b'{"id": "writing-llama", "version": null}'), UNVERSIONED),
        (_card(b'{"id": "writing-llama", "version": " run-9 "}'), "run-9"),
        (_card(b'{"id": "writing-llama", "version": 9}'), UNKNOWN_VERSION),
        (_card(b"[1, 2]"), UNKNOWN_VERSION),
        (_card(b"<html>proxy error</html>"), UNKNOWN_VERSION),
        (error_reply(503, "loading"), UNKNOWN_VERSION),
    ],
)
async def test_what_a_server_says_about_the_version(reply: Reply, expected: str) -> None:
    with ScriptedServer(reply) as server:
        settings = _settings(f"{server.url}/v1")
        backend = build_backends(("custom",), settings)["custom"]
        assert await ModelVersions().version(backend) == expected
        (request,) = server.requests
    assert (request.method, request.path) == ("GET", f"/v1/models/{TUNED_ID}")
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"


async def test_the_key_goes_only_to_the_server_the_settings_give_it_for() -> None:
    """A backend pointed elsewhere than its slot's configured URL, with no key of its own, is
    asked without the slot's key."""
    card = _card(b'{"id": "m", "version": "v1"}')
    with ScriptedServer(card) as elsewhere, ScriptedServer(card) as configured:
        backend = ChatBackend(name="custom", base_url=elsewhere.url, model="m", label="x")
        assert await ModelVersions().version(backend) == "v1"
        (request,) = elsewhere.requests
        assert "Authorization" not in request.headers
        assert configured.requests == []


def test_a_version_that_changed_while_answering_is_unknown() -> None:
    columns = (Column("custom", "ours", TUNED_ID), Column("baseline", "stock", BASE_ID))
    after = settled(columns, ("run-7", "stock"), ("run-8", "stock"))
    assert [column.version for column in after] == [UNKNOWN_VERSION, "stock"]


@pytest.fixture
def config(tmp_path: Any, model_url: str) -> AppConfig:
    return app_config(tmp_path, ("custom", "baseline"), settings=_settings(model_url))


def _vote_once(client: Client, verdict: str) -> str:
    status = client.predict(GRAMMAR_REQUEST.text, "grammar", api_name="/blind_draw")[0]
    assert status == "Which answer is better?"
    return str(client.predict(None, "", api_name=f"/vote_{verdict}")[0])


def test_blind_votes_record_each_sides_version_and_the_leaderboard_splits_them(
    engine: TwoModels, config: AppConfig
) -> None:
    backends = build_backends(config.columns, config.settings)  # as the app builds them
    with running_app(config, backends, seed=1) as url:
        client = Client(url, verbose=False)
        reveal = _vote_once(client, "a")
        engine.versions[TUNED_ID] = "run-8"
        _vote_once(client, "b")
        board = client.predict(api_name="/leaderboard")[0]
        client.close()

    assert f"`{TUNED_ID} @ run-7`" in reveal and f"`{BASE_ID} @ stock`" in reveal
    first, second = VoteStore(config.votes_path).votes()
    sides = [{side.backend: side for side in (vote.a, vote.b)} for vote in (first, second)]
    assert [(s["custom"].model_id, s["custom"].version) for s in sides] == [
        (TUNED_ID, "run-7"),
        (TUNED_ID, "run-8"),
    ]
    assert [(s["baseline"].model_id, s["baseline"].version) for s in sides] == [
        (BASE_ID, "stock")
    ] * 2
    systems = {row[board["headers"].index("system")] for row in board["data"]}
    assert systems == {
        f"custom: {TUNED_ID} @ run-7",
        f"custom: {TUNED_ID} @ run-8",
        f"baseline: {BASE_ID} @ stock",
    }
