"""Shared pieces for the serving-app tests: the app file evaluated under some environment (with
the keyword arguments its decorators handed to Modal), a model class run as a new container
would run it, and the HTTP calls that read what it serves."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import modal
import pytest

from modal_backend.serving.local import serve_in_thread
from tests.model_service_support import API_KEY, auth

MESSAGES = [{"role": "user", "content": "She go to school yesterday."}]
BASELINE_ID = "meta-llama/Meta-Llama-3.1-8B-Instruct"


@dataclass
class Deployed:
    """`modal_backend.deploy.serving_app` evaluated under some environment, with the keyword
    arguments its decorators handed to Modal (the autoscaler settings are not readable back
    offline)."""

    module: ModuleType
    calls: list[tuple[object, dict[str, Any]]]

    def options(self, target: object) -> dict[str, Any]:
        return next(kwargs for result, kwargs in self.calls if result is target)

    def on_gpus(self) -> list[object]:
        """Every class or function that asked Modal for a GPU."""
        return [result for result, kwargs in self.calls if kwargs.get("gpu")]


def deploy_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> Deployed:
    for name in [name for name in os.environ if name.startswith("WRITING_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    calls: list[tuple[object, dict[str, Any]]] = []

    def spy(original: Callable[..., Any]) -> Callable[..., Any]:
        def decorator(self: modal.App, *args: Any, **kwargs: Any) -> Any:
            wrap = original(self, *args, **kwargs)

            def apply(target: Any) -> Any:
                result = wrap(target)
                calls.append((result, kwargs))
                return result

            return apply

        return decorator

    monkeypatch.setattr(modal.App, "cls", spy(modal.App.cls))
    monkeypatch.setattr(modal.App, "function", spy(modal.App.function))
    module = importlib.import_module("modal_backend.deploy.serving_app")
    calls.clear()  # a first import evaluated it already: keep what the evaluation below makes
    return Deployed(importlib.reload(module), calls)


@contextmanager
def container(cls: Any, volume: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """What a new container does: run the enter hooks, build the ASGI app; served over HTTP."""
    monkeypatch.setenv("WRITING_WEIGHTS_DIR", str(volume))
    monkeypatch.setenv("MODAL_API_KEY", API_KEY)
    with pytest.warns(UserWarning, match="executing locally"):
        asgi = cls().serve.local()
    with serve_in_thread(asgi) as url:
        yield url


def answer(url: str, model: str) -> str:
    body = {"model": model, "messages": MESSAGES, "max_tokens": 12, "stream": True}
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers=auth(), timeout=60
    ) as response:
        assert response.status_code == 200
        events = [
            line.removeprefix("data: ")
            for line in response.iter_lines()
            if line.startswith("data:")
        ]
    assert events[-1] == "[DONE]"
    return "".join(
        json.loads(event)["choices"][0]["delta"].get("content") or "" for event in events[:-1]
    )


def served(url: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    health = httpx.get(f"{url}/health", timeout=10).json()
    models = httpx.get(f"{url}/v1/models", headers=auth(), timeout=10).json()["data"]
    return health, [(item["id"], item["version"]) for item in models]
