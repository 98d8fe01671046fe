"""The suggestion API alone: the REST routes the writing platform calls, without the reviewer page.

The same routes as the reviewer app (`POST /api/manuscripts/{id}/suggest`, JSON or SSE, the
bearer `APP_API_KEY`, the session cache, usage rows), in a plain FastAPI app: no Gradio, no
sticky sessions, so it can run in as many containers as the traffic needs (the Modal function
`suggestion_api`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace

from fastapi import FastAPI

from suggestions.backends import Backend

from .config import AppConfig
from .rest import rest_router
from .runtime import Runtime


def create_api_app(
    config: AppConfig | None = None, *, backends: Mapping[str, Backend] | None = None
) -> FastAPI:
    """Backends are built from the configuration unless given (tests)."""
    config = replace(config or AppConfig.from_env(serves_page=False), serves_page=False)
    return rest_app(Runtime.build(config, backends), title="Writing suggestions API")


def rest_app(runtime: Runtime, *, title: str) -> FastAPI:
    """A FastAPI app with the REST routes, closing the runtime's service when it stops (the
    reviewer app mounts its page on one)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await runtime.service.aclose()

    app = FastAPI(title=title, lifespan=lifespan)
    app.state.runtime = runtime
    app.include_router(rest_router(runtime))
    return app


def main(argv: list[str] | None = None) -> int:
    """`python -m app.api`: the suggestion API on its own, configured from the environment."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m app.api", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    options = parser.parse_args(argv)
    uvicorn.run(create_api_app(), host=options.host, port=options.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
