"""vLLM's environment on a CPU, set before the engine starts (its worker process reads it)."""

from __future__ import annotations

import os

KV_CACHE_GIB = "2"
FEW_CORES = 2
"""At most this many cores: the model's arithmetic gets all of them."""


def usable_cores() -> int:
    """The cores this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def prepare_cpu_environment() -> None:
    """The KV cache's size and, on a machine of two cores, both cores for the model.

    By default vLLM keeps one core for its scheduler process. On two cores that halves the
    arithmetic: with none kept, `bench/speculation.py --only off --concurrency 8` measured 1.20x
    the throughput for our adapter and 1.45x for the stock base (docs/benchmarks.md). A value
    the operator set is kept.
    """
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", KV_CACHE_GIB)
    if usable_cores() <= FEW_CORES:
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
