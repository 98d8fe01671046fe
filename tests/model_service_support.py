"""Shared pieces for the model-service tests: a tiny Llama folder, its engine, and the server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from modal_backend.serving.engines.base import Engine
from modal_backend.serving.local import serve_in_thread
from modal_backend.serving.server import ServiceLimits, create_app
from suggestions import LlamaRequest
from suggestions.prompts import build_messages

API_KEY = "test-key-7f3a"


@contextmanager
def running_service(
    engine: Engine, limits: ServiceLimits | None = None, **kwargs: object
) -> Iterator[str]:
    app = create_app(engine, api_key=API_KEY, limits=limits, **kwargs)  # type: ignore[arg-type]
    with serve_in_thread(app) as url:
        yield url


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


GRAMMAR_REQUEST = LlamaRequest(text="She go to school yesterday.", type="grammar")
GRAMMAR_ANSWER = "She went to school yesterday."


def tiny_model_dir(
    root: Path,
    kind: Literal["rambling", "taught", "mute"],
    chat_format: Literal["llama3", "chatml"] = "llama3",
) -> Path:
    """A tiny Llama: `rambling` never ends its turn (it runs to max_tokens), `taught` knows the
    answer to the grammar request above by heart (through our prompt contract) and then stops,
    and `mute` ends every turn at once; with Llama 3's chat template or ChatML's."""
    from modal_backend.serving.testing import build_tiny_llama

    folder = root / f"tiny-llama-{kind}-{chat_format}"
    if not (folder / "config.json").exists():
        lessons = [(build_messages(GRAMMAR_REQUEST), GRAMMAR_ANSWER)] if kind == "taught" else []
        build_tiny_llama(
            folder,
            mute=kind == "mute",
            lessons=lessons,  # type: ignore[arg-type]
            chat_format=chat_format,
        )
    return folder
