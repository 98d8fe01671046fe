"""Score a run with the eval harness, through the same path production takes.

The run's merged weights are loaded by the transformers engine and served by our model service
on loopback; the harness's runner sends the eval set through `ChatBackend` as the `custom`
backend, and its scoring writes the usual run folder (`runs/<run_id>/eval/`: predictions,
metrics, `summary.json`, reports). The promotion gate then reads that folder with the harness's
own gate logic, and the manifest keeps the headline numbers.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eval.data import dataset_sha256
from eval.run_folder import CONFIG

EVAL_DIR = "eval"
BACKEND = "custom"
"""The eval slot our fine-tuned model fills everywhere, so gate files apply unchanged."""


class EvalFolderMismatch(ValueError):
    """The run's eval folder holds a score of another eval set or limit; the message says how
    to replace it."""


def prepare_eval_folder(
    run_dir: Path, *, dataset: Path, limit: int | None, fresh: bool = False
) -> Path | None:
    """Make `run_dir/eval` ready for a score of `dataset` with `limit`.

    A folder of the same settings is left to be resumed. One of other settings raises
    EvalFolderMismatch, or with `fresh` is moved aside (`eval.replaced-<UTC time>`) and its
    new place returned: a score is never silently mixed with, or replaced by, another.
    """
    folder = run_dir / EVAL_DIR
    config_path = folder / CONFIG
    if not folder.exists():
        return None
    previous: dict[str, Any] = {}
    if config_path.is_file():
        try:
            previous = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError):
            previous = {}
    same = (
        config_path.is_file()
        and previous.get("dataset_sha256") == dataset_sha256(dataset)
        and previous.get("limit") == limit
    )
    if same and not fresh:
        return None
    if not fresh:
        raise EvalFolderMismatch(
            f"{folder} holds a score of {previous.get('dataset', 'another eval set')} (limit "
            f"{previous.get('limit')}), not of {dataset} (limit {limit}); pass --fresh to move "
            "it aside and score again"
        )
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    aside = run_dir / f"{EVAL_DIR}.replaced-{stamp}"
    folder.rename(aside)
    return aside


def evaluate_run(
    run_dir: Path,
    *,
    dataset: Path,
    model_id: str,
    version: str,
    limit: int | None = None,
    reports: bool = True,
    fresh: bool = False,
) -> dict[str, Any]:
    """Serve `run_dir/merged`, run and score the eval set; returns the manifest's `eval` entry.

    A folder left by an interrupted evaluation of the same settings is resumed; one of other
    settings raises EvalFolderMismatch unless `fresh` (see `prepare_eval_folder`).
    """
    from modal_backend.serving.engines.transformers_engine import TransformersEngine
    from modal_backend.serving.local import ServedModel, serve_in_thread
    from modal_backend.serving.server import create_app

    replaced = prepare_eval_folder(run_dir, dataset=dataset, limit=limit, fresh=fresh)
    engine = TransformersEngine.load(run_dir / "merged", model_id=model_id, version=version)
    key = secrets.token_urlsafe(24)  # this process's own server: a fresh key, never shown
    try:
        with serve_in_thread(create_app(engine, api_key=key)) as url:
            served = ServedModel(url=url, model=model_id, api_key=key)
            label = f"run {version} (transformers engine)"
            out = asyncio.run(_run(served, label, run_dir / EVAL_DIR, dataset, limit, 1))
    finally:
        engine.close()
    return _entry(out, dataset, limit, replaced, reports)


def evaluation_from_folder(
    run_dir: Path, scored: Path, *, dataset: Path, limit: int | None = None
) -> dict[str, Any]:
    """The run's eval folder and manifest entry from a folder that already scored the run on
    `dataset` (the side-by-side comparison's): the same answers, not asked for twice."""
    import shutil

    out = run_dir / EVAL_DIR
    partial = run_dir / f".{EVAL_DIR}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(scored, partial)
    shutil.rmtree(out, ignore_errors=True)
    partial.replace(out)
    return _entry(out, dataset, limit, None, True)


def _entry(
    out: Path, dataset: Path, limit: int | None, replaced: Path | None, reports: bool
) -> dict[str, Any]:
    from eval.scoring import score_run

    summary = score_run(out, reports=reports)
    backend = dict(summary["backends"][BACKEND])
    backend.pop("errant_by_type", None)  # per-type tables stay in the eval folder
    entry = {
        "folder": EVAL_DIR,
        "dataset": str(dataset),
        "dataset_sha256": dataset_sha256(dataset),
        "limit": limit,
        "backend": BACKEND,
        "summary": backend,
    }
    if replaced is not None:
        entry["replaced"] = replaced.name
    return entry


async def _run(
    served: Any, label: str, out: Path, dataset: Path, limit: int | None, concurrency: int
) -> Path:
    from eval.runner import RunPlan, run
    from suggestions.backends import ChatBackend

    backend = ChatBackend(
        name=BACKEND, base_url=served.url, model=served.model, label=label, api_key=served.api_key
    )
    plan = RunPlan(
        dataset=dataset,
        backends=(BACKEND,),
        out=out,
        concurrency=concurrency,
        limit=limit,
        resume=(out / CONFIG).exists(),
    )
    return await run(plan, backends={BACKEND: backend}, progress=False)
