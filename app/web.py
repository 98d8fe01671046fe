"""The ASGI app: REST routes plus the Gradio page, one FastAPI app for local runs and Modal."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping

import gradio as gr
from fastapi import FastAPI

from suggestions.backends import Backend

from .api import rest_app
from .config import AppConfig
from .render import CSS
from .runtime import Runtime
from .ui import build_blocks


def create_web_app(
    config: AppConfig | None = None,
    *,
    backends: Mapping[str, Backend] | None = None,
    rng: random.Random | None = None,
) -> FastAPI:
    """Backends are built from the configuration unless given (tests, the local default);
    `rng` draws the blind pairs (seeded in tests)."""
    return _inside_a_loop(lambda: _create(config or AppConfig.from_env(), backends, rng))


def _inside_a_loop(build: Callable[[], FastAPI]) -> FastAPI:
    """Gradio makes (and never closes) a new event loop for each lock it creates outside a
    running loop; building inside one short-lived loop that is then closed leaks nothing."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return build()

    async def run() -> FastAPI:
        return build()

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def _create(
    config: AppConfig, backends: Mapping[str, Backend] | None, rng: random.Random | None
) -> FastAPI:
    runtime = Runtime.build(config, backends, rng)
    app = rest_app(runtime, title="Writing suggestions reviewer app")
    # the REST routes come before the mount, which takes every other path
    return gr.mount_gradio_app(  # type: ignore[no-any-return]
        app,
        build_blocks(runtime),
        path="/",
        auth=config.auth,
        auth_message="Sign in with the reviewer account." if config.auth else None,
        css=CSS,
        ssr_mode=False,
        footer_links=["api"],
    )
