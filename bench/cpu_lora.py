"""vLLM's CPU LoRA ops against ours (`vllm_cpu_lora`), measured in one run.

    python bench/cpu_lora.py [--burst 32] [--repeat 2]

Each arm starts its own process and `VLLMEngine`: SmolLM2-135M-Instruct with our shipped adapter
(`writing-llama`), `max_num_seqs` 32, called directly (no HTTP). "vllm" keeps vLLM's per-token
gather (our plugin left out of `VLLM_PLUGINS`); "grouped" is the default, one product per
adapter. Each arm answers
grammar rows of our eval set: `--burst` requests at once (prefill-heavy: when the last first token
came, and the whole burst's time), 16 at concurrency 8 through the adapter and through the stock
base, and 8 one at a time. The arms alternate `--repeat` times; the ratios printed are grouped
over vllm, from the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark's helpers

from batching import TUNED, at_concurrency, direct

from eval.data import load_dataset
from modal_backend.serving.local_bases import SMOLLM2_MODEL_ID, ensure_smollm2
from modal_backend.serving.shipped_adapter import verified_adapter
from modal_backend.training.config import DEFAULT_EVAL_SET, resolve_path
from suggestions import LlamaRequest

ARMS = ("vllm", "grouped")
PLUGIN = "writing_cpu_lora"
"""Our entry in pyproject.toml's `vllm.general_plugins`."""


def grammar(count: int) -> list[LlamaRequest]:
    rows = [e for e in load_dataset(resolve_path(DEFAULT_EVAL_SET)) if e.type == "grammar"]
    return [LlamaRequest(text=rows[i % len(rows)].source, type="grammar") for i in range(count)]


def without_our_plugin() -> str:
    """`VLLM_PLUGINS` naming every vLLM plugin installed but ours: vLLM's own LoRA ops."""
    from importlib.metadata import entry_points

    return ",".join(
        plugin.name
        for plugin in entry_points(group="vllm.general_plugins")
        if plugin.name != PLUGIN
    )


def one_arm(arm: str, burst: int) -> dict[str, float]:
    """Run in a process of its own, with `VLLM_PLUGINS` set by the parent for its arm."""
    from modal_backend.serving.engines.vllm_engine import VLLMEngine, VLLMSettings

    adapter = verified_adapter()
    engine = VLLMEngine(
        ensure_smollm2(progress=False),
        model_id=SMOLLM2_MODEL_ID,
        adapters={TUNED: (adapter.path, adapter.version)},
        settings=VLLMSettings(max_model_len=4096, max_num_seqs=32, speculative="off"),
    )
    try:
        asyncio.run(direct(engine, TUNED, grammar(1)[0]))  # warm-up: the adapter, the cache
        many = asyncio.run(
            at_concurrency("burst", burst, grammar(burst), lambda r: direct(engine, TUNED, r))
        )
        result = {
            "burst_wall_s": many.wall_s,
            "burst_last_first_token_s": max(s.ttft_s for s in many.samples),
        }
        for model, label in ((TUNED, "adapter"), (None, "base")):
            batch = asyncio.run(
                at_concurrency("c8", 8, grammar(16), lambda r, m=model: direct(engine, m, r))
            )
            result[f"c8_{label}_tok_s"] = batch.tokens_per_s
        alone = asyncio.run(at_concurrency("c1", 1, grammar(8), lambda r: direct(engine, TUNED, r)))
        result["c1_adapter_tok_s"] = alone.tokens_per_s
        result["c1_adapter_ttft_p50_s"] = statistics.median(s.ttft_s for s in alone.samples)
        return result
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--burst", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # the child's own arm
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arm:
        args.result.write_text(json.dumps(one_arm(args.arm, args.burst)))
        return 0

    runs: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.repeat):
            for arm in ARMS:
                out = Path(folder) / f"{arm}-{round_}.json"
                command = [sys.executable, __file__, "--arm", arm, "--burst", str(args.burst)]
                env = dict(os.environ)
                if arm == "vllm":
                    env["VLLM_PLUGINS"] = without_our_plugin() or "none"
                subprocess.run([*command, "--result", str(out)], check=True, env=env)
                runs[arm].append(json.loads(out.read_text()))
                print(arm, json.dumps(runs[arm][-1]), flush=True)
    medians: dict[str, dict[str, Any]] = {
        arm: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for arm, results in runs.items()
    }
    print(f"\n{'':28} {'vllm':>10} {'grouped':>10} {'ratio':>8}")
    for key, before in medians["vllm"].items():
        after = medians["grouped"][key]
        print(f"{key:28} {before:10.2f} {after:10.2f} {after / before:7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
