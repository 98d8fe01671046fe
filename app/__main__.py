"""`python -m app`: the reviewer app on http://127.0.0.1:7860.

With no `MODAL_LLAMA_URL`, the custom and baseline columns run on the local default model: its
server is started here (a child process on a free loopback port with a fresh key) and stopped
when the app stops, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import signal
import sys
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

from suggestions.errors import ConfigurationError

from .config import AppConfig, parse_columns

LOCAL_LABELS = {
    "custom": "local stand-in: Qwen2.5-Coder-1.5B, task prompt",
    "baseline": "local stand-in: Qwen2.5-Coder-1.5B, old generic prompt",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--columns",
        help="comma-separated backends to show, 1 to 4 (default: custom,baseline,mock; "
        "or APP_COLUMNS)",
    )
    parser.add_argument(
        "--local-model",
        default="default",
        help="the model the local server runs when MODAL_LLAMA_URL is unset: 'default' (the "
        "stand-in, fetched once) or a GGUF file",
    )
    parser.add_argument(
        "--no-local-model",
        action="store_true",
        help="do not start the local default model when MODAL_LLAMA_URL is unset "
        "(the custom column then answers with the mock)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per model call is noise
    _exit_cleanly_on(signal.SIGTERM, signal.SIGHUP)
    with ExitStack() as stack:
        try:
            overrides: dict[str, Any] = {}
            if args.columns:
                overrides["columns"] = parse_columns(args.columns, "--columns")
            config = AppConfig.from_env(**overrides)
            needs_model = {"custom", "baseline"} & set(config.columns)
            if config.settings.modal_llama_url is None and needs_model and not args.no_local_model:
                config = _with_local_model(config, args.local_model, stack)
            from .web import create_web_app

            web_app = create_web_app(config)
        except (ConfigurationError, RuntimeError, TimeoutError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        import uvicorn

        print(f"Reviewer app: http://{args.host}:{args.port}  (Ctrl-C to stop)", flush=True)
        uvicorn.run(web_app, host=args.host, port=args.port, log_level="warning")
    return 0


def _exit_cleanly_on(*signals: signal.Signals) -> None:
    """Turn these signals into SystemExit, so the local model server is stopped on the way out.

    uvicorn handles SIGTERM itself, then re-raises it once it has shut down; by default that
    would kill this process before the cleanup runs and leave the model server behind.
    """

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for each in signals:
        signal.signal(each, leave)


def _with_local_model(config: AppConfig, model: str, stack: ExitStack) -> AppConfig:
    """Start a local model server and point the custom and baseline columns at it."""
    from modal_backend.serving.local import LocalModelServer, ServedModel, slot_variables
    from modal_backend.serving.model_parts import LOCAL_DEFAULT, ModelUnavailable, ensure_model

    if model == "default":
        try:
            ensure_model(LOCAL_DEFAULT)
        except ModelUnavailable as exc:
            raise RuntimeError(str(exc)) from exc
        labels = LOCAL_LABELS
    else:
        name = Path(model).name
        labels = {
            "custom": f"local model: {name}, task prompt",
            "baseline": f"local model: {name}, old generic prompt",
        }
    log_path = config.settings.state_dir / "local-model-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    server = LocalModelServer(api_key=secrets.token_urlsafe(24), model=model, log_path=log_path)
    shown = LOCAL_DEFAULT.label if model == "default" else model
    print(f"Starting the local model server on {shown} (log: {log_path})...", flush=True)
    stack.callback(server.stop)
    health = server.start(timeout_s=300)
    served = ServedModel(
        url=server.url,
        model=str(health.get("model") or LOCAL_DEFAULT.model_id),
        api_key=server.api_key,
    )
    if config.settings.baseline_url is None:  # a configured baseline is kept as it is
        variables = slot_variables(custom=served, baseline=served)
    else:
        variables = slot_variables(custom=served)
        labels = {"custom": labels["custom"]}
    settings = config.settings.with_variables(variables)
    labels = {**labels, **config.labels}
    return AppConfig(**{**config.__dict__, "settings": settings, "labels": labels})


if __name__ == "__main__":
    sys.exit(main())
