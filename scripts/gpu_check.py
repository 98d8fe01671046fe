"""GPU check of the fine-tuning pipeline: Unsloth's GPU path, end to end, on a small Llama.

Run it on a machine with a CUDA GPU and the training extras installed (Modal's training image,
or any host that can install Unsloth; a lent machine that cannot install them runs
`scripts/gpu_probe.py` instead, the PEFT path with the project's own bundle):

    pip install -e '.[train,eval]'
    python scripts/gpu_check.py                # 4-bit base, as in production
    python scripts/gpu_check.py --no-4bit      # 16-bit base

It builds a small Llama-architecture model from a config (random weights, the tiny Llama-3
tokenizer and chat template of `modal_backend.serving.testing`), then calls the same `train()` the
Modal job calls, with Unsloth required: LoRA r=16 on every projection, a few dozen SFT steps
with the 8-bit optimizer, checkpoints, the adapter and merged 16-bit weights, the merge-vs-adapter
and end-of-turn checks, and the eval harness on two examples. Finally the transformers engine
loads the merged weights (Unsloth's fast inference on a GPU) and generates one answer.

Prints each stage's time and a JSON summary. Exit status: 0 when Unsloth trained on the GPU,
saved merged weights and the engine generated the learned answer; 1 when a stage failed;
2 when there is no GPU. Nothing is fetched from a hub.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ANSWERS = {
    "grammar": "She went to school yesterday and bought some books.",
    "clarity": "To win, the team had to practise daily.",
    "style": "The sunset was beautiful.",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="keep the run here")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    parser.add_argument("--no-4bit", action="store_true")
    parser.add_argument(
        "--cpu-dry-run",
        action="store_true",
        help="run the steps on CPU with the PEFT backend (checks the script, not Unsloth)",
    )
    options = parser.parse_args()

    import torch

    from modal_backend.training.runtime import hide_broken_torchvision

    hide_broken_torchvision()
    out = options.out or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    if options.cpu_dry_run:
        return run(out, options.steps, options.learning_rate, four_bit=False, backend="peft")
    if not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU (the CPU path is covered by the tests)")
        return 2
    started = time.perf_counter()
    import unsloth  # first, so it patches transformers and PEFT before they are used

    print(f"unsloth {unsloth.__version__} imported in {time.perf_counter() - started:.1f} s")
    return run(
        out, options.steps, options.learning_rate, four_bit=not options.no_4bit, backend="unsloth"
    )


def run(out: Path, steps: int, learning_rate: float, *, four_bit: bool, backend: str) -> int:
    import torch

    from modal_backend.training.checks import CHECK_PROMPTS, ChecksFailed
    from modal_backend.training.config import TrainConfig
    from modal_backend.training.pipeline import train

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    base = small_llama(out / "base")
    timings["build_model_s"] = time.perf_counter() - clock
    train_file = write_jsonl(
        out / "train.jsonl",
        [
            {
                "id": f"check-{r.type}",
                "type": r.type,
                "source": r.text,
                "references": [ANSWERS[r.type]],
            }
            for r in CHECK_PROMPTS
        ],
    )
    eval_file = write_jsonl(
        out / "eval.jsonl",
        [
            {
                "id": "e-1",
                "type": "grammar",
                "source": "The committee have reviewed the proposal yesterday.",
                "references": ["The committee reviewed the proposal yesterday."],
            },
            {
                "id": "e-2",
                "type": "style",
                "source": "Rain fell and fell on the old old bridge.",
                "references": ["Rain fell steadily on the old bridge."],
            },
        ],
    )
    config = TrainConfig(
        base_model=str(base),
        datasets=(str(train_file),),
        eval_datasets=(str(eval_file),),
        trainer_backend=backend,  # type: ignore[arg-type]
        load_in_4bit=four_bit,
        max_steps=steps,
        per_device_train_batch_size=3,
        gradient_accumulation_steps=1,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        warmup_ratio=0.0,
        eval_fraction=0.0,
        save_steps=max(1, steps // 2),
        logging_steps=10,
        max_seq_length=512,
        check_max_new_tokens=32,
        eval_limit=2,
    )
    clock = time.perf_counter()
    failure = None
    try:
        manifest = train(config, out / "weights")
    except ChecksFailed as exc:
        failure = str(exc)
        manifest = latest_manifest(out / "weights")
    timings["train_pipeline_s"] = time.perf_counter() - clock

    merged = out / "weights" / "runs" / manifest["run_id"] / "merged"
    generated, generation = generate(merged, CHECK_PROMPTS[0])
    timings.update(generation)
    on_gpu = torch.cuda.is_available()
    summary: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
        "load_in_4bit": manifest.get("load_in_4bit"),
        "trainer_backend": manifest.get("trainer_backend"),
        "status": manifest.get("status"),
        "failure": failure,
        "losses": {k: v for k, v in manifest.get("losses", {}).items() if k != "history"},
        "training": manifest.get("training"),
        "checks": {
            key: manifest.get("checks", {}).get(key)
            for key in ("passed", "merged_matches_adapter", "stops_at_end_of_turn")
        },
        "eval_error_rate": manifest.get("eval", {}).get("summary", {}).get("error_rate"),
        "pipeline_timings": manifest.get("timings"),
        "timings": {key: round(value, 3) for key, value in timings.items()},
        "generated": generated,
        "expected": ANSWERS["grammar"],
        "merged_weights": str(merged),
        "peak_gpu_memory_gb": (
            round(torch.cuda.max_memory_allocated() / 2**30, 2) if on_gpu else None
        ),
    }
    print(json.dumps(summary, indent=2))
    ok = (
        manifest.get("trainer_backend") == backend
        and (merged / "config.json").is_file()
        and generated == ANSWERS["grammar"]
        and failure is None
    )
    print("gpu check:", "passed" if ok else "FAILED")
    return 0 if ok else 1


def small_llama(folder: Path) -> Path:
    """A Llama-architecture model from a config, big enough for Unsloth's kernels (head size
    64), with the tiny Llama-3 tokenizer."""
    from modal_backend.serving.testing import build_tiny_llama

    return build_tiny_llama(folder, hidden_size=256, intermediate_size=1024, trainable_scale=4)


def generate(merged: Path, request: Any) -> tuple[str, dict[str, float]]:
    """One greedy answer from the merged weights through the serving engine, with timings."""
    from modal_backend.serving.engines.base import Delta, SamplingParams
    from modal_backend.serving.engines.transformers_engine import TransformersEngine
    from suggestions.prompts import build_messages

    clock = time.perf_counter()
    engine = TransformersEngine.load(merged, model_id="gpu-check")
    load_s = time.perf_counter() - clock

    async def collect() -> tuple[str, float]:
        started = time.perf_counter()
        first = 0.0
        pieces: list[str] = []
        messages: Any = build_messages(request)
        async for event in engine.stream(messages, SamplingParams(max_tokens=48)):
            if isinstance(event, Delta):
                first = first or time.perf_counter() - started
                pieces.append(event.text)
        return "".join(pieces), first

    clock = time.perf_counter()
    text, first_token_s = asyncio.run(collect())
    total_s = time.perf_counter() - clock
    engine.close()
    return text.strip(), {
        "engine_load_s": load_s,
        "first_token_s": first_token_s,
        "generate_s": total_s,
    }


def latest_manifest(weights: Path) -> dict[str, Any]:
    manifests = sorted((weights / "runs").glob("*/manifest.json"))
    return json.loads(manifests[-1].read_text()) if manifests else {}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


if __name__ == "__main__":
    sys.exit(main())
