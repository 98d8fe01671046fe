"""`VLLMEngine`: vLLM's `AsyncLLM` behind our server, the production engine.

Continuous batching (many requests share each forward pass), prefix caching (every request starts
with the same system prompt), LoRA adapters served as model ids beside the stock base, and n-gram
(prompt-lookup) speculation: an edit copies most of its input, so drafts from it are often right.

`AsyncLLM` binds itself to the event loop it first runs in, while our server may run in any loop
(uvicorn's, a test's). So the engine owns one loop on a thread of its own, and each stream hands
its events over to the caller's loop. An adapter is swapped in by `set_adapter`: new requests take
the new `LoRARequest`, requests in flight keep the one they started with, and the old adapter is
dropped from the engine once its last request ends. An adapter that fails to load leaves the old
one serving; the error is kept for `/health`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import threading
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from ..end_of_turn import stop_ids
from .base import (
    AdapterState,
    Delta,
    EngineError,
    EngineEvent,
    EngineStream,
    Finished,
    Message,
    PromptTooLong,
    SamplingParams,
)
from .vllm_cpu import prepare_cpu_environment

logger = logging.getLogger(__name__)

Speculation = Literal["off", "ngram"]

T = TypeVar("T")


@dataclass(frozen=True)
class VLLMSettings:
    """How the engine is sized. CPU defaults are those measured to run here (eager, fp32)."""

    max_model_len: int = 4096
    """Prompt plus answer, per request: our 8,000-character limit is about 2,000 tokens in and
    as many out."""
    max_num_seqs: int = 32
    """Requests batched together at most; admission also stays within the KV cache."""
    speculative: Speculation = "off"
    """vLLM's prompt-lookup proposer: each step it finds the last `prompt_lookup_min` to
    `prompt_lookup_max` tokens earlier in the request (prompt or answer so far) and drafts up to
    `num_speculative_tokens` of the tokens that followed them; one forward pass verifies the
    drafts and keeps those the model would have chosen itself; greedy text is unchanged. Off by
    default: it costs at batch 8 (docs/benchmarks.md, "Speculation sweep", which chose these)."""
    num_speculative_tokens: int = 5
    prompt_lookup_min: int = 2
    prompt_lookup_max: int = 4
    """n-gram drafts: tokens proposed per request per step at most, and the shortest and
    longest run of recent tokens looked up."""
    speculative_max_batch: int = 0
    """Drafts only while at most this many requests share a step; 0: at any batch size. vLLM's
    per-batch schedule costs every step (CPU) and full CUDA graphs (GPU): off by default."""
    max_lora_rank: int = 16
    max_loras: int = 2
    """Adapters resident at once: the promoted one and, during a swap, the one it replaces."""
    gpu_memory_utilization: float = 0.90
    enable_sleep_mode: bool = False
    """GPU only: lets a memory snapshot be taken with the weights off the GPU."""
    enable_prefix_caching: bool = True
    dtype: str | None = None
    """None: bfloat16 on a GPU, float32 on a CPU (vLLM's CPU kernels are tested there in fp32)."""
    enforce_eager: bool | None = None
    """None: eager on a CPU (torch.compile's cache does not reload there), graphs on a GPU."""
    log_stats: bool = False
    """vLLM's own periodic stats (throughput, speculation acceptance), for benchmarks."""

    def __post_init__(self) -> None:
        if min(self.num_speculative_tokens, self.prompt_lookup_min) < 1:
            raise ValueError("num_speculative_tokens and prompt_lookup_min must be 1 or more")
        if self.prompt_lookup_min > self.prompt_lookup_max:
            raise ValueError(
                f"prompt_lookup_min ({self.prompt_lookup_min}) must not exceed "
                f"prompt_lookup_max ({self.prompt_lookup_max})"
            )
        if self.speculative_max_batch < 0:
            raise ValueError("speculative_max_batch must be 0 (any batch size) or more")

    def speculative_config(self) -> dict[str, Any] | None:
        """vLLM's `speculative_config` for these settings; None with speculation off."""
        if self.speculative != "ngram":
            return None
        config: dict[str, Any] = {
            "method": "ngram",
            "num_speculative_tokens": self.num_speculative_tokens,
            "prompt_lookup_min": self.prompt_lookup_min,
            "prompt_lookup_max": self.prompt_lookup_max,
        }
        most = self.speculative_max_batch
        if 0 < most < self.max_num_seqs:  # drafts while up to `most` requests share a step
            config["num_speculative_tokens_per_batch_size"] = [
                (1, most, self.num_speculative_tokens),
                (most + 1, self.max_num_seqs, 0),
            ]
        return config


@dataclass
class Adapter:
    """A LoRA adapter served under `model_id`, and the requests still using it."""

    model_id: str
    path: Path
    version: str
    request: Any  # vllm.lora.request.LoRARequest
    in_flight: int = 0
    retired: bool = False


def on_cpu() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - vllm depends on torch
        return True
    return not torch.cuda.is_available()


class VLLMEngine:
    """One base model in vLLM, answering as `model_id`, plus LoRA adapters as further ids."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        model_id: str,
        version: str = "unversioned",
        adapters: dict[str, tuple[Path, str]] | None = None,
        settings: VLLMSettings | None = None,
    ) -> None:
        """Start the engine (25-45 s on a CPU); `adapters` maps an id to (folder, version)."""
        model_path = Path(model_path)
        if not (model_path / "config.json").is_file():
            raise FileNotFoundError(
                f"{model_path} is not a Hugging Face model folder (it has no config.json)"
            )
        self.model_id = model_id
        self.version = version
        self.model_path = model_path
        self.settings = settings or VLLMSettings()
        self.tokens_generated = 0
        """Every token produced since the start, cancelled requests included (a cost meter)."""
        self._lora_ids = itertools.count(1)
        self._adapters: dict[str, Adapter] = {}
        self._states: dict[str, AdapterState] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm", daemon=True)
        self._thread.start()
        try:
            self._engine: Any = self._call(self._start(), timeout=900)
            from transformers import AutoTokenizer

            self.tokenizer: Any = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
            if getattr(self.tokenizer, "chat_template", None) is None:
                raise ValueError(f"the tokenizer in {model_path} has no chat template")
            self.stop_token_ids = stop_ids(self.tokenizer)  # vLLM adds the model's own EOS
            self.max_concurrency = self._capacity()
            self.kv_token_capacity = self._kv_tokens()
            for adapter_id, (path, adapter_version) in (adapters or {}).items():
                self.set_adapter(adapter_id, path, adapter_version)
        except BaseException:
            self.close()
            raise

    # -- start-up -----------------------------------------------------------------------------

    async def _start(self) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        cpu = on_cpu()
        settings = self.settings
        if cpu:
            prepare_cpu_environment()
        options: dict[str, Any] = {  # vLLM types some of these as Literals of its own
            "model": str(self.model_path),
            "tokenizer": str(self.model_path),
            "served_model_name": self.model_id,
            "dtype": settings.dtype or ("float32" if cpu else "bfloat16"),
            "enforce_eager": cpu if settings.enforce_eager is None else settings.enforce_eager,
            "max_model_len": settings.max_model_len,
            "max_num_seqs": settings.max_num_seqs,
            "enable_prefix_caching": settings.enable_prefix_caching,
            "enable_lora": True,
            "max_lora_rank": settings.max_lora_rank,
            "max_loras": settings.max_loras,
            "gpu_memory_utilization": settings.gpu_memory_utilization,
            "enable_sleep_mode": settings.enable_sleep_mode and not cpu,
            "speculative_config": settings.speculative_config(),
            "disable_log_stats": not settings.log_stats,
        }
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**options))

    def _capacity(self) -> int:
        """How many requests run at once at most (`max_num_seqs`); how many fit the KV cache is
        the server's admission decision, from each request's real size (`kv_token_capacity`)."""
        return max(1, self.settings.max_num_seqs)

    def _kv_tokens(self) -> int | None:
        """Tokens the KV cache holds across all requests (blocks times block size)."""
        cache = self._engine.vllm_config.cache_config
        blocks = int(getattr(cache, "num_gpu_blocks", 0) or 0)
        return blocks * int(cache.block_size) if blocks else None

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the engine's loop from any thread that is not that loop."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    # -- models and adapters ------------------------------------------------------------------

    def models(self) -> dict[str, str]:
        with self._lock:
            return {
                self.model_id: self.version,
                **{adapter_id: a.version for adapter_id, a in self._adapters.items()},
            }

    def status(self) -> dict[str, Any]:
        with self._lock:
            adapters = {
                adapter_id: {k: v for k, v in vars(state).items() if v is not None}
                for adapter_id, state in self._states.items()
            }
        return {
            "engine": "vllm",
            "max_concurrency": self.max_concurrency,
            "kv_token_capacity": self.kv_token_capacity,
            "speculative": self.settings.speculative,
            "adapters": adapters,
        }

    def adapter_version(self, model_id: str) -> str | None:
        with self._lock:
            adapter = self._adapters.get(model_id)
            return adapter.version if adapter else None

    def set_adapter(self, model_id: str, path: str | Path, version: str) -> bool:
        """Serve the adapter at `path` as `model_id` from the next request on.

        Returns True once it is loaded. On a load failure the adapter serving before (if any)
        keeps serving, the error is kept for `/health` and logged, and False is returned.
        """
        if model_id == self.model_id:
            raise ValueError(f"{model_id!r} is the base model's id; an adapter needs its own")
        from vllm.lora.request import LoRARequest

        path = Path(path)
        request = LoRARequest(
            lora_name=f"{model_id}@{version}", lora_int_id=next(self._lora_ids), lora_path=str(path)
        )
        error: str | None = None
        if not (path / "adapter_config.json").is_file():
            error = f"{path} is not a LoRA adapter folder (it has no adapter_config.json)"
        else:
            try:
                if not self._call(self._engine.add_lora(request), timeout=300):
                    error = "the engine refused the adapter"
            except Exception as exc:  # vLLM raises its own types for a bad adapter
                error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            state = self._states.setdefault(model_id, AdapterState(version, str(path)))
            if error is not None:
                state.error = f"could not load version {version} from {path}: {error}"
                logger.error("adapter %s: %s", model_id, state.error)
                return False
            old = self._adapters.get(model_id)
            self._adapters[model_id] = Adapter(model_id, path, version, request)
            state.version, state.path, state.error = version, str(path), None
            state.swaps += 1 if old else 0
        if old is not None:
            old.retired = True
            self._drop_if_idle(old)
        logger.info("adapter %s now serves version %s", model_id, version)
        return True

    def _drop_if_idle(self, adapter: Adapter) -> None:
        with self._lock:
            idle = adapter.retired and adapter.in_flight == 0
        if idle:
            asyncio.run_coroutine_threadsafe(
                self._engine.remove_lora(adapter.request.lora_int_id), self._loop
            )

    # -- generation ---------------------------------------------------------------------------

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        encoded = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(encoded["input_ids"])

    def stream(
        self, messages: list[Message], params: SamplingParams, model: str | None = None
    ) -> EngineStream:
        adapter: Adapter | None = None
        if model is not None and model != self.model_id:
            with self._lock:
                adapter = self._adapters.get(model)
                if adapter is None:
                    raise EngineError(f"model {model!r} is not loaded in this engine")
                adapter.in_flight += 1  # pinned: a swap lets this request finish on it
        return _VLLMStream(self, messages, params, adapter)

    def _release(self, adapter: Adapter | None) -> None:
        if adapter is None:
            return
        with self._lock:
            adapter.in_flight -= 1
        self._drop_if_idle(adapter)

    def _sampling(self, params: SamplingParams, max_tokens: int) -> Any:
        from vllm import SamplingParams as VllmSampling
        from vllm.sampling_params import RequestOutputKind

        greedy = params.temperature <= 0
        return VllmSampling(
            max_tokens=max_tokens,
            temperature=0.0 if greedy else params.temperature,
            top_p=1.0 if greedy else params.top_p,
            seed=params.seed,
            stop=list(params.stop) or None,
            stop_token_ids=list(self.stop_token_ids),
            output_kind=RequestOutputKind.DELTA,
            skip_special_tokens=True,
        )

    def log_stats(self) -> None:
        """Have vLLM log its stats now (with `VLLMSettings(log_stats=True)`)."""
        self._call(self._engine.do_log_stats(), timeout=60)

    def sleep(self, level: int = 1) -> None:
        """Free the GPU (level 1: weights to CPU memory, KV cache dropped) before a memory
        snapshot; needs `VLLMSettings(enable_sleep_mode=True)` on a GPU."""
        self._call(self._engine.sleep(level), timeout=600)

    def wake_up(self) -> None:
        """Back on the GPU after `sleep`, e.g. once a container is restored from a snapshot."""
        self._call(self._engine.wake_up(), timeout=600)

    def close(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None:
            try:
                engine.shutdown()
            except Exception:  # shutting down: nothing left to tell
                logger.debug("vLLM shutdown raised", exc_info=True)
            self._engine = None
        if self._loop.is_running():
            with contextlib.suppress(Exception):  # tasks left by vLLM: end them, then the loop
                self._call(_cancel_others(), timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()


@dataclass
class _VLLMStream:
    """One request: produced on the engine's loop, read on the caller's."""

    engine: VLLMEngine
    messages: list[Message]
    params: SamplingParams
    adapter: Adapter | None
    request_id: str = field(default_factory=lambda: f"req-{uuid.uuid4().hex}")
    _queue: asyncio.Queue[object] | None = None
    _task: concurrent.futures.Future[None] | None = None
    _done: bool = False
    _released: bool = False

    def __aiter__(self) -> _VLLMStream:
        return self

    async def __anext__(self) -> EngineEvent:
        if self._done:
            raise StopAsyncIteration
        if self._queue is None:
            self._begin()
        assert self._queue is not None
        item = await self._queue.get()
        if item is _END:
            self._done = True
            self._release()
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._done = True
            self._release()
            if isinstance(item, EngineError):
                raise item
            raise EngineError(f"generation failed: {item}") from item
        return item  # type: ignore[return-value]

    def _begin(self) -> None:
        engine = self.engine
        self._queue = asyncio.Queue()
        try:
            prompt = engine.prompt_ids(self.messages)
        except Exception as exc:
            self._queue.put_nowait(EngineError(f"the prompt could not be built: {exc}"))
            return
        room = engine.settings.max_model_len - len(prompt)
        if room <= 0:
            self._queue.put_nowait(
                PromptTooLong(
                    f"the prompt is {len(prompt):,} tokens; this model's context holds "
                    f"{engine.settings.max_model_len:,}"
                )
            )
            return
        sampling = engine._sampling(self.params, min(self.params.max_tokens, room))
        caller = asyncio.get_running_loop()
        self._task = asyncio.run_coroutine_threadsafe(
            self._produce(prompt, sampling, caller), engine._loop
        )

    async def _produce(
        self, prompt: list[int], sampling: Any, caller: asyncio.AbstractEventLoop
    ) -> None:
        queue = self._queue
        assert queue is not None

        def hand(item: object) -> None:
            # RuntimeError: the caller's loop has closed, so nobody is listening
            with contextlib.suppress(RuntimeError):
                caller.call_soon_threadsafe(queue.put_nowait, item)

        engine = self.engine
        completion = pending = 0
        reason = "length"
        try:
            outputs = engine._engine.generate(
                {"prompt_token_ids": prompt},
                sampling,
                self.request_id,
                lora_request=self.adapter.request if self.adapter else None,
            )
            async for output in outputs:
                piece = output.outputs[0]
                completion += len(piece.token_ids)
                with engine._lock:
                    engine.tokens_generated += len(piece.token_ids)
                pending += len(piece.token_ids)
                if piece.text:  # tokens that end mid-character come with the next text
                    hand(Delta(piece.text, pending))
                    pending = 0
                if output.finished:
                    reason = "stop" if piece.finish_reason in ("stop", "abort") else "length"
            hand(Finished(reason, len(prompt), completion))  # type: ignore[arg-type]
        except asyncio.CancelledError:
            await engine._engine.abort(self.request_id)
            raise
        except BaseException as exc:
            hand(exc)
        finally:
            hand(_END)

    async def aclose(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()  # aborts the request in vLLM, then ends the producer
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wrap_future(task)
        self._done = True
        self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self.engine._release(self.adapter)


_END = object()


async def _cancel_others() -> None:
    """Cancel every task on the running loop but this one, and wait for them to end."""
    me = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not me]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
