"""`python -m app`: the reviewer app on http://127.0.0.1:7860.

With no `MODAL_LLAMA_URL`, the custom and baseline columns run on the local default model: its
server is started here (a child process on a free loopback port with a fresh key) and stopped
when the app stops, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from suggestions.errors import ConfigurationError

from .config import AppConfig, parse_columns

STANDIN_LABEL = "stand-in for scale: Qwen2.5-Coder-1.5B (prompt only), task prompt"
FALLBACK_LABELS = {
    "custom": "local stand-in: Qwen2.5-Coder-1.5B, task prompt (our fine-tuned run is unavailable)",
    "baseline": "local stand-in: Qwen2.5-Coder-1.5B, old generic prompt",
}
LOCAL_COLUMNS = ("custom", "baseline", "standin", "mock")
"""Locally, with no APP_COLUMNS: our run, its stock base, the stand-in for scale, the mock."""


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
        help="what runs locally when MODAL_LLAMA_URL is unset: 'default' (our fine-tuned run "
        "and its stock base on one vLLM engine, plus the Qwen stand-in) or a GGUF file (custom "
        "and baseline both on it)",
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
            local = config.settings.modal_llama_url is None and not args.no_local_model
            chosen = args.columns or os.environ.get("APP_COLUMNS", "").strip()
            if local and args.local_model == "default" and not chosen:
                config = replace(config, columns=LOCAL_COLUMNS)
            needs_model = {"custom", "baseline", "standin"} & set(config.columns)
            if local and needs_model:
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
    """Start the local model servers and point the model columns at them.

    By default: one vLLM engine serves our fine-tuned run (the adapter shipped in the
    repository) as `writing-llama` and its stock base beside it, so the custom and baseline
    columns are batched together and stream at the same time; the Qwen stand-in runs in
    llama.cpp for the `standin` column. Without vLLM or a sound adapter, the custom and
    baseline columns fall back to the stand-in, labelled as such. A GGUF file given as `model`
    serves custom and baseline both.
    """
    from modal_backend.serving.local import LocalModelServer, ServedModel, slot_variables
    from modal_backend.serving.model_parts import LOCAL_DEFAULT, ModelUnavailable, ensure_model

    columns = set(config.columns)
    state = config.settings.state_dir
    state.mkdir(parents=True, exist_ok=True)
    servers: dict[str, LocalModelServer] = {}
    labels: dict[str, str] = {}
    tuned = (
        _fine_tuned_server(state)
        if model == "default" and columns & {"custom", "baseline"}
        else None
    )
    if tuned is not None:
        servers["vllm"], labels = tuned
    gguf_needed = model != "default" or tuned is None or "standin" in columns
    if gguf_needed:
        if model == "default":
            try:
                ensure_model(LOCAL_DEFAULT)
            except ModelUnavailable as exc:
                raise RuntimeError(str(exc)) from exc
        servers["gguf"] = LocalModelServer(
            api_key=secrets.token_urlsafe(24),
            model=model,
            extra_args=["--parallel", "2"],
            log_path=state / "local-model-server.log",
        )
    for name, server in servers.items():
        stack.callback(server.stop)
        shown = {"vllm": "SmolLM2 + our adapter (vLLM)", "gguf": LOCAL_DEFAULT.label}[name]
        print(
            f"Starting the local model server for {shown} (log: {server.log_path})...", flush=True
        )
        server.launch()
    health = {name: server.wait_ready(timeout_s=600) for name, server in servers.items()}

    def served(name: str, model_id: str) -> ServedModel:
        return ServedModel(url=servers[name].url, model=model_id, api_key=servers[name].api_key)

    if "vllm" in servers:
        custom, baseline = served("vllm", "writing-llama"), served("vllm", _base_id(health["vllm"]))
    else:
        gguf_id = str(health["gguf"].get("model") or LOCAL_DEFAULT.model_id)
        custom = baseline = served("gguf", gguf_id)
        name = Path(model).name
        labels = (
            FALLBACK_LABELS
            if model == "default"
            else {
                "custom": f"local model: {name}, task prompt",
                "baseline": f"local model: {name}, old generic prompt",
            }
        )
    standin = None
    if "gguf" in servers and "standin" in columns:
        standin = served("gguf", str(health["gguf"].get("model") or LOCAL_DEFAULT.model_id))
        shown = STANDIN_LABEL if model == "default" else f"local model: {Path(model).name}"
        labels = {**labels, "standin": shown}
    keep_baseline = config.settings.baseline_url is not None  # a configured one is kept
    variables = slot_variables(
        custom=custom, baseline=None if keep_baseline else baseline, standin=standin
    )
    if keep_baseline:
        labels.pop("baseline", None)
    settings = config.settings.with_variables(variables)
    labels = {**labels, **config.labels}
    return AppConfig(**{**config.__dict__, "settings": settings, "labels": labels})


def _fine_tuned_server(state: Path) -> tuple[Any, dict[str, str]] | None:
    """The vLLM server for our run and its base, or None (said why) when it cannot run."""
    import importlib.util

    from modal_backend.serving.local import LocalModelServer
    from modal_backend.serving.shipped_adapter import AdapterUnavailable, verified_adapter

    try:
        adapter = verified_adapter()
    except AdapterUnavailable as exc:
        print(f"note: {exc}; the custom column uses the Qwen stand-in instead", flush=True)
        return None
    if importlib.util.find_spec("vllm") is None:
        print(
            "note: vLLM is not installed (run `make demo` to install it); the custom and "
            "baseline columns use the Qwen stand-in instead",
            flush=True,
        )
        return None
    server = LocalModelServer(
        api_key=secrets.token_urlsafe(24),
        model="smollm2",
        extra_args=[
            "--engine",
            "vllm",
            "--adapter",
            f"writing-llama={adapter.path}",
            "--max-model-len",
            "4096",
        ],
        log_path=state / "local-vllm-server.log",
    )
    labels = {
        "custom": f"our fine-tuned run {adapter.version}: SmolLM2-135M + LoRA, task prompt",
        "baseline": "its stock base: SmolLM2-135M-Instruct, old generic prompt",
    }
    return server, labels


def _base_id(health: dict[str, Any]) -> str:
    return str(health.get("model") or "smollm2-135m-instruct")


if __name__ == "__main__":
    sys.exit(main())
