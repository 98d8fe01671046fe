"""`LlamaCppEngine`: GGUF models through llama.cpp (`xllamacpp`'s prebuilt wheels), on a laptop CPU.

`xllamacpp.Server` runs llama.cpp's own server loop in-process; `handle_chat_completions` calls us
back with each OpenAI-shaped chunk, and returning True from the callback abandons the request,
which llama.cpp then cancels. The library also opens an HTTP listener of its own on a random
loopback port: it is locked with a random key that is never shown, so only this process can use it.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from .base import (
    Delta,
    Emit,
    EngineError,
    EngineStream,
    Finished,
    Message,
    PromptTooLong,
    SamplingParams,
    SingleModel,
    StopFlag,
    ThreadedStream,
)

logger = logging.getLogger(__name__)


class LlamaCppEngine(SingleModel):
    """One GGUF model in llama.cpp, with `parallel` slots sharing a context of `context_tokens`
    tokens per slot."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        model_id: str | None = None,
        version: str = "unversioned",
        context_tokens: int = 4096,
        parallel: int = 1,
        threads: int | None = None,
    ) -> None:
        import xllamacpp

        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"no GGUF model file at {model_path}")
        params = xllamacpp.CommonParams()
        params.model.path = str(model_path)
        params.n_parallel = parallel
        params.n_ctx = context_tokens * parallel
        params.cpuparams.n_threads = threads or max(1, os.cpu_count() or 1)
        params.cpuparams_batch.n_threads = params.cpuparams.n_threads
        params.api_keys = [secrets.token_urlsafe(32)]
        params.verbosity = -1
        params.warmup = True
        self.model_id = model_id or model_path.stem
        self.version = version
        self.max_concurrency = parallel
        self.context_tokens = context_tokens
        self._server: Any = xllamacpp.Server(params)

    def stream(
        self, messages: list[Message], params: SamplingParams, model: str | None = None
    ) -> EngineStream:
        return ThreadedStream(lambda emit, stop: self._generate(messages, params, emit, stop))

    def _generate(
        self, messages: list[Message], params: SamplingParams, emit: Emit, stop: StopFlag
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

        result = self._server.handle_chat_completions(request, on_chunk)
        if isinstance(result, dict) and "error" in result:
            errors.append(result)
        if errors:
            error = errors[0].get("error") if isinstance(errors[0], dict) else None
            message = error.get("message") if isinstance(error, dict) else str(errors[0])
            if isinstance(error, dict) and error.get("type") == "exceed_context_size_error":
                raise PromptTooLong(message)
            raise EngineError(f"llama.cpp refused the request: {message}")

    def close(self) -> None:
        self._server = None
