"""`python -m eval run`: every example through every backend, rows written as they complete.

The session cache is bypassed so latencies are real. Each finished (example, backend) pair is
appended to `predictions.jsonl` at once, so a killed run resumes with `--resume` without redoing
anything that finished. The file is append-only: `--resume` also asks again for pairs whose
latest answer failed transiently (`TRANSIENT_ERROR_KINDS`: a busy or unreachable service), and
the retry is a new line, so a kill mid-resume loses nothing; readers take the latest line of each
pair (`run_folder.read_predictions`). Scoring (`scoring.score_run`) then reads that file and
writes the metrics, the summary and the reports. The folder's files are `eval.run_folder`'s.

A slot is only run against the model it names: `custom` without `MODAL_LLAMA_URL` (or `baseline`
without `BASELINE_URL`) is refused here, where `suggestions` alone would answer with the mock and
the run would score the mock under the model's name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from suggestions import LlamaRequest, Settings, SuggestionService
from suggestions.backends import Backend, MockBackend, build_backends
from suggestions.backends.base import BackendEvent, StreamEnd
from suggestions.config import MODEL_SLOTS
from suggestions.errors import BackendError, ConfigurationError

from .data import EvalExample, dataset_sha256, load_dataset
from .pacing import MAX_PACED_TRIES, Pacer, overloaded, pause_s
from .run_folder import (
    PredictionWriter,
    code_version,
    drop_torn_line,
    has_run,
    read_config,
    read_predictions,
    write_config,
)

__all__ = [
    "MODEL_URLS",
    "TRANSIENT_ERROR_KINDS",
    "RunError",
    "RunPlan",
    "build_eval_backends",
    "run",
]

TRANSIENT_ERROR_KINDS = frozenset({"unavailable", "rate_limited", "timeout", "interrupted"})
"""Failures of the moment (suggestions.errors kinds: 5xx or unreachable, 429, no answer in
time, a stream cut off), which `--resume` asks again. The rest (`rejected`, `truncated`, `auth`,
`bad_response`, `internal`, `invalid_request`) say something about the input, the model or the
setup, and asking again would give the same answer."""
MODEL_URLS = {name: (Settings.variable(slot.url), slot.url) for name, slot in MODEL_SLOTS.items()}
"""The variable (and its `Settings` field) that points each model slot at its model; the mock
needs none."""


class RunError(RuntimeError):
    """A run that cannot start or resume; the message says what to do."""


@dataclass(frozen=True)
class RunPlan:
    dataset: Path
    backends: tuple[str, ...]
    out: Path
    concurrency: int = 4
    overload_tries: int = MAX_PACED_TRIES
    """Asks per pair while the server is overloaded (503/429, timeouts), each after a pause."""
    limit: int | None = None
    resume: bool = False
    retry_failed: bool = True
    """With `resume`: ask again for pairs whose latest answer failed transiently."""


class _AttemptsRecorder:
    """Passes a backend's events through, remembering how many attempts each request took
    (the response itself does not carry retries)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.model_id = inner.model_id
        self.label = inner.label
        self.attempts: dict[int, int] = {}

    async def stream(self, request: LlamaRequest) -> AsyncIterator[BackendEvent]:
        async for event in self.inner.stream(request):
            if isinstance(event, StreamEnd):
                self.attempts[id(request)] = event.attempts
            yield event

    async def aclose(self) -> None:
        closer = getattr(self.inner, "aclose", None)
        if closer is not None:
            await closer()


async def run(
    plan: RunPlan,
    *,
    settings: Settings | None = None,
    backends: dict[str, Backend] | None = None,
    progress: bool = True,
) -> Path:
    """Fill `plan.out` with predictions for every pending pair; returns the folder."""
    examples = load_dataset(plan.dataset)[: plan.limit]
    chosen = backends or build_eval_backends(plan.backends, settings or Settings())
    recorders = {name: _AttemptsRecorder(backend) for name, backend in chosen.items()}
    config = _config(plan, examples, recorders)
    latest = _prepare_folder(plan, config)
    pending = [
        (index, example, name)
        for index, example in enumerate(examples)
        for name in plan.backends
        if _wanted(latest.get((example.id, name)), plan.retry_failed)
    ]
    service = SuggestionService(recorders, usage=None)  # type: ignore[arg-type]
    writer = PredictionWriter(plan.out)
    pacer = Pacer(plan.concurrency)
    retrying = sum((example.id, name) in latest for _, example, name in pending)
    bar = _progress(len(pending), len(latest) - retrying, retrying, progress)

    async def one(index: int, example: EvalExample, name: str) -> None:
        for tries in range(1, plan.overload_tries + 1):
            async with pacer.slot():
                row = await _predict(service, recorders[name], example, name)
            if not overloaded(row) or tries == plan.overload_tries:
                break
            await pacer.overloaded()  # fewer at once, then this pair again after a pause
            await asyncio.sleep(pause_s(tries))
        if row["ok"]:
            await pacer.succeeded()
        row["paced_tries"] = tries
        before = latest.get((example.id, name))
        attempt = 1 + (int(before["attempts"]) if before is not None else 0)
        writer.write({"index": index, **row, "attempt": attempt})
        bar(1)

    try:
        await asyncio.gather(*(one(index, example, name) for index, example, name in pending))
    finally:
        writer.close()
        bar(0, close=True)
        await service.aclose()
    return plan.out


def build_eval_backends(names: tuple[str, ...], settings: Settings) -> dict[str, Backend]:
    """The slots by name, refusing any whose model is not configured: outside production the
    `suggestions` package answers an unconfigured slot with the mock, which an eval would then
    score under the model's name. The mock runs only when asked for as `mock`."""
    for name in names:
        variable, setting = MODEL_URLS.get(name, ("", ""))
        if setting and getattr(settings, setting) is None:
            raise ConfigurationError(_unconfigured(name, variable))
    chosen = build_backends(names, settings)
    for name, backend in chosen.items():  # whatever `suggestions` falls back to in future
        if name != "mock" and isinstance(backend, MockBackend):
            variable = MODEL_URLS.get(name, ("its model's URL", ""))[0]
            raise ConfigurationError(_unconfigured(name, variable))
    return chosen


def _unconfigured(name: str, variable: str) -> str:
    return (
        f"the {name!r} backend needs {variable}, which is not set: the run would not reach "
        f"that model (outside production the mock answers in its place, and would be scored "
        f"as {name!r}). Set {variable} to the model service's URL, or ask for the mock by "
        "name (--backends mock)."
    )


def _wanted(latest: dict[str, Any] | None, retry_failed: bool) -> bool:
    """Whether a pair still needs asking: never asked, or (when retrying) its latest answer
    failed transiently."""
    if latest is None:
        return True
    return (
        retry_failed and not latest.get("ok") and latest.get("error_kind") in TRANSIENT_ERROR_KINDS
    )


async def _predict(
    service: SuggestionService, recorder: _AttemptsRecorder, example: EvalExample, name: str
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "example_id": example.id,
        "backend": name,
        "type": example.type,
        "source": example.source,
        "references": list(example.references),
        "model_id": recorder.model_id,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        request = LlamaRequest(text=example.source, type=example.type)
    except ValidationError as exc:
        return row | {"ok": False, "error_kind": "invalid_request", "error": str(exc)[:300]}
    started = time.perf_counter()
    try:
        response = await service.suggest(request, backend=name, use_cache=False)
    except BackendError as exc:
        recorder.attempts.pop(id(request), None)  # a stream that ended but was refused
        return row | {
            "ok": False,
            "error_kind": exc.kind,
            "error": exc.user_message,
            "total_ms": round((time.perf_counter() - started) * 1000, 1),
            "retries": max(exc.attempts - 1, 0),
            **({"status": exc.status_code} if exc.status_code is not None else {}),
        }
    attempts = recorder.attempts.pop(id(request), 1)
    ttft = response.time_to_first_token_ms
    decode_s = (response.latency_ms - (ttft or 0.0)) / 1000
    completion = response.usage.completion_tokens
    return row | {
        "ok": True,
        "prediction": response.revised_text,
        "model_id": response.model_id,
        "ttft_ms": None if ttft is None else round(ttft, 1),
        "total_ms": round(response.latency_ms, 1),
        "prompt_tokens": response.usage.prompt_tokens,
        "completion_tokens": completion,
        "tokens_estimated": response.usage.estimated,
        "tokens_per_s": round(completion / decode_s, 2) if decode_s > 0 else None,
        "retries": attempts - 1,
        "suggestions": len(response.suggestions),
    }


def _prepare_folder(plan: RunPlan, config: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The latest row of each pair already in the folder (none for a new run)."""
    if has_run(plan.out):
        if not plan.resume:
            raise RunError(
                f"{plan.out} already holds a run: pass --resume to finish it, or choose "
                "another --out"
            )
        previous = read_config(plan.out)
        for key in ("dataset_sha256", "backends_requested", "limit", "model_ids"):
            if previous.get(key) != config.get(key):
                raise RunError(
                    f"cannot resume {plan.out}: its {key} differs from this run's "
                    f"({previous.get(key)!r} vs {config.get(key)!r})"
                )
        drop_torn_line(plan.out)
        return {(row["example_id"], row["backend"]): row for row in read_predictions(plan.out)}
    write_config(plan.out, config)
    return {}


def _config(
    plan: RunPlan, examples: list[EvalExample], backends: dict[str, _AttemptsRecorder]
) -> dict[str, Any]:
    return {
        "dataset": str(plan.dataset),
        "dataset_sha256": dataset_sha256(plan.dataset),
        "examples": len(examples),
        "limit": plan.limit,
        "backends_requested": list(plan.backends),
        "backends": {
            name: {"model_id": b.model_id, "label": b.label} for name, b in backends.items()
        },
        "model_ids": {name: b.model_id for name, b in backends.items()},
        "pretokenized": Path(plan.dataset).suffix == ".src" or Path(plan.dataset).is_dir(),
        "concurrency": plan.concurrency,
        "code_version": code_version(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _progress(total: int, already: int, retrying: int, enabled: bool) -> Callable[..., None]:
    from tqdm import tqdm

    again = f", {retrying} failed transiently, asked again" if retrying else ""
    bar = tqdm(
        total=total, desc=f"eval ({already} done before{again})", unit="ex", disable=not enabled
    )

    def advance(n: int, *, close: bool = False) -> None:
        if close:
            bar.close()
        else:
            bar.update(n)

    return advance
