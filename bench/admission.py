"""Admission under load, before and after, measured in one run on one vLLM engine.

    python bench/admission.py [--burst 64] [--rows 60] [--slowdown 13]

SmolLM2-135M-Instruct with our fine-tuned adapter on vLLM (`max_num_seqs` 32, 4,096-token
context), one engine behind two servers: "before" admits as the server did until now (as many
requests as the KV cache holds at the full context, each waiting at most 10 s for a place, then a
503), "after" uses `Admission` (each request's real size, the engine's measured speed, the
clients' patience).

1. A burst: `--burst` streaming grammar requests sent at once, no client retries. Completed
   share (target >= 95 %), refusals (503 + Retry-After), errors, and the completed requests'
   total latency P50/P95.
2. The slow case, scaled: a model that is `--slowdown` times slower (Qwen2.5-Coder-1.5B in fp32
   has 13x SmolLM2's parameters) is stood in for by SmolLM2 with every patience divided by that
   factor: our client's timeouts (30 s to a first byte, 120 s in all) and the server's budgets.
   The eval harness (`eval.runner.run`, concurrency 8, two model ids, retrying as it does) scores
   `--rows` rows of our eval set, re-run with `--resume` until every row is answered (at most 4
   passes). Counted: answers, failures by kind, and streams cut mid-way (a client that left
   after its first token: work the server did for nobody).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from eval.data import load_dataset
from eval.runner import RunPlan, run
from modal_backend.serving.engines.base import Engine
from modal_backend.serving.local import serve_in_thread
from modal_backend.serving.local_bases import SMOLLM2_MODEL_ID, ensure_smollm2
from modal_backend.serving.server import ServiceLimits, create_app
from modal_backend.serving.shipped_adapter import verified_adapter
from modal_backend.training.config import DEFAULT_EVAL_SET, resolve_path
from suggestions import LlamaRequest
from suggestions.config import Settings
from suggestions.prompts import build_messages, max_output_tokens

KEY = "bench-key"
TUNED = "writing-llama"
TUNED_TWIN = "writing-llama-b"
"""The same adapter under a second id: two model ids, as an eval of two runs asks for."""
OLD_QUEUE_TIMEOUT_S = 10.0
CLIENT_READ_TIMEOUT_S = 30.0
CLIENT_TOTAL_TIMEOUT_S = 120.0


class FixedPlaces:
    """The engine as the old admission saw it: a fixed number of places, no KV accounting."""

    def __init__(self, engine: Any, places: int) -> None:
        self._engine = engine
        self.max_concurrency = places
        self.kv_token_capacity = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


@dataclass(frozen=True)
class Outcome:
    status: int
    retry_after: str | None
    total_s: float
    done: bool


async def one_stream(client: httpx.AsyncClient, url: str, request: LlamaRequest) -> Outcome:
    """One streaming request, no retries: did it finish, and how long did it take."""
    body = {
        "model": TUNED,
        "messages": build_messages(request),
        "max_tokens": max_output_tokens(request),
        "stream": True,
    }
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        async with client.stream(
            "POST", f"{url}/v1/chat/completions", json=body, headers=headers
        ) as response:
            done = False
            if response.status_code == 200:
                async for line in response.aiter_lines():
                    done = done or line.strip() == "data: [DONE]"
            else:
                await response.aread()
            return Outcome(
                response.status_code,
                response.headers.get("retry-after"),
                time.perf_counter() - started,
                done,
            )
    except httpx.HTTPError:
        return Outcome(0, None, time.perf_counter() - started, False)


def burst(url: str, work: Sequence[LlamaRequest]) -> list[Outcome]:
    async def everyone() -> list[Outcome]:
        limits = httpx.Limits(max_connections=len(work) + 8)
        timeout = httpx.Timeout(CLIENT_TOTAL_TIMEOUT_S, connect=5.0)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
            return list(await asyncio.gather(*(one_stream(client, url, r) for r in work)))

    return asyncio.run(everyone())


def pct(values: Sequence[float], q: int) -> float:
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(sorted(values), n=100, method="inclusive")[q - 1]


def burst_line(label: str, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    done = [o.total_s for o in outcomes if o.done]
    refused = [o for o in outcomes if o.status == 503]
    summary = {
        "label": label,
        "sent": len(outcomes),
        "completed": len(done),
        "completed_share": len(done) / len(outcomes),
        "refused_503": len(refused),
        "refused_with_retry_after": sum(1 for o in refused if o.retry_after),
        "server_errors_5xx": sum(1 for o in outcomes if o.status >= 500 and o.status != 503),
        "other_failures": sum(1 for o in outcomes if o.status == 200 and not o.done)
        + sum(1 for o in outcomes if o.status == 0),
        "total_p50_s": round(pct(done, 50), 2),
        "total_p95_s": round(pct(done, 95), 2),
    }
    print(
        f"{label:<8} completed {summary['completed']}/{summary['sent']} "
        f"({summary['completed_share']:.0%}), 503 {summary['refused_503']} "
        f"(Retry-After on {summary['refused_with_retry_after']}), other 5xx "
        f"{summary['server_errors_5xx']}, other failures {summary['other_failures']}; "
        f"total P50 {summary['total_p50_s']} s, P95 {summary['total_p95_s']} s",
        flush=True,
    )
    return summary


class CutStreams(logging.Handler):
    """Counts the server's request lines for streams whose client left after a first token."""

    def __init__(self) -> None:
        super().__init__()
        self.cut = 0
        self.answered = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = json.loads(record.getMessage())
        except ValueError:
            return
        if line.get("path") != "/v1/chat/completions":
            return
        if line.get("client_disconnected") and line.get("ttft_ms") is not None:
            self.cut += 1
        if line.get("finish_reason"):
            self.answered += 1


def harness(url: str, rows: int, slowdown: float, out: Path) -> dict[str, Any]:
    """The eval harness against `url` with its patience divided by `slowdown`, re-run until
    every row is answered."""
    settings = Settings(
        modal_llama_url=url,
        modal_api_key=KEY,
        modal_llama_model=TUNED,
        baseline_url=url,
        baseline_api_key=KEY,
        baseline_model=TUNED_TWIN,
        read_timeout_s=CLIENT_READ_TIMEOUT_S / slowdown,
        total_timeout_s=CLIENT_TOTAL_TIMEOUT_S / slowdown,
    )
    cut = CutStreams()
    logging.getLogger("modal_backend.requests").addHandler(cut)
    passes: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for attempt in range(4):
            plan = RunPlan(
                dataset=resolve_path(DEFAULT_EVAL_SET),
                backends=("custom", "baseline"),
                out=out,
                concurrency=8,
                limit=rows,
                resume=attempt > 0,
            )
            asyncio.run(run(plan, settings=settings, progress=False))
            latest: dict[tuple[str, str], dict[str, Any]] = {}
            for line in (out / "predictions.jsonl").read_text().splitlines():
                row = json.loads(line)
                latest[(row["example_id"], row["backend"])] = row
            failed = Counter(r.get("error_kind") for r in latest.values() if not r.get("ok"))
            passes.append({"answered": len(latest) - sum(failed.values()), "failed": failed})
            print(f"  pass {attempt + 1}: {passes[-1]}", flush=True)
            if not failed:
                break
    finally:
        logging.getLogger("modal_backend.requests").removeHandler(cut)
    return {
        "pairs": rows * 2,
        "passes": passes,
        "finished": not passes[-1]["failed"],
        "streams_cut_mid_way": cut.cut,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=64, help="requests sent at once")
    parser.add_argument("--rows", type=int, default=60, help="eval rows in the slow case")
    parser.add_argument("--slowdown", type=float, default=13.0, help="the slow model's factor")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    from modal_backend.serving.engines.vllm_engine import VLLMEngine, VLLMSettings

    adapter = verified_adapter()
    settings = VLLMSettings(max_model_len=4096, max_num_seqs=32)
    engine = VLLMEngine(
        ensure_smollm2(progress=False),
        model_id=SMOLLM2_MODEL_ID,
        adapters={
            TUNED: (adapter.path, adapter.version),
            TUNED_TWIN: (adapter.path, adapter.version),
        },
        settings=settings,
    )
    kv = engine.kv_token_capacity or 0
    old_places = max(1, min(settings.max_num_seqs, kv // settings.max_model_len))
    print(
        f"KV cache: {kv:,} tokens; the old rule's places: {old_places}; "
        f"max_num_seqs: {settings.max_num_seqs}",
        flush=True,
    )
    before: Engine = FixedPlaces(engine, old_places)  # type: ignore[assignment]
    old_limits = ServiceLimits(first_token_budget_s=OLD_QUEUE_TIMEOUT_S, finish_budget_s=math.inf)
    grammar = [e for e in load_dataset(resolve_path(DEFAULT_EVAL_SET)) if e.type == "grammar"]
    work = [
        LlamaRequest(text=grammar[i % len(grammar)].source, type="grammar")
        for i in range(args.burst)
    ]
    results: dict[str, Any] = {"kv_token_capacity": kv, "old_places": old_places}
    try:
        with serve_in_thread(create_app(engine, api_key=KEY)) as url:
            burst(url, work[:4])  # warm-up: prefix cache, adapters, the speed estimate
        results["burst"] = []
        for label, served, limits in (
            ("before", before, old_limits),
            ("after", engine, ServiceLimits()),
        ):
            with serve_in_thread(create_app(served, api_key=KEY, limits=limits)) as url:
                results["burst"].append(burst_line(label, burst(url, work)))
        scaled = ServiceLimits(
            first_token_budget_s=ServiceLimits.first_token_budget_s / args.slowdown,
            finish_budget_s=ServiceLimits.finish_budget_s / args.slowdown,
        )
        old_scaled = ServiceLimits(
            first_token_budget_s=OLD_QUEUE_TIMEOUT_S / args.slowdown, finish_budget_s=math.inf
        )
        results["slow"] = {}
        for label, served, limits in (("before", before, old_scaled), ("after", engine, scaled)):
            print(f"slow case, {label}:", flush=True)
            with (
                serve_in_thread(create_app(served, api_key=KEY, limits=limits)) as url,
                tempfile.TemporaryDirectory() as folder,
            ):
                outcome = harness(url, args.rows, args.slowdown, Path(folder) / "run")
            results["slow"][label] = outcome
            print(
                f"{label:<8} finished: {outcome['finished']} after {len(outcome['passes'])} "
                f"pass(es), {outcome['streams_cut_mid_way']} streams cut mid-way, "
                f"{outcome['wall_s']} s",
                flush=True,
            )
    finally:
        engine.close()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
