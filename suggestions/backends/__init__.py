"""Backends, and how the configured slots (custom, baseline, standin, mock) are built from
settings."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from ..config import MODEL_SLOTS, Settings
from ..errors import ConfigurationError
from ..keys import read_api_key
from ..prompts import build_baseline_messages, build_messages
from ..retry import RetryPolicy
from .base import Backend, BackendEvent, Completion, StreamEnd, TextDelta, complete
from .chat import ChatBackend, chat_completions_url
from .mock import MockBackend

BACKEND_NAMES = ("custom", "baseline", "standin", "mock")
"""custom: our fine-tuned model; baseline: the stock model with the old generic prompt; standin:
another model with our task prompt, shown for scale; mock: rule-based, no model."""

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "BackendEvent",
    "ChatBackend",
    "Completion",
    "MockBackend",
    "StreamEnd",
    "TextDelta",
    "build_backend",
    "build_backends",
    "chat_completions_url",
    "complete",
]


def build_backend(name: str, settings: Settings) -> Backend:
    """The backend for one slot, or a ConfigurationError saying what to set."""
    if name == "mock":
        return MockBackend()
    if name == "custom" and settings.modal_llama_url is None:
        if settings.is_production:
            raise ConfigurationError(
                "MODAL_LLAMA_URL is not set. In production the custom model needs it: set it "
                "to the deployed model service's URL (and MODAL_API_KEY to its key)."
            )
        return MockBackend(name="custom", label="mock (MODAL_LLAMA_URL is not set)")
    if name in MODEL_SLOTS:
        return _slot_backend(name, settings)
    raise ConfigurationError(f"unknown backend {name!r}: choose one of {', '.join(BACKEND_NAMES)}")


def build_backends(names: tuple[str, ...], settings: Settings) -> dict[str, Backend]:
    return {name: build_backend(name, settings) for name in names}


def _slot_backend(name: str, settings: Settings) -> ChatBackend:
    slot = MODEL_SLOTS[name]
    url, key = getattr(settings, slot.url), getattr(settings, slot.api_key)
    if url is None:
        raise ConfigurationError(
            f"{Settings.variable(slot.url)} is not set: point it at an OpenAI-compatible server "
            f"that serves the {name} model ({Settings.variable(slot.model)}, with "
            f"{Settings.variable(slot.api_key)} if it needs a key)."
        )
    return _chat_backend(
        name,
        url,
        getattr(settings, slot.model),
        key.get_secret_value() if key else None,
        Settings.variable(slot.api_key),
        settings,
    )


def _chat_backend(
    name: str, url: str, model: str, key: str | None, key_env_var: str, settings: Settings
) -> ChatBackend:
    host = urlsplit(url).hostname or url
    on_modal = host.endswith(".modal.run")
    where = "Modal" if on_modal else host
    return ChatBackend(
        name=name,
        base_url=url,
        model=model,
        label=f"{where}: {model}",
        api_key=key,
        key_env_var=key_env_var,
        build_prompt=build_baseline_messages if name == "baseline" else build_messages,
        timeout=httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s),
        total_timeout_s=settings.total_timeout_s,
        retry=RetryPolicy(max_retries=settings.max_retries),
        extra_headers=modal_proxy_headers(settings) if on_modal else None,
    )


def modal_proxy_headers(settings: Settings) -> dict[str, str] | None:
    """The `Modal-Key`/`Modal-Secret` pair for endpoints behind Modal proxy auth, when both are
    set; never sent to other hosts, where they would leak the token."""
    key, secret = (
        read_api_key(value.get_secret_value() if value else None, name)
        for value, name in (
            (settings.modal_proxy_key, "MODAL_PROXY_KEY"),
            (settings.modal_proxy_secret, "MODAL_PROXY_SECRET"),
        )
    )
    if bool(key) != bool(secret):
        raise ConfigurationError("set both MODAL_PROXY_KEY and MODAL_PROXY_SECRET, or neither")
    return {"Modal-Key": key, "Modal-Secret": secret} if key and secret else None
