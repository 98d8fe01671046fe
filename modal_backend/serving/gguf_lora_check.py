"""Proof that a GGUF LoRA is the PEFT adapter: greedy tokens from llama.cpp with the adapter
against transformers + PEFT on the dequantized base, prompt by prompt.

    python -m modal_backend.serving.gguf_lora_check --base qwen1.5b \\
        --adapter models/writing-qwen-lora

The Hugging Face folder holds the GGUF's own weights dequantized, so the two differ only in
arithmetic: llama.cpp multiplies quantized blocks (activations rounded to 8 bits), transformers
multiplies fp32. Where the token sequences part, the transformers model's logit gap between its
token and llama.cpp's says whether that is a near-tie such rounding flips (a small gap) or a real
difference (a large one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from suggestions.contract import LlamaRequest
from suggestions.prompts import build_messages

from .engines.base import Delta, SamplingParams
from .local_bases import HF_BASES, ensure_hf_base
from .model_parts import ensure_model

PROMPTS = (
    LlamaRequest(text="She go to school every days and she like it.", type="grammar"),
    LlamaRequest(text="Their is many reason why peoples should recycling.", type="grammar"),
    LlamaRequest(text="I has been waiting here since two hour.", type="grammar"),
    LlamaRequest(text="Me and him goes to the libary on sundays.", type="grammar"),
    LlamaRequest(
        text="In my opinion I think that the the meeting was very very long and boring.",
        type="clarity",
    ),
    LlamaRequest(text="The report was wrote by the team and it were late.", type="style"),
)
NEAR_TIE = 1.0
"""A logit gap under this is a near-tie that quantized arithmetic may flip."""


@dataclass(frozen=True, slots=True)
class Comparison:
    """One prompt's greedy tokens through both stacks."""

    text: str
    scale: float
    matched_tokens: int
    compared_tokens: int
    gap_at_divergence: float | None
    """transformers' logit gap between its token and llama.cpp's where they part (None: equal)."""
    transformers: str
    llamacpp: str

    @property
    def explained(self) -> bool:
        return self.gap_at_divergence is None or self.gap_at_divergence < NEAR_TIE


def compare_greedy(
    hf_folder: Path,
    adapter_dir: Path,
    base_gguf: Path,
    *,
    requests: Sequence[LlamaRequest] = PROMPTS,
    tokens: int = 32,
    scales: Sequence[float] = (1.0, 0.0),
) -> list[Comparison]:
    """Each request at each adapter scale (1: the run, 0: the stock base)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .engines.llamacpp_engine import LlamaCppEngine

    tokenizer = AutoTokenizer.from_pretrained(hf_folder)
    base = AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.float32)
    model: Any = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    engine = LlamaCppEngine(
        base_gguf, model_id="base", adapters={"run": (adapter_dir, "checked")}, context_tokens=1024
    )
    results = []
    try:
        for request in requests:
            messages: list[Any] = [dict(m) for m in build_messages(request)]
            encoded: Any = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
            )
            prompt = encoded["input_ids"]
            for scale in scales:
                with _adapter_scale(model, scale), torch.no_grad():
                    output = model.generate(prompt, max_new_tokens=tokens, do_sample=False)
                    ours = output[0, prompt.shape[1] :].tolist()
                theirs_text = asyncio.run(
                    _complete(engine, messages, "run" if scale else "base", tokens)
                )
                theirs = tokenizer.encode(theirs_text, add_special_tokens=False)
                results.append(
                    _compare(model, tokenizer, prompt, ours, theirs, request.text, scale, tokens)
                )
    finally:
        engine.close()
    return results


async def _complete(engine: Any, messages: list[Any], model: str, tokens: int) -> str:
    parts = []
    async for event in engine.stream(messages, SamplingParams(max_tokens=tokens), model=model):
        if isinstance(event, Delta):
            parts.append(event.text)
    return "".join(parts)


def _compare(
    model: Any,
    tokenizer: Any,
    prompt: Any,
    ours: list[int],
    theirs: list[int],
    text: str,
    scale: float,
    tokens: int,
) -> Comparison:
    import torch

    ours_text = tokenizer.decode(ours, skip_special_tokens=True)
    # llama.cpp's text drops the end-of-turn token: compare the visible tokens, and where one
    # side ended its turn early, its next token is the end of turn.
    ours = tokenizer.encode(ours_text, add_special_tokens=False)
    compared = min(len(ours), len(theirs))
    matched = next((i for i in range(compared) if ours[i] != theirs[i]), compared)
    ended_early = len(ours) != len(theirs) and compared < tokens - 2
    gap = None
    if matched < compared or ended_early:
        end = tokenizer.eos_token_id
        mine = ours[matched] if matched < len(ours) else end
        other = theirs[matched] if matched < len(theirs) else end
        prefix = torch.tensor([prompt[0].tolist() + ours[:matched]])
        with _adapter_scale(model, scale), torch.no_grad():
            logits = model(prefix).logits[0, -1]
        gap = float(logits[mine] - logits[other])
    return Comparison(text, scale, matched, compared, gap, ours_text, tokenizer.decode(theirs))


class _adapter_scale:
    """PEFT's adapter on (scale 1) or off (scale 0) for a block."""

    def __init__(self, model: Any, scale: float) -> None:
        self.model, self.scale = model, scale
        self._context: Any = None

    def __enter__(self) -> None:
        if self.scale == 0.0:
            self._context = self.model.disable_adapter()
            self._context.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self._context is not None:
            self._context.__exit__(*exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modal_backend.serving.gguf_lora_check")
    parser.add_argument("--base", choices=sorted(HF_BASES), default="smollm2")
    parser.add_argument("--adapter", type=Path, required=True, help="a PEFT adapter folder")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the comparisons here")
    options = parser.parse_args(argv)
    base = HF_BASES[options.base]
    results = compare_greedy(
        ensure_hf_base(base), options.adapter, ensure_model(base.gguf), tokens=options.tokens
    )
    for result in results:
        verdict = (
            "equal"
            if result.gap_at_divergence is None
            else (
                f"part at token {result.matched_tokens} (logit gap {result.gap_at_divergence:.3f}, "
                f"{'a near-tie' if result.explained else 'NOT a near-tie'})"
            )
        )
        print(f"scale {result.scale:g}  {result.text[:40]!r}: {verdict}")
    equal = sum(result.gap_at_divergence is None for result in results)
    print(
        f"{equal} of {len(results)} equal for their first {options.tokens} tokens; "
        f"{sum(not r.explained for r in results)} unexplained"
    )
    if options.json:
        options.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0 if all(result.explained for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
