"""`TransformersEngine`: a Hugging Face model folder (merged weights, or base plus LoRA adapter).

This is the path Modal runs on a GPU, and what the tests run on CPU with a tiny model. Generation
is greedy unless a temperature is asked for, stops on the tokenizer's EOS and on the chat
template's end-of-turn token (Llama 3's `<|eot_id|>`, ChatML's `<|im_end|>`), and streams
decoded text through a `TextStreamer` as words complete.

Generation runs in the engine's own long-lived threads (`GenerationThreads`, one per request it
runs at once), each set up once for the model's device (autograd off, its CUDA device current),
not in a new thread per request: whatever torch and CUDA set up per thread is then paid once,
not by every request. On an H200 a user measured `_generate` at 29.7 tok/s in the main thread
and 10.6-14.4 in any new worker thread; `scripts/gpu_probe.py` runs the same generation every
suspected way side by side (its `decode` section) so a GPU session can tell which cause it was.
Either way this engine is a fallback: eager batch-1 decoding is bound by Python launching
kernels, far below what the GPU's memory bandwidth allows (see DESIGN.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    StoppingCriteriaList,
    TextStreamer,
)

from ..end_of_turn import stop_ids
from .base import (
    Delta,
    Emit,
    EngineStream,
    Finished,
    GenerationThreads,
    Message,
    PromptTooLong,
    SamplingParams,
    SingleModel,
    StopFlag,
    ThreadedStream,
)

logger = logging.getLogger(__name__)


class TransformersEngine(SingleModel):
    """One loaded model and tokenizer. Build it with `TransformersEngine.load`."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        version: str,
        max_concurrency: int = 1,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.version = version
        self.max_concurrency = max_concurrency
        self.stop_token_ids = stop_token_ids(model, tokenizer)
        self.context_tokens = int(getattr(model.config, "max_position_embeddings", 8192))
        self.tokens_generated = 0
        """Every token produced since load, cancelled requests included (a cost meter)."""
        self._count_lock = threading.Lock()
        self.threads = GenerationThreads(
            max_concurrency, name=f"generate-{model_id}", setup=thread_setup(model)
        )
        """Where generation runs: long-lived threads set up for the model's device."""

    @classmethod
    def load(
        cls,
        model_path: str | Path,
        *,
        adapter_path: str | Path | None = None,
        model_id: str | None = None,
        version: str = "unversioned",
        device: str | None = None,
        max_concurrency: int | None = None,
    ) -> TransformersEngine:
        """Load from local folders only: nothing is fetched from a hub.

        One generation at a time by default: `generate` calls sharing a model from several
        threads are not known to be safe with Unsloth's kernels, and a seed is process-wide.
        """

        model_path = Path(model_path)
        if not (model_path / "config.json").is_file():
            raise FileNotFoundError(
                f"{model_path} is not a Hugging Face model folder (it has no config.json)"
            )
        if adapter_path is not None and not (Path(adapter_path) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{adapter_path} is not a LoRA adapter folder")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, tokenizer = _load_with_unsloth(model_path, adapter_path, device)
        if model is None:
            model, tokenizer = _load_with_transformers(model_path, adapter_path, device)
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(f"the tokenizer in {model_path} has no chat template")
        return cls(
            model,
            tokenizer,
            model_id=model_id or model_path.name,
            version=version,
            max_concurrency=max_concurrency or 1,
        )

    def prompt_ids(self, messages: list[Message]) -> Any:
        encoded = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        return encoded["input_ids"].to(self.model.device)

    def stream(
        self, messages: list[Message], params: SamplingParams, model: str | None = None
    ) -> EngineStream:
        return ThreadedStream(
            lambda emit, stop: self._generate(messages, params, emit, stop), self.threads
        )

    def generation_config(self, params: SamplingParams, prompt_tokens: int) -> GenerationConfig:
        """What `generate` is given for a request: its length within the context, greedy or
        sampled, and every stop token. Raises PromptTooLong when the prompt leaves no room."""
        room = self.context_tokens - prompt_tokens
        if room <= 0:
            raise PromptTooLong(
                f"the prompt is {prompt_tokens:,} tokens; this model's context holds "
                f"{self.context_tokens:,}"
            )
        sampling = params.temperature > 0
        return GenerationConfig(
            max_new_tokens=min(params.max_tokens, room),
            do_sample=sampling,
            temperature=params.temperature if sampling else None,
            top_p=params.top_p if sampling else None,
            eos_token_id=list(self.stop_token_ids),
            pad_token_id=(
                self.stop_token_ids[0]
                if self.tokenizer.pad_token_id is None
                else self.tokenizer.pad_token_id
            ),
        )

    def _generate(
        self, messages: list[Message], params: SamplingParams, emit: Emit, stop: StopFlag
    ) -> None:
        input_ids = self.prompt_ids(messages)
        prompt_tokens = int(input_ids.shape[-1])
        config = self.generation_config(params, prompt_tokens)
        if config.do_sample and params.seed is not None:
            torch.manual_seed(params.seed)
        streamer = _EmittingStreamer(self.tokenizer, emit)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([_CountAndStop(self, stop)]),
            )
        completion = output[0, prompt_tokens:].tolist()
        stopped_on_token = bool(completion) and completion[-1] in self.stop_token_ids
        emit(
            Finished(
                finish_reason="stop" if stopped_on_token or stop.is_set() else "length",
                prompt_tokens=prompt_tokens,
                completion_tokens=len(completion),
            )
        )

    def _count(self) -> None:
        with self._count_lock:
            self.tokens_generated += 1

    def close(self) -> None:
        self.threads.close()
        self.model = None


def thread_setup(model: Any) -> Callable[[], None]:
    """What each generation thread sets once for itself: torch keeps the grad mode and the
    current CUDA device per thread, so a new thread starts with autograd on and device 0."""
    device = getattr(model, "device", None)

    def setup() -> None:
        torch.set_grad_enabled(False)
        if device is not None and device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device.index)

    return setup


def stop_token_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """EOS from the generation config and the tokenizer, plus the chat template's end-of-turn
    token (`<|eot_id|>`, `<|im_end|>`...)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    return stop_ids(tokenizer, configured)


class _CountAndStop:
    """Runs after every generated token: counts it, and ends generation once the client is gone.

    Its two possible answers are made once per request, not per token (`generate` combines them
    into a new tensor, so they are never changed)."""

    def __init__(self, engine: TransformersEngine, stop: StopFlag) -> None:
        self.engine = engine
        self.stop = stop
        self._answers: dict[bool, Any] = {}

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        self.engine._count()
        stopping = self.stop.is_set()
        answer = self._answers.get(stopping)
        if answer is None or answer.shape[0] != input_ids.shape[0]:
            answer = torch.full((input_ids.shape[0],), stopping, device=input_ids.device)
            self._answers[stopping] = answer
        return answer


class _EmittingStreamer(TextStreamer):
    """`TextStreamer`'s word-boundary decoding, handing each finished piece to `emit` with the
    number of tokens behind it (a word is often several).

    `TextIteratorStreamer` does the same through a queue read by a second thread; emitting
    directly keeps one worker thread per request.
    """

    def __init__(self, tokenizer: Any, emit: Emit) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.emit = emit
        self.unsent_tokens = 0

    def put(self, value: Any) -> None:
        if not (self.skip_prompt and self.next_tokens_are_prompt):
            self.unsent_tokens += int(value.shape[-1]) if value.dim() else 1
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.emit(Delta(text, max(1, self.unsent_tokens)))
            self.unsent_tokens = 0


def _load_with_transformers(model_path: Path, adapter_path: str | Path | None, device: str) -> Any:
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model: Any = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=dtype, local_files_only=True
    )
    if adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_path), local_files_only=True)
    model.to(device)
    model.eval()
    return model, tokenizer


def _load_with_unsloth(
    model_path: Path, adapter_path: str | Path | None, device: str
) -> tuple[Any, Any]:
    """Unsloth's fast inference kernels, where Unsloth and a GPU are both present."""
    if device != "cuda":
        return None, None
    try:
        from unsloth import FastLanguageModel
    except ImportError:
        logger.info("Unsloth is not installed: loading with plain transformers")
        return None, None
    except Exception:  # Unsloth refuses some GPU setups with its own errors; serve anyway
        logger.warning("Unsloth cannot run here: loading with plain transformers", exc_info=True)
        return None, None
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(adapter_path or model_path), load_in_4bit=False, local_files_only=True
    )
    FastLanguageModel.for_inference(model)
    return model, tokenizer
