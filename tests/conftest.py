"""Every test gets a fresh state folder and an environment without model settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from suggestions import LlamaRequest

MODEL_ENV_VARS = (
    "APP_ENV",
    "MODAL_LLAMA_URL",
    "MODAL_API_KEY",
    "MODAL_LLAMA_MODEL",
    "MODAL_PROXY_KEY",
    "MODAL_PROXY_SECRET",
    "BASELINE_URL",
    "BASELINE_API_KEY",
    "BASELINE_MODEL",
    "STANDIN_URL",
    "STANDIN_API_KEY",
    "STANDIN_MODEL",
    "SUGGESTIONS_USAGE_DB",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "state"
    for name in MODEL_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    for name in [name for name in os.environ if name.startswith(("SUGGESTIONS_", "APP_"))]:
        monkeypatch.delenv(name)  # a developer's own settings must not change what tests see
    monkeypatch.setenv("SUGGESTIONS_HOME", str(home))
    monkeypatch.chdir(tmp_path)  # so no developer's .env is picked up
    return home


@pytest.fixture
def grammar_request() -> LlamaRequest:
    return LlamaRequest(text="She go to school yesterday and buyed a books.", type="grammar")


@pytest.fixture(scope="session")
def taught_model_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Our model service on a tiny Llama that knows the answer to GRAMMAR_REQUEST by heart."""
    from modal_backend.serving.engines.transformers_engine import TransformersEngine
    from tests.app_support import TINY_MODEL_ID
    from tests.model_service_support import running_service, tiny_model_dir

    folder = tiny_model_dir(tmp_path_factory.mktemp("models"), "taught")
    engine = TransformersEngine.load(folder, model_id=TINY_MODEL_ID, version="test")
    with running_service(engine) as url:
        yield url


@pytest.fixture(scope="session")
def rambling_engine(tmp_path_factory: pytest.TempPathFactory) -> object:
    """A tiny Llama that never ends its turn: for stopping generation mid-stream."""
    from modal_backend.serving.engines.transformers_engine import TransformersEngine
    from tests.app_support import TINY_MODEL_ID
    from tests.model_service_support import tiny_model_dir

    folder = tiny_model_dir(tmp_path_factory.mktemp("models"), "rambling")
    return TransformersEngine.load(folder, model_id=TINY_MODEL_ID, version="test")
