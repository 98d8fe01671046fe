"""Post-training checks: the merged weights are the adapter's model, and answers end their turn.

1. Merge: the base model with the LoRA adapter applied (PEFT) and the merged 16-bit weights must
   make the same choices on a fixed prompt set. The adapter model's greedy answer to each prompt
   is fed to both models (teacher forcing), and at every answer position the merged model's top
   token must be the adapter model's, unless the two are a near-tie: both models put them within
   `MERGE_TOLERANCE` logits of each other. Exact greedy equality is too strict in bf16: the
   merged weights are rounded once more than base + adapter, which can flip a near-tie and, in
   free-running generation, everything after it. A bad merge (wrong scaling, a 4-bit base merged
   lossily, adapters left out) moves logits by far more, and the first position where it does
   is recorded with its margins. Both models are loaded in turn, in the training dtype (bf16 on
   a GPU: about 16 GB each for the 8B model; fp32 on a CPU), so the check needs no more memory
   than one 16-bit copy plus the answers' logits.
2. End of turn: each greedy answer must end with `<|eot_id|>` within the token budget, and the
   merged folder's generation config must list it as a stop token, so a server stops there.

The adapter is applied to 16-bit weights: those of the base, or for a pre-quantized
`...-bnb-4bit` base its 16-bit original, which is what Unsloth merges into. Both models are
loaded with stock transformers + PEFT: the check must not trust the library that made the
weights. Unsloth patches the Llama classes of the process that trained, so after an Unsloth run
the checks run in a fresh process (`python -m modal_backend.training.checks`).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modal_backend.serving.end_of_turn import end_of_turn_id
from suggestions.contract import LlamaRequest
from suggestions.prompts import build_messages

CHECK_PROMPTS: tuple[LlamaRequest, ...] = (
    LlamaRequest(text="She go to school yesterday and buyed a books.", type="grammar"),
    LlamaRequest(
        text="In order to be able to win the game, it was necessary for the team to practise "
        "on a daily basis.",
        type="clarity",
    ),
    LlamaRequest(text="The sunset was very very nice and it was good to look at.", type="style"),
)
"""One passage per suggestion type; fixed, so checks of different runs are comparable."""

_PREQUANTIZED = re.compile(r"(-unsloth)?-bnb-4bit$")
MERGE_TOLERANCE = 0.5
"""Largest logit gap, in both models, at which a different top token counts as a near-tie.
bf16 rounding of the merged weights moves an 8B model's logits by about 0.1 to 0.3; a bad
merge moves them by several."""


class ChecksFailed(RuntimeError):
    """A post-training check failed; the run is not promotable."""


@dataclass(frozen=True)
class PromptCheck:
    type: str
    logits_match: bool
    """No position where the merged model prefers another token beyond the tolerance."""
    same_output: bool
    """Free-running greedy answers identical (informative: a near-tie may flip it)."""
    stopped_at_end_of_turn: bool
    adapter_text: str
    merged_text: str
    adapter_tokens: int
    merged_tokens: int
    divergences: int
    """Answer positions where the merged model's top token differs, near-ties included."""
    first_divergence: dict[str, Any] | None
    max_abs_logit_diff: float


def compare_answer_logits(
    adapter_logits: Any, merged_logits: Any, answer: Sequence[int], *, tolerance: float
) -> dict[str, Any]:
    """Compare two models' logits at each position of `answer` (the adapter's greedy tokens).

    A position diverges where the merged model's top token is not the answer's; the divergence
    is tolerated when both models rank the two tokens within `tolerance` logits (a near-tie).
    Returns `matches`, the count of divergences, the first one that is not tolerated (else the
    first tolerated one) with its position, tokens and margins, and the largest logit gap.
    """
    import torch

    adapter = adapter_logits.float()
    merged = merged_logits.float()
    chosen = torch.tensor(list(answer), dtype=torch.long)
    preferred = merged.argmax(dim=-1)
    rows = torch.arange(len(chosen))
    adapter_margin = adapter[rows, chosen] - adapter[rows, preferred]
    merged_margin = merged[rows, preferred] - merged[rows, chosen]
    margin = torch.maximum(adapter_margin, merged_margin)
    diverged = preferred != chosen
    beyond = diverged & (margin > tolerance)
    first = None
    positions = beyond.nonzero() if bool(beyond.any()) else diverged.nonzero()
    if len(positions):
        index = int(positions[0, 0])
        first = {
            "position": index,
            "adapter_token": int(chosen[index]),
            "merged_token": int(preferred[index]),
            "adapter_margin": round(float(adapter_margin[index]), 4),
            "merged_margin": round(float(merged_margin[index]), 4),
            "tolerated": not bool(beyond[index]),
        }
    return {
        "matches": not bool(beyond.any()),
        "divergences": int(diverged.sum()),
        "first_divergence": first,
        "max_abs_logit_diff": round(float((adapter - merged).abs().max()), 4) if len(rows) else 0.0,
    }


def adapter_base(base_model: str, override: str | None = None) -> str:
    """The 16-bit weights the adapter is checked on (see the module docstring)."""
    return override or _PREQUANTIZED.sub("", base_model)


def run_checks(
    *,
    base_model: str,
    adapter_dir: Path,
    merged_dir: Path,
    device: str,
    base_revision: str | None = None,
    prompts: Sequence[LlamaRequest] = CHECK_PROMPTS,
    max_new_tokens: int = 64,
    tolerance: float = MERGE_TOLERANCE,
) -> dict[str, Any]:
    """Both checks; the result goes into the manifest as is (`passed` says whether to go on)."""
    started = time.perf_counter()
    tokenizer = _tokenizer(merged_dir)
    conversations = [build_messages(request) for request in prompts]
    adapter_model = _load(base_model, device, adapter_dir=adapter_dir, revision=base_revision)
    from_adapter = [greedy_ids(adapter_model, tokenizer, m, max_new_tokens) for m in conversations]
    forced = list(zip(conversations, from_adapter, strict=True))
    adapter_logits = [answer_logits(adapter_model, tokenizer, m, ids) for m, ids in forced]
    del adapter_model
    merged_model = _load(str(merged_dir), device)
    from_merged = [greedy_ids(merged_model, tokenizer, m, max_new_tokens) for m in conversations]
    merged_logits = [answer_logits(merged_model, tokenizer, m, ids) for m, ids in forced]
    configured_stop = _configured_stops(merged_model)
    del merged_model
    end_of_turn = end_of_turn_id(tokenizer)
    results = []
    for index, request in enumerate(prompts):
        adapter_ids, merged_ids = from_adapter[index], from_merged[index]
        comparison = compare_answer_logits(
            adapter_logits[index], merged_logits[index], adapter_ids, tolerance=tolerance
        )
        results.append(
            PromptCheck(
                type=request.type,
                logits_match=comparison["matches"],
                same_output=adapter_ids == merged_ids,
                stopped_at_end_of_turn=bool(adapter_ids) and adapter_ids[-1] == end_of_turn,
                adapter_text=tokenizer.decode(adapter_ids, skip_special_tokens=True),
                merged_text=tokenizer.decode(merged_ids, skip_special_tokens=True),
                adapter_tokens=len(adapter_ids),
                merged_tokens=len(merged_ids),
                divergences=comparison["divergences"],
                first_divergence=comparison["first_divergence"],
                max_abs_logit_diff=comparison["max_abs_logit_diff"],
            )
        )
    merge_ok = all(result.logits_match for result in results)
    stops_ok = all(result.stopped_at_end_of_turn for result in results)
    config_ok = end_of_turn is not None and end_of_turn in configured_stop
    first = next(
        (
            {"type": r.type, **r.first_divergence}
            for r in results
            if r.first_divergence and not r.first_divergence["tolerated"]
        ),
        None,
    )
    return {
        "passed": merge_ok and stops_ok and config_ok,
        "merged_matches_adapter": merge_ok,
        "stops_at_end_of_turn": stops_ok,
        "generation_config_stops_at_end_of_turn": config_ok,
        "adapter_base": base_model,
        "adapter_base_revision": base_revision,
        "merge_comparison": "teacher-forced logits on the adapter's greedy answers",
        "merge_tolerance": tolerance,
        "first_divergence": first,
        "max_new_tokens": max_new_tokens,
        "prompts": [asdict(result) for result in results],
        "seconds": round(time.perf_counter() - started, 3),
    }


def run_checks_isolated(
    *,
    base_model: str,
    adapter_dir: Path,
    merged_dir: Path,
    device: str,
    base_revision: str | None = None,
    max_new_tokens: int = 64,
    tolerance: float = MERGE_TOLERANCE,
) -> dict[str, Any]:
    """`run_checks` here, or in a fresh process when this one has imported Unsloth."""
    if "unsloth" not in sys.modules:
        return run_checks(
            base_model=base_model,
            adapter_dir=adapter_dir,
            merged_dir=merged_dir,
            device=device,
            base_revision=base_revision,
            max_new_tokens=max_new_tokens,
            tolerance=tolerance,
        )
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "checks.json"
        command = [
            sys.executable, "-m", "modal_backend.training.checks",
            "--base", base_model, "--adapter", str(adapter_dir), "--merged", str(merged_dir),
            "--device", device, "--max-new-tokens", str(max_new_tokens), "--out", str(out),
            "--tolerance", str(tolerance),
        ]  # fmt: skip
        if base_revision:
            command += ["--revision", base_revision]
        subprocess.run(command, check=True)
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def main(argv: list[str] | None = None) -> int:
    """`python -m modal_backend.training.checks`: the checks of one run, as JSON."""
    parser = argparse.ArgumentParser(prog="python -m modal_backend.training.checks")
    parser.add_argument("--base", required=True, help="16-bit weights the adapter applies to")
    parser.add_argument("--adapter", type=Path, required=True)
    parser.add_argument("--merged", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--tolerance", type=float, default=MERGE_TOLERANCE)
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args(argv)
    from .runtime import hide_broken_torchvision

    hide_broken_torchvision()
    result = run_checks(
        base_model=options.base,
        adapter_dir=options.adapter,
        merged_dir=options.merged,
        device=options.device,
        base_revision=options.revision,
        max_new_tokens=options.max_new_tokens,
        tolerance=options.tolerance,
    )
    options.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def failure_summary(checks: dict[str, Any]) -> str:
    """One sentence naming the checks that failed."""
    failed = [
        name.replace("_", " ")
        for name in (
            "merged_matches_adapter",
            "stops_at_end_of_turn",
            "generation_config_stops_at_end_of_turn",
        )
        if not checks.get(name)
    ]
    return "post-training check(s) failed: " + ", ".join(failed or ["unknown"])


def greedy_ids(model: Any, tokenizer: Any, messages: Any, max_new_tokens: int) -> list[int]:
    """The greedy answer's token ids, up to and including the first stop token."""
    import torch

    from modal_backend.serving.engines.transformers_engine import stop_token_ids

    stops = stop_token_ids(model, tokenizer)
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )["input_ids"].to(model.device)
    # The model's own generation config, greedy: its sampling settings must not apply here.
    config = type(model.generation_config)(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=list(stops),
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0],
    )
    with torch.inference_mode():
        output = model.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), generation_config=config
        )
    return [int(token) for token in output[0, prompt.shape[-1] :].tolist()]


def answer_logits(model: Any, tokenizer: Any, messages: Any, answer: Sequence[int]) -> Any:
    """The model's logits (float32, on the CPU) at each position of `answer`, given the prompt
    and the answer's earlier tokens: one forward pass, no sampling."""
    import torch

    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )["input_ids"]
    tokens = torch.cat([prompt, torch.tensor([list(answer)[:-1]], dtype=prompt.dtype)], dim=-1)
    tokens = tokens.to(model.device)
    with torch.inference_mode():
        logits = model(input_ids=tokens, attention_mask=torch.ones_like(tokens)).logits
    start = prompt.shape[-1] - 1
    return logits[0, start : start + len(answer)].float().cpu()


def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def _load(
    path: str, device: str, *, adapter_dir: Path | None = None, revision: str | None = None
) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model: Any = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=dtype)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.to(device)
    model.eval()
    return model


def _configured_stops(model: Any) -> list[int]:
    configured = getattr(model.generation_config, "eos_token_id", None)
    values = configured if isinstance(configured, list) else [configured]
    return [value for value in values if isinstance(value, int)]


if __name__ == "__main__":
    sys.exit(main())
