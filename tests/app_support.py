"""Shared pieces for the reviewer-app tests: a configuration in a temporary folder, backends
(a real tiny model behind our model service, and mocks), and the app served over loopback."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from app.config import DEFAULT_EXAMPLES, AppConfig
from modal_backend.serving.local import serve_in_thread
from suggestions.backends import Backend, ChatBackend
from suggestions.config import Settings
from suggestions.prompts import build_messages
from tests.model_service_support import API_KEY

TINY_MODEL_ID = "tiny-llama"


def app_config(root: Path, columns: tuple[str, ...], **overrides: object) -> AppConfig:
    settings = Settings(state_dir=root / "state")
    values: dict[str, object] = {
        "settings": settings,
        "columns": columns,
        "votes_db": root / "votes.db",
        "eval_runs_dir": root / "runs",
        "examples_path": DEFAULT_EXAMPLES,
        **overrides,
    }
    return AppConfig(**values)  # type: ignore[arg-type]


def tiny_model_backend(url: str, name: str = "custom") -> ChatBackend:
    """Our real client, talking to our real model service on a tiny model."""
    return ChatBackend(
        name=name,
        base_url=url,
        model=TINY_MODEL_ID,
        label=f"tiny Llama ({name})",
        api_key=API_KEY,
        key_env_var="MODAL_API_KEY",
        build_prompt=build_messages,
    )


@contextmanager
def running_app(
    config: AppConfig, backends: Mapping[str, Backend], seed: int | None = None
) -> Iterator[str]:
    from app.web import create_web_app

    rng = random.Random(seed) if seed is not None else None
    with serve_in_thread(create_web_app(config, backends=backends, rng=rng)) as url:
        yield url
