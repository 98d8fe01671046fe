"""Admission under load, before and after, measured in one run.

    python bench/admission.py [--burst 64] [--rows 16] [--only burst|slow] [--out FILE]

"Before" admits as the server did until 2026-12-06: as many requests as the KV cache holds at the
full context (`max_model_len`), each waiting at most 10 s for a place, then a 503. "After" is
`Admission`: each request's real size, the engine's measured speed, the clients' patience. In the
burst, "queue" takes every request and lets vLLM queue what its batch cannot hold, as `vllm serve`
does. All run on the same engine, one after the other.

1. A burst, on SmolLM2-135M-Instruct + our adapter (vLLM, `max_num_seqs` 32, 4,096-token
   context): `--burst` streaming grammar requests sent at once, no client retries. Completed
   share (target >= 95 %) and how many of those our client would have waited for (a first byte
   within 30 s, all within 120 s), refusals (503 + Retry-After), other errors, and the completed
   requests' first-token and total latency P50/P95.
2. The slow case: Qwen2.5-Coder-1.5B-Instruct in fp32 (dequantized from the stand-in's GGUF) on
   the same vLLM settings, two model ids (the stock model and, where `make finetune-qwen` left
   one under artifacts/, its tuned adapter; otherwise an alias), scored by the eval harness at
   concurrency 8 with our client's default patience (30 s to a first byte, 120 s in all, two
   retries honouring Retry-After) over `--rows` rows of our eval set, re-run with `--resume`
   until every row is answered (at most 3 passes). Three ways: the old admission with the
   harness as it was (one ask per row and pass), the new admission with the same harness, and
   the new admission with the harness's pacing (`eval run --overload-tries`, the default). Counted:
   answers per pass, failures by kind, streams cut mid-way (a client that left after its first
   token: work done for nobody), wall time.
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
from eval.pacing import MAX_PACED_TRIES
from eval.runner import RunPlan, run
from modal_backend.serving.engines.base import Engine
from modal_backend.serving.local import serve_in_thread
from modal_backend.serving.local_bases import (
    QWEN_15B,
    SMOLLM2_MODEL_ID,
    ensure_hf_base,
    ensure_smollm2,
)
from modal_backend.serving.server import ServiceLimits, create_app
from modal_backend.serving.shipped_adapter import verified_adapter
from modal_backend.training.config import DEFAULT_EVAL_SET, resolve_path
from suggestions import LlamaRequest
from suggestions.config import Settings
from suggestions.prompts import build_messages, max_output_tokens

KEY = "bench-key"
TUNED = "writing-llama"
OLD_QUEUE_TIMEOUT_S = 10.0
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
    error: str = ""
    first_s: float | None = None
    """Seconds to the first streamed line with content (None: none came)."""


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
            first: float | None = None
            if response.status_code == 200:
                async for line in response.aiter_lines():
                    if first is None and line.startswith("data: {"):
                        first = time.perf_counter() - started
                    done = done or line.strip() == "data: [DONE]"
            else:
                await response.aread()
            return Outcome(
                response.status_code,
                response.headers.get("retry-after"),
                time.perf_counter() - started,
                done,
                response.json()["error"]["message"] if response.status_code != 200 else "",
                first,
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


def in_patience(outcome: Outcome) -> bool:
    """Finished as our client would have seen it: a first byte within its read timeout and
    the whole answer within its total timeout (`suggestions.config.Settings`' defaults)."""
    patience = Settings()
    return (
        outcome.done
        and outcome.first_s is not None
        and outcome.first_s <= patience.read_timeout_s
        and outcome.total_s <= patience.total_timeout_s
    )


def burst_line(label: str, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    done = [o.total_s for o in outcomes if o.done]
    firsts = [o.first_s for o in outcomes if o.done and o.first_s is not None]
    refused = [o for o in outcomes if o.status == 503]
    summary = {
        "label": label,
        "sent": len(outcomes),
        "completed": len(done),
        "completed_share": len(done) / len(outcomes),
        "completed_within_client_patience": sum(map(in_patience, outcomes)),
        "refused_503": len(refused),
        "refused_with_retry_after": sum(1 for o in refused if o.retry_after),
        "server_errors_5xx": sum(1 for o in outcomes if o.status >= 500 and o.status != 503),
        "other_failures": sum(1 for o in outcomes if o.status == 200 and not o.done)
        + sum(1 for o in outcomes if o.status == 0),
        "refusal_reasons": sorted({o.error for o in refused})[:5],
        "refused_after_s": [
            round(min(o.total_s for o in refused), 2),
            round(max(o.total_s for o in refused), 2),
        ]
        if refused
        else None,
        "total_p50_s": round(pct(done, 50), 2),
        "total_p95_s": round(pct(done, 95), 2),
        "first_token_p50_s": round(pct(firsts, 50), 2),
        "first_token_p95_s": round(pct(firsts, 95), 2),
    }
    print(
        f"{label:<8} completed {summary['completed']}/{summary['sent']} "
        f"({summary['completed_share']:.0%}; within our client's patience "
        f"{summary['completed_within_client_patience']}), 503 {summary['refused_503']} "
        f"(Retry-After on {summary['refused_with_retry_after']}), other 5xx "
        f"{summary['server_errors_5xx']}, other failures {summary['other_failures']}; "
        f"first token P50 {summary['first_token_p50_s']} s, P95 {summary['first_token_p95_s']} s; "
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


def harness(settings: Settings, rows: int, overload_tries: int, out: Path) -> dict[str, Any]:
    """The eval harness over `rows` rows and two model ids, re-run until every row is answered
    (at most 3 passes)."""
    cut = CutStreams()
    logging.getLogger("modal_backend.requests").addHandler(cut)
    passes: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for attempt in range(3):
            plan = RunPlan(
                dataset=resolve_path(DEFAULT_EVAL_SET),
                backends=("custom", "baseline"),
                out=out,
                concurrency=8,
                overload_tries=overload_tries,
                limit=rows,
                resume=attempt > 0,
            )
            asyncio.run(run(plan, settings=settings, progress=False))
            latest: dict[tuple[str, str], dict[str, Any]] = {}
            for line in (out / "predictions.jsonl").read_text().splitlines():
                row = json.loads(line)
                latest[(row["example_id"], row["backend"])] = row
            failed = Counter(r.get("error_kind") for r in latest.values() if not r.get("ok"))
            passes.append(
                {
                    "answered": len(latest) - sum(failed.values()),
                    "failed": dict(failed),
                    "after_s": round(time.perf_counter() - started, 1),
                }
            )
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


def old_rule(engine: Any, settings: Any) -> tuple[Engine, ServiceLimits]:
    """The engine and limits as the old admission saw them."""
    kv = engine.kv_token_capacity or 0
    places = max(1, min(settings.max_num_seqs, kv // settings.max_model_len))
    print(f"KV cache: {kv:,} tokens; the old rule's places: {places}", flush=True)
    limits = ServiceLimits(first_token_budget_s=OLD_QUEUE_TIMEOUT_S, finish_budget_s=math.inf)
    return FixedPlaces(engine, places), limits  # type: ignore[return-value]


def burst_part(count: int) -> list[dict[str, Any]]:
    from modal_backend.serving.engines.vllm_engine import VLLMEngine, VLLMSettings

    adapter = verified_adapter()
    settings = VLLMSettings(max_model_len=4096, max_num_seqs=32)
    engine = VLLMEngine(
        ensure_smollm2(progress=False),
        model_id=SMOLLM2_MODEL_ID,
        adapters={TUNED: (adapter.path, adapter.version)},
        settings=settings,
    )
    grammar = [e for e in load_dataset(resolve_path(DEFAULT_EVAL_SET)) if e.type == "grammar"]
    work = [
        LlamaRequest(text=grammar[i % len(grammar)].source, type="grammar") for i in range(count)
    ]
    lines = []
    try:
        with serve_in_thread(create_app(engine, api_key=KEY)) as url:
            burst(url, work[:4])  # warm-up: prefix cache, the adapter
        before, old_limits = old_rule(engine, settings)
        unbounded = ServiceLimits(first_token_budget_s=math.inf, finish_budget_s=math.inf)
        for label, served, limits in (
            ("before", before, old_limits),
            ("after", engine, ServiceLimits()),
            ("queue", FixedPlaces(engine, count), unbounded),  # as `vllm serve`: all queued
        ):
            with serve_in_thread(create_app(served, api_key=KEY, limits=limits)) as url:
                lines.append(burst_line(label, burst(url, work)))
    finally:
        engine.close()
    return lines


def slow_part(rows: int) -> dict[str, Any]:
    from modal_backend.serving.engines.vllm_engine import VLLMEngine, VLLMSettings

    tuned = sorted(Path("artifacts/qwen-weights/runs").glob("*/adapter/adapter_config.json"))
    adapters = {TUNED: (tuned[-1].parent, "qwen-run")} if tuned else {}
    settings = VLLMSettings(max_model_len=4096, max_num_seqs=32)
    engine = VLLMEngine(
        ensure_hf_base(QWEN_15B, progress=False),
        model_id="qwen2.5-coder-1.5b-instruct",
        adapters=adapters,
        settings=settings,
    )
    aliases = () if adapters else (TUNED,)
    client = Settings(
        modal_llama_url="http://unset",
        modal_api_key=KEY,
        modal_llama_model=TUNED,
        baseline_url="http://unset",
        baseline_api_key=KEY,
        baseline_model=engine.model_id,
    )
    results: dict[str, Any] = {"tuned_adapter": str(tuned[-1].parent) if tuned else None}
    before, old_limits = old_rule(engine, settings)
    cases = (
        ("before", before, old_limits, 1),
        ("after, harness as it was", engine, ServiceLimits(), 1),
        ("after, harness pacing", engine, ServiceLimits(), MAX_PACED_TRIES),
    )
    try:
        for label, served, limits, tries in cases:
            print(f"slow case, {label}:", flush=True)
            app = create_app(served, api_key=KEY, limits=limits, aliases=aliases)
            with serve_in_thread(app) as url, tempfile.TemporaryDirectory() as folder:
                pointed = client.model_copy(update={"modal_llama_url": url, "baseline_url": url})
                outcome = harness(pointed, rows, tries, Path(folder) / "run")
            results[label] = outcome
            print(
                f"{label:<28} finished: {outcome['finished']} after "
                f"{len(outcome['passes'])} pass(es), {outcome['streams_cut_mid_way']} streams cut "
                f"mid-way, {outcome['wall_s']} s",
                flush=True,
            )
    finally:
        engine.close()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=64, help="requests sent at once")
    parser.add_argument("--rows", type=int, default=16, help="eval rows in the slow case")
    parser.add_argument("--only", choices=("burst", "slow"), default=None, help="one part")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    if args.only != "slow":
        results["burst"] = burst_part(args.burst)
    if args.only != "burst":
        results["slow"] = slow_part(args.rows)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
