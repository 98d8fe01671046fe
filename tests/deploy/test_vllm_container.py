"""The vLLM model container, offline: `WritingModel` run through `.local()` (the snapshot hooks,
then the ASGI app served over HTTP) on a folder laid out like the weights volume.

The one stand-in is at the true edge, the GPU: `FakeVLLM` takes `VLLMEngine`'s place and keeps
what was asked of it, in order, and answers in words that say which model id answered. The
hooks, the lifecycle, the promotion follower, the server and the reviewer app are our own."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from modal_backend.deploy import gpu_plan, model_lifecycle
from modal_backend.serving.engines import vllm_engine
from modal_backend.serving.engines.base import Delta, Emit, Finished, StopFlag, ThreadedStream
from modal_backend.serving.promotion_follower import PromotionFollower
from modal_backend.serving.registry import Registry
from modal_backend.serving.weights import WeightsUnavailable
from tests.deploy.support import BASELINE_ID, answer, container, deploy_with, served
from tests.model_service_support import API_KEY, GRAMMAR_ANSWER, auth

Event = tuple[Any, ...]


class FakeVLLM:
    """`VLLMEngine` without vLLM or a GPU: the calls it gets, the ids it serves."""

    events: ClassVar[list[Event]] = []  # both reset per test by the fixture
    instances: ClassVar[list[FakeVLLM]] = []

    def __init__(
        self,
        model_path: Path,
        *,
        model_id: str,
        version: str = "unversioned",
        adapters: dict[str, tuple[Path, str]] | None = None,
        settings: vllm_engine.VLLMSettings | None = None,
    ) -> None:
        self.model_id, self.version, self.settings = model_id, version, settings
        self.max_concurrency = 4
        self.adapters: dict[str, str] = {}
        self.events.append(("start", Path(model_path), model_id, version))
        self.instances.append(self)
        assert not adapters, "the adapter comes after the restore, from the follower"

    def sleep(self, level: int = 1) -> None:
        self.events.append(("sleep", level))

    def wake_up(self) -> None:
        self.events.append(("wake_up",))

    def set_adapter(self, model_id: str, path: str | Path, version: str) -> bool:
        self.events.append(("set_adapter", model_id, version))
        self.adapters[model_id] = version
        return True

    def adapter_version(self, model_id: str) -> str | None:
        return self.adapters.get(model_id)

    def models(self) -> dict[str, str]:
        return {self.model_id: self.version, **self.adapters}

    def status(self) -> dict[str, Any]:
        return {"engine": "vllm", "adapters": {}}

    def stream(self, messages: object, params: object, model: str | None = None) -> ThreadedStream:
        text = GRAMMAR_ANSWER if model in self.adapters else "She goes to school yesterday."

        def work(emit: Emit, stop: StopFlag) -> None:
            emit(Delta(text))
            emit(Finished("stop", 9, 7))

        return ThreadedStream(work)

    def close(self) -> None:
        self.events.append(("close",))


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Event]]:
    """The fake in vLLM's place, and the followers the containers start stopped afterwards."""
    recorded: list[Event] = []
    monkeypatch.setattr(FakeVLLM, "events", recorded)
    monkeypatch.setattr(FakeVLLM, "instances", [])
    monkeypatch.setattr(vllm_engine, "VLLMEngine", FakeVLLM)
    followers: list[PromotionFollower] = []

    class Followed(PromotionFollower):
        def start(self, interval_s: float = 5.0) -> None:
            followers.append(self)
            super().start(interval_s)

    monkeypatch.setattr(model_lifecycle, "PromotionFollower", Followed)
    yield recorded
    for follower in followers:
        follower.stop()


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """`base/stock` (the stock model), `runs/run-a` and `runs/run-b` (adapters), `runs/run-m`
    (merged weights only); nothing promoted yet. The files are only what the loaders check."""
    root = tmp_path / "volume"
    (root / "base" / "stock").mkdir(parents=True)
    (root / "base" / "stock" / "config.json").write_text("{}")
    registry = Registry(root)
    for run_id, version in (("run-a", "2026.03.1"), ("run-b", "2026.04.1")):
        adapter = registry.run_dir(run_id) / "adapter"
        adapter.mkdir(parents=True)
        (adapter / "adapter_config.json").write_text(json.dumps({"r": 16}))
        (adapter / "adapter_model.safetensors").write_bytes(b"")
        registry.write_manifest(run_id, {"version": version, "base_model": "base/stock"})
    merged = registry.run_dir("run-m") / "merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    (merged / "model.safetensors").write_bytes(b"")
    registry.write_manifest("run-m", {"version": "2026.05.1", "base_model": "base/stock"})
    return root


def vllm_app(monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    """The serving app with vLLM (the default), the base from the volume, a fast follower."""
    deploy = deploy_with(monkeypatch, WRITING_BASELINE_WEIGHTS="base/stock", **env).module
    monkeypatch.setattr(deploy, "FOLLOW_INTERVAL_S", 0.05)
    return deploy


def eventually(read: Callable[[], object], expected: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (seen := read()) != expected:
        assert time.monotonic() < deadline, f"still {seen!r}, not {expected!r}"
        time.sleep(0.05)


def test_the_snapshot_hooks_sleep_the_base_then_wake_it_and_load_the_adapter(
    events: list[Event], volume: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy = vllm_app(monkeypatch)
    Registry(volume).promote("run-a")
    with container(deploy.WritingModel, volume, monkeypatch) as url:
        assert events == [
            ("start", volume / "base" / "stock", BASELINE_ID, "stock:base/stock"),
            ("sleep", 1),  # before the snapshot: weights to CPU memory, no KV cache
            ("wake_up",),  # after the restore, before anything needs the GPU
            ("set_adapter", "writing-llama", "2026.03.1"),  # the pointer as it is now
        ]
        health, models = served(url)
        assert health["status"] == "ready"
        assert models == [(BASELINE_ID, "stock:base/stock"), ("writing-llama", "2026.03.1")]
        # One engine, one URL; each request picks its model by id.
        assert answer(url, "writing-llama") == GRAMMAR_ANSWER
        assert answer(url, BASELINE_ID) == "She goes to school yesterday."


def test_the_engine_is_started_for_sleep_mode_and_the_batch(
    events: list[Event], volume: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy = vllm_app(
        monkeypatch,
        WRITING_SPECULATIVE="ngram",
        WRITING_NUM_SPECULATIVE_TOKENS="7",
        WRITING_PROMPT_LOOKUP_MIN="1",
        WRITING_PROMPT_LOOKUP_MAX="3",
        WRITING_SPECULATIVE_MAX_BATCH="2",
    )
    with container(deploy.WritingModel, volume, monkeypatch):
        pass
    (engine,) = FakeVLLM.instances
    settings = engine.settings
    assert settings is not None and settings.enable_sleep_mode  # else nothing can sleep
    assert settings.max_num_seqs == gpu_plan.VLLM_MAX_NUM_SEQS
    assert settings.speculative == "ngram"
    assert (settings.num_speculative_tokens, settings.prompt_lookup_min) == (7, 1)
    assert (settings.prompt_lookup_max, settings.speculative_max_batch) == (3, 2)


def test_a_promotion_and_a_rollback_are_followed_without_a_restart(
    events: list[Event], volume: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy = vllm_app(monkeypatch)
    registry = Registry(volume)
    registry.promote("run-a")
    with container(deploy.WritingModel, volume, monkeypatch) as url:
        registry.promote("run-b")
        eventually(lambda: dict(served(url)[1])["writing-llama"], "2026.04.1")
        registry.rollback()
        eventually(lambda: dict(served(url)[1])["writing-llama"], "2026.03.1")
    assert [e[0] for e in events].count("start") == 1  # the same engine all along
    assert [e[2] for e in events if e[0] == "set_adapter"] == [
        "2026.03.1",
        "2026.04.1",
        "2026.03.1",
    ]


def test_with_nothing_promoted_the_baseline_answers_until_a_promotion(
    events: list[Event],
    volume: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    deploy = vllm_app(monkeypatch)
    with (
        caplog.at_level(logging.WARNING),
        container(deploy.WritingModel, volume, monkeypatch) as url,
    ):
        assert "writing-llama is not served yet (no run is promoted)" in caplog.text
        assert served(url)[1] == [(BASELINE_ID, "stock:base/stock")]
        missing = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "writing-llama", "messages": [{"role": "user", "content": "Hi"}]},
            headers=auth(),
            timeout=10,
        )
        assert missing.status_code == 404 and BASELINE_ID in missing.text
        Registry(volume).promote("run-a")
        eventually(lambda: len(served(url)[1]), 2)


def test_a_run_without_an_adapter_is_named_and_the_baseline_keeps_serving(
    events: list[Event],
    volume: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    deploy = vllm_app(monkeypatch)
    Registry(volume).promote("run-m")  # merged weights only: vLLM serves adapters on the base
    with (
        caplog.at_level(logging.WARNING),
        container(deploy.WritingModel, volume, monkeypatch) as url,
    ):
        assert "run run-m is promoted but has no complete adapter" in caplog.text
        assert served(url)[1] == [(BASELINE_ID, "stock:base/stock")]


def test_without_a_base_to_load_the_snapshot_is_never_taken(
    events: list[Event], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy = deploy_with(monkeypatch, WRITING_BASELINE_WEIGHTS="").module  # the run's own base
    monkeypatch.setenv("WRITING_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("MODAL_API_KEY", API_KEY)
    with (
        pytest.warns(UserWarning, match="executing locally"),
        pytest.raises(WeightsUnavailable, match="no run is promoted"),
    ):
        deploy.WritingModel().serve.local()
    assert events == []


def test_closing_stops_following_and_closes_the_engine(events: list[Event], volume: Path) -> None:
    lifecycle = model_lifecycle.VLLMLifecycle(
        root=volume, base_model_id=BASELINE_ID, base_source="base/stock", fetch=_no_hub
    )
    lifecycle.before_snapshot()
    assert [e[0] for e in events] == ["start", "sleep"]  # all the snapshot holds
    lifecycle.after_restore()
    assert [e[0] for e in events] == ["start", "sleep", "wake_up"]  # nothing promoted
    lifecycle.close()
    assert events[-1] == ("close",)
    assert lifecycle.follower is not None and lifecycle.follower._stop.is_set()


def _no_hub(repo_id: str) -> Path:
    raise AssertionError(f"no download in tests ({repo_id})")


def test_the_reviewer_app_points_both_columns_at_the_one_class(
    events: list[Event], volume: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The UI function's own body, with only Modal's URL lookup replaced by the local
    container: one URL, two model ids, two different answers."""
    from modal_backend.serving.local import serve_in_thread

    deploy = vllm_app(monkeypatch)
    Registry(volume).promote("run-a")
    names = ("APP_ENV", "MODAL_LLAMA_URL", "MODAL_LLAMA_MODEL", "BASELINE_URL", "BASELINE_MODEL")
    for name in (*names, "BASELINE_API_KEY", "APP_EVAL_RUNS", "APP_API_KEY"):
        monkeypatch.setenv(name, "")  # restored after the test; the function sets them
    monkeypatch.setenv("APP_USERNAME", "reviewer")  # from the login secret on Modal
    monkeypatch.setenv("APP_PASSWORD", "pass-8c1e")
    monkeypatch.setattr(deploy, "UI_STATE_MOUNT", str(tmp_path / "state"))
    looked_up: list[str] = []
    with container(deploy.WritingModel, volume, monkeypatch) as model_url:

        def endpoint_url(name: str) -> str:
            looked_up.append(name)
            return model_url

        monkeypatch.setattr(deploy, "endpoint_url", endpoint_url)
        with pytest.warns(UserWarning, match="executing locally"):
            ui = deploy.reviewer_app.local()
        assert looked_up == ["WritingModel"]  # one class to find
        assert os.environ["MODAL_LLAMA_URL"] == os.environ["BASELINE_URL"] == model_url
        assert (os.environ["MODAL_LLAMA_MODEL"], os.environ["BASELINE_MODEL"]) == (
            "writing-llama",
            BASELINE_ID,
        )
        with serve_in_thread(ui) as app_url:
            replies = {
                backend: httpx.post(
                    f"{app_url}/api/manuscripts/m-1/suggest?backend={backend}",
                    json={"text": "She go to school yesterday.", "type": "grammar"},
                    headers=auth(),
                    timeout=60,
                ).json()
                for backend in ("custom", "baseline")
            }
    assert replies["custom"]["model_id"] == "writing-llama"
    assert replies["custom"]["revised_text"] == GRAMMAR_ANSWER
    assert replies["baseline"]["model_id"] == BASELINE_ID
    assert replies["baseline"]["revised_text"] == "She goes to school yesterday."
