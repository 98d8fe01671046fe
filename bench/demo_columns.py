"""Benchmark: the demo's model columns on this machine, each alone and all streaming at once.

    python bench/demo_columns.py [--rows 6] [--local-model default|smollm2]

Starts the local model servers exactly as `make demo` does (`app.__main__._with_local_model`:
by default one llama.cpp server holding the Qwen stand-in and our run on it), then sends grammar
rows of our eval set through the app's compare core with the session cache off: each column
alone, then all model columns at once, on different rows (llama.cpp caches a passage it has
seen, which would flatter a second pass over the same one). Prints per column the median first
token, decode tokens/s and total time, and in how many rows every column's first token came
before any column finished (they streamed at the same time, not one after another).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import __main__ as launcher
from app.compare import Column, stream_columns
from app.config import AppConfig
from app.runtime import Runtime
from eval.data import load_dataset
from modal_backend.training.config import DEFAULT_EVAL_SET, resolve_path
from suggestions import LlamaRequest
from suggestions.cache import SessionCache

COLUMNS = ("custom", "standin", "baseline")


async def final_columns(service: Any, columns: tuple[str, ...], request: LlamaRequest) -> Any:
    final: tuple[Column, ...] = ()
    async for snapshot in stream_columns(service, columns, request):
        final = snapshot
    return final


async def measure(
    service: Any, rows: list[LlamaRequest], n: int
) -> tuple[dict[str, list[Column]], dict[str, list[Column]], int]:
    """Each column alone on rows n.., then all at once on rows ..n (one event loop: the
    backends keep their connections)."""
    alone: dict[str, list[Column]] = {name: [] for name in COLUMNS}
    together: dict[str, list[Column]] = {name: [] for name in COLUMNS}
    overlapped = 0
    await final_columns(service, COLUMNS, rows[0])  # load every server
    for row in rows[n:]:
        for name in COLUMNS:
            (column,) = await final_columns(service, (name,), row)
            alone[name].append(column)
    for row in rows[:n]:
        finals = await final_columns(service, COLUMNS, row)
        for column in finals:
            together[column.backend].append(column)
        firsts = [c.ttft_ms for c in finals if c.ttft_ms is not None]
        if len(firsts) == len(finals) and max(firsts) < min(c.elapsed_ms for c in finals):
            overlapped += 1
    return alone, together, overlapped


def summary(columns: list[Column]) -> str:
    firsts = [c.ttft_ms / 1000 for c in columns if c.ttft_ms is not None]
    speeds = [c.tokens_per_s for c in columns if c.tokens_per_s]
    totals = [c.elapsed_ms / 1000 for c in columns]
    return (
        f"{statistics.median(firsts):.2f} s / "
        f"{statistics.median(speeds):.1f} / "
        f"{statistics.median(totals):.2f} s"
        if firsts and speeds
        else "no answers"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--local-model", default="default")
    options = parser.parse_args()
    grammar = [row for row in load_dataset(resolve_path(DEFAULT_EVAL_SET)) if row.type == "grammar"]
    rows = [LlamaRequest(text=row.source, type=row.type) for row in grammar[: 2 * options.rows]]
    with ExitStack() as stack, tempfile.TemporaryDirectory() as state:
        os.environ["SUGGESTIONS_HOME"] = state
        config = launcher._with_local_model(
            AppConfig.from_env(columns=COLUMNS), options.local_model, stack
        )
        service = Runtime.build(config).service
        service.cache = SessionCache(ttl_s=0)  # every request reaches its model
        alone, together, overlapped = asyncio.run(measure(service, rows, options.rows))
        pair = options.local_model
        print(f"{options.rows} + {options.rows} grammar rows of our eval set, {pair} pair\n")
        print(
            "| column | label | alone: first token / tok/s / total | "
            "all at once: first token / tok/s / total |"
        )
        print("| --- | --- | --- | --- |")
        for name in COLUMNS:
            label = config.labels.get(name, name)
            print(f"| {name} | {label} | {summary(alone[name])} | {summary(together[name])} |")
        print(
            f"\nall columns had their first token before any finished: {overlapped} of "
            f"{options.rows} rows"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
