"""The probe's `server` and `train` sections: our server with the transformers engine under load
from a client in another process, and the training pipeline on this device (see
`gpu_probe.py`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

API_KEY = "gpu-probe-key"
PROBE = Path(__file__).resolve().with_name("gpu_probe.py")
"""The probe's command line, which also runs the load client (`--client`)."""

ANSWERS = {
    "grammar": "She went to school yesterday and bought some books.",
    "clarity": "To win, the team had to practise daily.",
    "style": "The sunset was beautiful.",
}
"""What the training section teaches the small model (one answer per check prompt)."""
EVAL_ROWS = [
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
]
"""Held-out rows the training data is checked against for leaks."""


def server_section(
    engine: Any,
    messages: list[dict[str, str]],
    *,
    work: Path,
    tokens: int,
    levels: list[tuple[int, int]],
    main_thread_requests: int,
    failures: list[str],
) -> dict[str, Any]:
    messages_file = work / "messages.json"
    messages_file.write_text(json.dumps(messages))
    client = Client(work, engine.model_id, messages_file, tokens)
    result: dict[str, Any] = {
        "tokens": tokens,
        "max_concurrency": engine.max_concurrency,
        "admission": "patient budgets (first token 3600 s, finish 7200 s): queueing is "
        "measured, not refused as production's defaults would",
    }
    with running_server(engine) as url:
        result["engine_threads"] = client.run(url, levels)
        if main_thread_requests:
            result["main_thread"] = main_thread_server(engine, url, client, main_thread_requests)
    for name in ("engine_threads", "main_thread"):
        for level in result.get(name, {}).get("levels", []):
            if level["errors"] or not level["ok"]:
                failures.append(f"server {name} c={level['concurrency']}: requests failed")
    return result


class Client:
    """The load, from another process, so the client's Python is not the server's."""

    def __init__(self, work: Path, model_id: str, messages: Path, tokens: int) -> None:
        self.work, self.model_id, self.messages, self.tokens = work, model_id, messages, tokens

    def run(self, url: str, levels: list[tuple[int, int]]) -> dict[str, Any]:
        out = self.work / "client.json"
        command = [sys.executable, str(PROBE), "--client", "--out", str(out), "--url", url]
        command += ["--model-id", self.model_id, "--messages", str(self.messages)]
        command += ["--tokens", str(self.tokens)]
        command += ["--levels", ",".join(f"{c}:{n}" for c, n in levels)]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        if completed.returncode != 0:
            raise RuntimeError(f"the load client failed:\n{completed.stderr[-4000:]}")
        loaded: dict[str, Any] = json.loads(out.read_text())
        return loaded


def main_thread_server(engine: Any, url: str, client: Client, requests: int) -> dict[str, Any]:
    """Concurrency 1 with generation in this process's main thread while the server runs in
    its own: what the server gets where no other thread generates at full speed."""
    import torch

    from modal_backend.serving.engines.base import GenerationThreads
    from modal_backend.serving.engines.transformers_engine import thread_setup

    own, here = engine.threads, GenerationThreads(0, setup=thread_setup(engine.model))
    engine.threads = here
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def drive() -> None:
        try:
            outcome.update(client.run(url, [(1, requests)]))
        except Exception as exc:
            outcome["error"] = repr(exc)
        finally:
            done.set()

    grad = torch.is_grad_enabled()  # the engine's thread set-up turns it off in this thread
    driver = threading.Thread(target=drive, name="probe-client", daemon=True)
    driver.start()
    try:
        here.work_here(done)
    finally:
        engine.threads = own
        here.close()
        driver.join()
        torch.set_grad_enabled(grad)
    if "error" in outcome:
        raise RuntimeError(outcome["error"])
    return outcome


@contextlib.contextmanager
def running_server(engine: Any) -> Iterator[str]:
    from dataclasses import fields

    from modal_backend.serving.local import serve_in_thread
    from modal_backend.serving.server import ServiceLimits, create_app

    patient = {"first_token_budget_s": 3600.0, "finish_budget_s": 7200.0}  # measure, not refuse
    names = {f.name for f in fields(ServiceLimits)}
    limits = ServiceLimits(**{k: v for k, v in patient.items() if k in names})  # type: ignore[arg-type]
    app = create_app(engine, api_key=API_KEY, limits=limits)
    with serve_in_thread(app) as url:
        yield url


def client_main(options: argparse.Namespace) -> int:
    """The load client (its own process): for each CONCURRENCY:REQUESTS, that many streamed
    requests with at most CONCURRENCY in flight; first-token and total times."""
    levels = [tuple(int(x) for x in pair.split(":")) for pair in options.levels.split(",")]
    messages = json.loads(Path(options.messages).read_text())
    result = {
        "levels": [
            asyncio.run(_load(options.url, options.model_id, messages, options.tokens, *level))
            for level in levels
        ]
    }
    Path(options.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


async def _load(
    url: str, model: str, messages: Any, tokens: int, concurrency: int, requests: int
) -> dict[str, Any]:
    import httpx

    body = {
        "model": model,
        "messages": messages,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {API_KEY}"}
    gate = asyncio.Semaphore(concurrency)
    timeout = httpx.Timeout(3600, connect=30)
    limits = httpx.Limits(max_connections=concurrency + 4)

    async def one(client: httpx.AsyncClient) -> dict[str, Any]:
        async with gate:
            started = time.perf_counter()
            first = None
            usage: dict[str, Any] = {}
            status = 0
            try:
                async with client.stream(
                    "POST", f"{url}/v1/chat/completions", json=body, headers=headers
                ) as response:
                    status = response.status_code
                    async for line in response.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line.removeprefix("data: "))
                        if "error" in chunk:
                            status = 599
                        choices = chunk.get("choices") or []
                        if first is None and choices and choices[0]["delta"].get("content"):
                            first = time.perf_counter() - started
                        if chunk.get("usage"):
                            usage = chunk["usage"]
            except httpx.HTTPError as exc:
                return {"status": 0, "error": repr(exc)}
            return {
                "status": status,
                "first_token_s": first,
                "total_s": time.perf_counter() - started,
                "completion_tokens": usage.get("completion_tokens"),
            }

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        results = await asyncio.gather(*(one(client) for _ in range(requests)))
    wall = time.perf_counter() - started
    ok = [r for r in results if r["status"] == 200 and r["first_token_s"] is not None]
    firsts = [r["first_token_s"] for r in ok]
    totals = [r["total_s"] for r in ok]
    completion = [r["completion_tokens"] or 0 for r in ok]
    return {
        "concurrency": concurrency,
        "requests": requests,
        "ok": len(ok),
        "errors": [r for r in results if r not in ok][:5],
        "first_token_s": percentiles(firsts),
        "total_s": percentiles(totals),
        "completion_tokens_mean": round(statistics.fmean(completion), 1) if completion else None,
        "per_request_tok_s_p50": percentiles(
            [c / t for c, t in zip(completion, totals, strict=True) if t]
        ).get("p50"),
        "aggregate_tok_s": round(sum(completion) / wall, 2) if wall else None,
        "wall_s": round(wall, 2),
    }


def percentiles(values: list[float]) -> dict[str, float]:
    """P50 and P95 by the nearest rank (no interpolation between two requests)."""
    if not values:
        return {}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered), max(1, math.ceil(len(ordered) * q))) - 1], 4)

    return {"p50": rank(0.5), "p95": rank(0.95), "max": round(ordered[-1], 4), "n": len(values)}


# -- training on this device --------------------------------------------------------------------


def train_section(out: Path, device: str, steps: int | None, failures: list[str]) -> dict[str, Any]:
    """The training pipeline (PEFT backend, 16-bit base) on a small Llama, then its merged
    weights served by the engine."""
    import torch

    from modal_backend.serving.testing import build_tiny_llama
    from modal_backend.training.checks import CHECK_PROMPTS, ChecksFailed
    from modal_backend.training.config import TrainConfig
    from modal_backend.training.pipeline import train

    on_gpu = device == "cuda"
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    clock = time.perf_counter()
    if on_gpu:  # the recipe scripts/gpu_check.py proved on a GPU
        base = build_tiny_llama(
            out / "base", hidden_size=256, intermediate_size=1024, trainable_scale=4
        )
        recipe: dict[str, Any] = dict(
            max_steps=steps or 80, per_device_train_batch_size=3, learning_rate=5e-3
        )
    else:  # the recipe of tests/training/test_cpu_run.py (about 5 s on one core)
        base = build_tiny_llama(out / "base", trainable_scale=30)
        recipe = dict(max_steps=steps or 100, per_device_train_batch_size=4, learning_rate=1e-2)
    build_s = time.perf_counter() - clock
    rows = [
        {"id": f"check-{r.type}", "type": r.type, "source": r.text, "references": [ANSWERS[r.type]]}
        for r in CHECK_PROMPTS
    ]
    train_file, eval_file = out / "train.jsonl", out / "eval.jsonl"
    train_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    eval_file.write_text("".join(json.dumps(row) + "\n" for row in EVAL_ROWS))
    config = TrainConfig(
        base_model=str(base),
        datasets=(str(train_file),),
        eval_datasets=(str(eval_file),),  # the leakage check's; not scored (run_eval below)
        code_version="gpu-probe",
        trainer_backend="peft",
        load_in_4bit=False,
        gradient_accumulation_steps=1,
        lr_scheduler_type="constant",
        warmup_ratio=0.0,
        eval_fraction=0.0,
        save_steps=max(1, recipe["max_steps"] // 2),
        logging_steps=10,
        max_seq_length=512,
        check_max_new_tokens=32,
        run_eval=False,  # the harness's metrics need spaCy, which is not on the device
        **recipe,
    )
    clock = time.perf_counter()
    failure = None
    try:
        manifest = train(config, out / "weights")
    except ChecksFailed as exc:
        failure = str(exc)
        manifests = sorted((out / "weights" / "runs").glob("*/manifest.json"))
        manifest = json.loads(manifests[-1].read_text()) if manifests else {}
    pipeline_s = time.perf_counter() - clock
    merged = out / "weights" / "runs" / manifest.get("run_id", "?") / "merged"
    generated, serve_s = _served_answer(merged, CHECK_PROMPTS[0]) if merged.is_dir() else ("", 0)
    checks = manifest.get("checks", {})
    result = {
        "device": manifest.get("device"),
        "trainer_backend": manifest.get("trainer_backend"),
        "load_in_4bit": manifest.get("load_in_4bit"),
        "status": manifest.get("status"),
        "failure": failure,
        "optimizer": (manifest.get("training") or {}).get("optimizer"),
        "optimizer_note": (manifest.get("training") or {}).get("optimizer_note"),
        "precision": (manifest.get("training") or {}).get("precision"),
        "losses": {k: v for k, v in manifest.get("losses", {}).items() if k != "history"},
        "checks": {
            key: checks.get(key)
            for key in ("passed", "merged_matches_adapter", "stops_at_end_of_turn")
        },
        "pipeline_timings": manifest.get("timings"),
        "build_model_s": round(build_s, 2),
        "pipeline_s": round(pipeline_s, 2),
        "serve_merged_s": round(serve_s, 2),
        "generated": generated,
        "expected": ANSWERS["grammar"],
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if on_gpu else None,
    }
    if manifest.get("trainer_backend") != "peft" or manifest.get("status") != "complete":
        failures.append(f"train: backend {result['trainer_backend']}, status {result['status']}")
    if failure is not None or not checks.get("passed"):
        failures.append(f"train: the checks failed: {failure}")
    if generated != ANSWERS["grammar"]:
        failures.append(f"train: the served answer was {generated!r}")
    return result


def _served_answer(merged: Path, request: Any) -> tuple[str, float]:
    from modal_backend.serving.engines.base import Delta, SamplingParams
    from modal_backend.serving.engines.transformers_engine import TransformersEngine
    from suggestions.prompts import build_messages

    clock = time.perf_counter()
    engine = TransformersEngine.load(merged, model_id="probe-trained")

    async def collect() -> str:
        pieces = []
        stream = engine.stream(build_messages(request), SamplingParams(max_tokens=48))
        async for event in stream:
            if isinstance(event, Delta):
                pieces.append(event.text)
        return "".join(pieces)

    try:
        text = asyncio.run(collect())
    finally:
        engine.close()
    return text.strip(), time.perf_counter() - clock
