"""`LlamaCppEngine`: GGUF models through llama.cpp (`xllamacpp`'s prebuilt wheels), on a laptop CPU.

`xllamacpp.Server` runs llama.cpp's own server loop in-process; `handle_chat_completions` calls us
back with each OpenAI-shaped chunk, and returning True from the callback abandons the request,
which llama.cpp then cancels. The library also opens an HTTP listener of its own on a random
loopback port: it is locked with a random key that is never shown, so only this process can use it.

LoRA adapters in GGUF form are further model ids on the same weights. llama.cpp batches only
requests whose adapters and scales are equal (and its prompt cache matches by tokens alone), so
each id gets its own llama.cpp server over the same memory-mapped GGUF: the stock base with no
adapter, and each adapter id with its adapter applied at scale 1. The ids then generate at the
same time, each in its own `parallel` slots. A PEFT adapter folder is written as a GGUF LoRA first
(`gguf_lora`). llama.cpp loads adapters only when a server starts, so `set_adapter` starts a new
server for that id, sends new requests to it, and lets the old one finish the requests it holds
before it is dropped: a promotion without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..gguf_lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, write_gguf_lora
from ..model_parts import default_cache_dir
from .base import (
    AdapterState,
    Delta,
    Emit,
    EngineError,
    EngineStream,
    Finished,
    Message,
    PromptTooLong,
    SamplingParams,
    StopFlag,
    ThreadedStream,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoraFile:
    """A GGUF LoRA served as a model id."""

    model_id: str
    path: Path
    version: str


@dataclass
class _Server:
    """One llama.cpp server for one model id (an adapter, or none for the base), with the
    requests still on it."""

    server: Any
    lora: LoraFile | None
    in_flight: int = 0
    retired: bool = False


class LlamaCppEngine:
    """One GGUF model in llama.cpp, with `parallel` slots sharing a context of `context_tokens`
    tokens per slot, answering as `model_id` and as each adapter's id."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        model_id: str | None = None,
        version: str = "unversioned",
        context_tokens: int = 4096,
        parallel: int = 1,
        threads: int | None = None,
        adapters: dict[str, tuple[Path, str]] | None = None,
    ) -> None:
        """`adapters` maps an id to (a GGUF LoRA file or a PEFT adapter folder, its version)."""
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"no GGUF model file at {model_path}")
        self.model_path = model_path
        self.model_id = model_id or model_path.stem
        self.version = version
        self.parallel = parallel
        self.context_tokens = context_tokens
        self._threads = threads or max(1, os.cpu_count() or 1)
        self._lock = threading.Lock()
        self._states: dict[str, AdapterState] = {}
        self._servers: dict[str, _Server] = {self.model_id: _Server(self._start(None), None)}
        for adapter_id, (path, adapter_version) in (adapters or {}).items():
            self._check_id(adapter_id)
            lora = LoraFile(adapter_id, self.as_gguf_lora(path, adapter_version), adapter_version)
            self._servers[adapter_id] = _Server(self._start(lora), lora)
            self._states[adapter_id] = AdapterState(adapter_version, str(path))
        self.max_concurrency = parallel * len(self._servers)

    def _start(self, lora: LoraFile | None) -> Any:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(self.model_path)
        params.n_parallel = self.parallel
        params.n_ctx = self.context_tokens * self.parallel
        params.cpuparams.n_threads = self._threads
        params.cpuparams_batch.n_threads = self._threads
        params.api_keys = [secrets.token_urlsafe(32)]
        params.verbosity = -1
        params.warmup = True
        if lora is not None:
            params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(lora.path), 1.0)]
        return xllamacpp.Server(params)

    def _check_id(self, model_id: str) -> None:
        if model_id == self.model_id:
            raise ValueError(f"{model_id!r} is the base model's id; an adapter needs its own")

    def as_gguf_lora(self, path: Path, version: str) -> Path:
        """A GGUF LoRA as given, or a PEFT adapter folder written as one for this base (cached
        by the adapter's and the base's identity, so a restart reuses it)."""
        path = Path(path)
        if path.is_file():
            return path
        if not (path / ADAPTER_CONFIG).is_file():
            raise FileNotFoundError(f"{path} is neither a GGUF LoRA nor a LoRA adapter folder")
        digest = hashlib.sha256()
        for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            digest.update((path / name).read_bytes())
        stat = self.model_path.stat()
        digest.update(f"{self.model_path.name}:{stat.st_size}:{version}".encode())
        out = default_cache_dir() / "gguf-lora" / f"{digest.hexdigest()[:24]}.gguf"
        if not out.is_file():
            write_gguf_lora(path, self.model_path, out, version=version)
        return out

    # -- models and adapters ------------------------------------------------------------------

    def models(self) -> dict[str, str]:
        with self._lock:
            return {
                model_id: served.lora.version if served.lora else self.version
                for model_id, served in self._servers.items()
            }

    def status(self) -> dict[str, Any]:
        with self._lock:
            adapters = {
                adapter_id: {k: v for k, v in vars(state).items() if v is not None}
                for adapter_id, state in self._states.items()
            }
        return {"engine": "llamacpp", "max_concurrency": self.max_concurrency, "adapters": adapters}

    def adapter_version(self, model_id: str) -> str | None:
        with self._lock:
            served = self._servers.get(model_id)
            return served.lora.version if served and served.lora else None

    def set_adapter(self, model_id: str, path: str | Path, version: str) -> bool:
        """Serve the adapter at `path` as `model_id` from the next request on (a new server
        for that id; the old one finishes its requests). On a failure the adapter serving
        before keeps serving, the error is kept for `/health`, and False is returned."""
        self._check_id(model_id)
        try:
            lora = LoraFile(model_id, self.as_gguf_lora(Path(path), version), version)
            server = self._start(lora)
        except Exception as exc:  # a bad file raises from the writer or from llama.cpp
            with self._lock:
                state = self._states.setdefault(model_id, AdapterState(version, str(path)))
                state.error = f"could not load version {version} from {path}: {exc}"
                logger.error("adapter %s: %s", model_id, state.error)
            return False
        with self._lock:
            old = self._servers.get(model_id)
            self._servers[model_id] = _Server(server, lora)
            self.max_concurrency = self.parallel * len(self._servers)
            state = self._states.setdefault(model_id, AdapterState(version, str(path)))
            state.swaps += 1 if old is not None else 0
            state.version, state.path, state.error = version, str(path), None
            if old is not None:
                old.retired = True
                self._drop_if_idle(old)
        logger.info("adapter %s now serves version %s", model_id, version)
        return True

    def _drop_if_idle(self, served: _Server) -> None:
        """Called under the lock: a retired server with no request left is freed."""
        if served.retired and served.in_flight == 0:
            served.server = None

    # -- generation ---------------------------------------------------------------------------

    def stream(
        self, messages: list[Message], params: SamplingParams, model: str | None = None
    ) -> EngineStream:
        with self._lock:
            served = self._servers.get(model or self.model_id)
            if served is None:
                raise EngineError(f"model {model!r} is not loaded in this engine")
            served.in_flight += 1  # pinned: a swap lets this request finish on it

        def work(emit: Emit, stop: StopFlag) -> None:
            try:
                self._generate(served.server, messages, params, emit, stop)
            finally:
                with self._lock:
                    served.in_flight -= 1
                    self._drop_if_idle(served)

        return ThreadedStream(work)

    def _generate(
        self,
        server: Any,
        messages: list[Message],
        params: SamplingParams,
        emit: Emit,
        stop: StopFlag,
    ) -> None:
        request: dict[str, Any] = {
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            request["seed"] = params.seed
        finish_reason: str | None = None
        errors: list[Any] = []

        def on_chunk(chunk: Any) -> bool:
            nonlocal finish_reason
            if not isinstance(chunk, dict) or "error" in chunk:
                errors.append(chunk)
                return True
            for choice in chunk.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    emit(Delta(content))
                finish_reason = choice.get("finish_reason") or finish_reason
            usage = chunk.get("usage")
            if usage:
                emit(
                    Finished(
                        finish_reason="length" if finish_reason == "length" else "stop",
                        prompt_tokens=int(usage["prompt_tokens"]),
                        completion_tokens=int(usage["completion_tokens"]),
                    )
                )
            return stop.is_set()

        result = server.handle_chat_completions(request, on_chunk)
        if isinstance(result, dict) and "error" in result:
            errors.append(result)
        if errors:
            error = errors[0].get("error") if isinstance(errors[0], dict) else None
            message = error.get("message") if isinstance(error, dict) else str(errors[0])
            if isinstance(error, dict) and error.get("type") == "exceed_context_size_error":
                raise PromptTooLong(message)
            raise EngineError(f"llama.cpp refused the request: {message}")

    def close(self) -> None:
        with self._lock:
            for served in self._servers.values():
                served.retired = True
                self._drop_if_idle(served)
            self._servers = {}
