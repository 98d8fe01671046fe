"""Does the run beat its own stock base? Score both, compare them pairwise, gate on it.

A run is worth serving only if fine-tuning made it better than the model it started from,
asked with the same task prompt. Absolute bounds on our own eval set cannot say that: that set
shares the training data's register and generator. So the run and its stock base are scored
side by side by the eval harness, on JFLEG dev (held out, never training data; from
`JFLEG_DIR`, on Modal from the volume the operator fills) and on our eval set, and the run's
manifest records both folders under `vs_base`. The promotion gate then asks, by paired
bootstrap with 95 % intervals (`eval.compare`):

- on JFLEG dev, the run must be better: the interval of the change in sentence GLEU lies above
  zero, and its corpus GLEU is higher;
- on our eval set, it must be no worse: no per-example score (ERRANT F0.5, sentence GLEU,
  meaning kept) significantly lower.

Each check is one line of the gate's report, so a refusal says which held and which did not.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from eval import run_folder
from eval.data import dataset_sha256
from eval.gates import GateResult

VS_BASE = "vs_base"
"""The manifest key: comparison set name -> its entry (`record`)."""
JFLEG_DEV = "jfleg-dev"
OWN_SET = "writing-eval"
BACKEND = "custom"
Role = Literal["better", "no-worse"]
ROLES: Mapping[str, Role] = {JFLEG_DEV: "better", OWN_SET: "no-worse"}
"""What each comparison set must show; JFLEG dev is required."""
BETTER_METRIC = "gleu_sentence"
NO_WORSE_METRICS = ("errant_f05", "gleu_sentence", "meaning_similarity")


@dataclass(frozen=True)
class Served:
    """A model id on a model service, with the prompt to ask it with (None: our task prompt)."""

    url: str
    model: str
    api_key: str
    label: str
    prompt: Callable[..., Any] | None = None


def score_pair(
    name: str,
    dataset: Path,
    *,
    base: Served,
    tuned: Served,
    out_prefix: Path,
    concurrency: int = 8,
    limit: int | None = None,
    extra_base: Mapping[str, Served] | None = None,
) -> dict[str, Any]:
    """Score base and run on `dataset` with our task prompt into `<out_prefix>-base` and
    `-tuned` (resumed if interrupted), and return the manifest entry for them. `extra_base`
    adds more columns to the base folder (e.g. the old generic prompt)."""
    from eval.runner import RunPlan
    from eval.runner import run as run_eval
    from eval.scoring import score_run
    from suggestions.backends import ChatBackend
    from suggestions.prompts import build_messages

    def column(slot: str, served: Served) -> ChatBackend:
        return ChatBackend(
            name=slot,
            base_url=served.url,
            model=served.model,
            api_key=served.api_key,
            label=served.label,
            build_prompt=served.prompt or build_messages,
        )

    columns: dict[str, dict[str, ChatBackend]] = {
        "base": {BACKEND: column(BACKEND, base)},
        "tuned": {BACKEND: column(BACKEND, tuned)},
    }
    for slot, served in (extra_base or {}).items():
        columns["base"][slot] = column(slot, served)
    folders = {role: Path(f"{out_prefix}-{role}").resolve() for role in columns}
    for role, folder in folders.items():
        plan = RunPlan(
            dataset=dataset,
            backends=tuple(columns[role]),
            out=folder,
            concurrency=concurrency,
            limit=limit,
            resume=(folder / run_folder.CONFIG).exists(),
        )
        print(f"scoring {role} on {name} into {folder}", flush=True)
        asyncio.run(run_eval(plan, backends=dict(columns[role]), progress=sys.stderr.isatty()))
        score_run(folder, reports=True)
    return record(name, dataset, folders["base"], folders["tuned"], limit)


def compare_in_process(
    run_dir: Path, *, base_model: str, merged: Path, sets: Mapping[str, Path], version: str
) -> dict[str, Any]:
    """The comparison where the run was trained (a Modal GPU): the stock 16-bit base and the
    run's merged weights, each on the transformers engine behind our server on loopback, both
    scored on every set into `run_dir/vs-base/<set>-{base,tuned}`. Returns `vs_base`."""
    import secrets
    from contextlib import ExitStack

    from modal_backend.serving.engines.transformers_engine import TransformersEngine
    from modal_backend.serving.local import serve_in_thread
    from modal_backend.serving.server import create_app

    key = secrets.token_urlsafe(24)  # this process's own servers: a fresh key, never shown
    entries: dict[str, Any] = {}
    with ExitStack() as stack:
        served = {}
        for role, path, model_id in (("base", base_model, "base"), ("tuned", merged, version)):
            engine = TransformersEngine.load(path, model_id=model_id, version=model_id)
            stack.callback(engine.close)
            url = stack.enter_context(serve_in_thread(create_app(engine, api_key=key)))
            label = f"{base_model}, stock" if role == "base" else f"run {version} (merged)"
            served[role] = Served(url, model_id, key, label)
        for name, dataset in sets.items():
            entries[name] = score_pair(
                name,
                dataset,
                base=served["base"],
                tuned=served["tuned"],
                out_prefix=run_dir / "vs-base" / name,
                concurrency=1,
            )
    return entries


def comparison_sets(own_set: Path | None, jfleg_dir: Path | None) -> dict[str, Path]:
    """Our eval set and JFLEG dev (from a folder holding `dev/dev.src`), where present."""
    sets = {OWN_SET: own_set} if own_set is not None else {}
    if jfleg_dir is not None and (jfleg_dir / "dev" / "dev.src").is_file():
        sets[JFLEG_DEV] = jfleg_dir / "dev"
    return sets


def record(name: str, dataset: Path, base: Path, tuned: Path, limit: int | None) -> dict[str, Any]:
    """The manifest's entry for one comparison set."""
    return {
        "dataset": str(dataset),
        "dataset_sha256": dataset_sha256(dataset),
        "limit": limit,
        "role": ROLES.get(name, "no-worse"),
        "base": str(base),
        "tuned": str(tuned),
    }


def judge(manifest: Mapping[str, Any]) -> tuple[list[GateResult], list[str]]:
    """(results, problems) of the comparison with the stock base recorded in `manifest`.

    Problems are what makes the comparison untrustworthy or absent (no JFLEG dev comparison,
    a partial score, a folder missing or scored on another set); results are the checks."""
    entries = manifest.get(VS_BASE)
    entries = entries if isinstance(entries, Mapping) else {}
    problems: list[str] = []
    results: list[GateResult] = []
    if JFLEG_DEV not in entries:
        problems.append(
            "it was not compared with its stock base on JFLEG dev: score both with JFLEG_DIR "
            "set (make finetune does; on Modal the JFLEG volume must be filled)"
        )
    for name, entry in sorted(entries.items()):
        trouble = _entry_problem(name, entry)
        if trouble:
            problems.append(trouble)
            continue
        results += _checks(name, entry)
    return results, problems


def _entry_problem(name: str, entry: Any) -> str | None:
    if not isinstance(entry, Mapping):
        return f"its comparison with the base on {name} is unreadable"
    if entry.get("limit") is not None:
        return (
            f"its comparison with the base on {name} covers only {entry['limit']} rows "
            "(--limit); score the whole set"
        )
    for role in ("base", "tuned"):
        folder = Path(str(entry.get(role, "")))
        if not run_folder.has_metrics(folder):
            return f"its comparison with the base on {name} lacks a scored {role} folder ({folder})"
        config = run_folder.find_config(folder) or {}
        if config.get("dataset_sha256") != entry.get("dataset_sha256") or config.get("limit"):
            return (
                f"the {role} folder of its comparison on {name} ({folder}) was scored on another "
                "dataset or limit than the manifest records"
            )
    return None


def _checks(name: str, entry: Mapping[str, Any]) -> list[GateResult]:
    from eval.compare import compare_runs

    base, tuned = Path(entry["base"]), Path(entry["tuned"])
    role = entry.get("role", "no-worse")
    wanted = (BETTER_METRIC,) if role == "better" else NO_WORSE_METRICS
    deltas = {
        d.metric: d for d in compare_runs(base, tuned, metrics=wanted) if d.backend == BACKEND
    }
    results = []
    for metric in wanted:
        check = f"vs stock base on {name}: {metric} " + (
            "better" if role == "better" else "no worse"
        )
        delta = deltas.get(metric)
        if delta is None:
            results.append(GateResult(check, BACKEND, None, 0.0, False, f"no pairs of {metric}"))
            continue
        interval = f"95% CI [{delta.ci_low:+.4f}, {delta.ci_high:+.4f}]"
        change = f"{delta.mean_a:.4f} -> {delta.mean_b:.4f} (n={delta.n}), {interval}"
        if role == "better":
            corpus = _corpus_gleu(base), _corpus_gleu(tuned)
            passed = delta.ci_low > 0 and corpus[1] > corpus[0]
            message = f"{change}; corpus GLEU {corpus[0]:.4f} -> {corpus[1]:.4f}"
            message += "" if passed else " (needs the interval above zero and a higher corpus GLEU)"
        else:
            passed = delta.ci_high >= 0
            message = change + ("" if passed else " (significantly worse)")
        results.append(GateResult(check, BACKEND, delta.delta, 0.0, passed, message))
    return results


def _corpus_gleu(folder: Path) -> float:
    value = run_folder.read_summary(folder)["backends"].get(BACKEND, {}).get("metrics", {})
    gleu = value.get("gleu")
    return float(gleu) if isinstance(gleu, int | float) else float("nan")


__all__ = [
    "JFLEG_DEV",
    "OWN_SET",
    "VS_BASE",
    "Served",
    "compare_in_process",
    "comparison_sets",
    "judge",
    "record",
    "score_pair",
]
