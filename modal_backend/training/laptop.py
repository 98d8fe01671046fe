"""`make finetune`: our own model, trained, proven and promoted on a laptop CPU.

    python -m modal_backend.training laptop --weights artifacts/weights
    python -m modal_backend.training laptop --base-model qwen1.5b --weights artifacts/qwen-weights

1. trains a LoRA on the base (SmolLM2-135M-Instruct by default, or the Qwen2.5-Coder-1.5B
   stand-in) with its laptop recipe and runs the post-training checks (the same `train` as the
   Modal GPU job);
2. serves the stock base and the run's adapter from one engine (the production pairing): vLLM
   for SmolLM2; llama.cpp for Qwen, the run as a GGUF LoRA on the Q4 GGUF (vLLM in fp32 is far
   too slow for a 1.5B on a laptop CPU);
3. scores base and run side by side with the eval harness on our eval set and on JFLEG dev
   (held out of training), into `runs/<run>-<set>-base` (the stock base with our task prompt,
   and on our eval set with the old generic prompt as production's baseline) and `-tuned`, and
   compares them with a paired bootstrap (`runs/<run>-<set>-comparison.md`); the run's answers
   on our eval set are also its own eval folder (what the promotion gate reads);
4. promotes the run in the weights root through the promotion gate;
5. exports the adapter into the repository (`models/writing-smollm2-lora/` or
   `models/writing-qwen-lora/`), with its manifest.

`--run-id` continues a run that has already trained (steps it has done are not repeated).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modal_backend.serving.local_bases import QWEN_15B, SMOLLM2, HfBase
from modal_backend.serving.registry import Registry, Run
from modal_backend.serving.shipped_adapter import SHIPPED_ADAPTER, SHIPPED_QWEN_ADAPTER
from modal_backend.serving.weights import SERVED_MODEL_ID

from .config import DEFAULT_EVAL_SET, REPO_ROOT
from .vs_base import JFLEG_DEV, OWN_SET, VS_BASE

LAPTOP_RECIPE: tuple[str, ...] = (
    "--epochs",
    "1",
    "--lora-r",
    "8",
    "--lora-alpha",
    "16",
    "--max-seq-length",
    "512",
    "--logging-steps",
    "5",
)
"""One pass over our 2,768 examples at r=8: about 40 minutes on 2 CPU cores, where two passes at
r=16 would take an hour; r=8 also keeps the shipped adapter under 5 MB."""
QWEN_RECIPE: tuple[str, ...] = (
    *LAPTOP_RECIPE,
    "--max-steps",
    "60",
    "--batch-size",
    "4",
    "--grad-accum",
    "1",
    "--save-steps",
    "10",
    "--eval-fraction",
    "0.02",
    "--eval-steps",
    "1000",
)
"""240 examples (a seeded sample of the same set) at about 50 s a step on 2 CPU cores: under an
hour, checkpointed every 10 steps (about 8 minutes) so `--run-id` resumes a stopped run. The
stock 1.5B already follows the task prompt; the run teaches it minimal edits."""


@dataclass(frozen=True, slots=True)
class LaptopBase:
    """A base `make finetune` can train, and how its pair is served and shipped."""

    base: HfBase
    recipe: tuple[str, ...]
    engine: str
    """vllm (SmolLM2 in fp32) or llamacpp (the run as a GGUF LoRA on the Q4 GGUF)."""
    export_to: Path


LAPTOP_BASES = {
    SMOLLM2.name: LaptopBase(SMOLLM2, LAPTOP_RECIPE, "vllm", SHIPPED_ADAPTER),
    QWEN_15B.name: LaptopBase(QWEN_15B, QWEN_RECIPE, "llamacpp", SHIPPED_QWEN_ADAPTER),
}
JFLEG_CANDIDATES = (
    os.environ.get("JFLEG_DIR", ""),
    str(REPO_ROOT.parent / "shared" / "data" / "jfleg"),
)


def add_parser(commands: Any) -> None:
    laptop = commands.add_parser("laptop", help="train, score, compare, promote and export")
    laptop.add_argument("--weights", type=Path, default=Path("artifacts/weights"))
    laptop.add_argument(
        "--base-model",
        choices=sorted(LAPTOP_BASES),
        default=SMOLLM2.name,
        help="smollm2 (SmolLM2-135M, about 40 min of training) or qwen1.5b (the Qwen2.5-Coder-1.5B "
        "stand-in, about an hour)",
    )
    laptop.add_argument("--run-id", default=None, help="continue this run instead of a new one")
    laptop.add_argument("--runs", type=Path, default=Path("runs"), help="eval run folders")
    laptop.add_argument("--jfleg", type=Path, default=None, help="JFLEG's folder (dev/ in it)")
    laptop.add_argument("--limit", type=int, default=None, help="score only N rows per set")
    laptop.add_argument("--concurrency", type=int, default=8)
    laptop.add_argument(
        "--baseline-on-jfleg",
        action="store_true",
        help="also score the stock base with the old generic prompt on JFLEG dev",
    )
    laptop.add_argument("--no-export", action="store_true")
    laptop.add_argument("--no-promote", action="store_true")
    laptop.set_defaults(handler=main)


def jfleg_dev(given: Path | None) -> Path | None:
    for candidate in (str(given) if given else "", *JFLEG_CANDIDATES):
        if candidate and (Path(candidate) / "dev" / "dev.src").is_file():
            return Path(candidate) / "dev"
    return None


def main(options: argparse.Namespace) -> int:
    from .cli import main as cli_main

    registry = Registry(options.weights)
    laptop_base = LAPTOP_BASES[options.base_model]
    jfleg = jfleg_dev(options.jfleg)
    held_out = [jfleg, jfleg.parent / "test"] if jfleg else []
    eval_sets = [str(REPO_ROOT / DEFAULT_EVAL_SET), *(str(p) for p in held_out if p.is_dir())]
    run_id = options.run_id
    if run_id is not None and run_id not in registry.run_ids():
        print(f"error: no run {run_id!r} in {options.weights}", file=sys.stderr)
        return 2
    if run_id is None or registry.run(run_id).manifest.get("status") == "training":
        argv = ["train", "--weights", str(options.weights), "--base-model", options.base_model]
        argv += [*laptop_base.recipe, "--no-eval", "--eval-dataset", ",".join(eval_sets)]
        if run_id:
            argv += ["--run-id", run_id]
        before = set(registry.run_ids())
        if (status := cli_main(argv)) != 0:
            return status
        run_id = run_id or (set(registry.run_ids()) - before).pop()
    run = registry.run(run_id)
    if jfleg is None:
        print("note: JFLEG not found (set JFLEG_DIR): scoring on our eval set only", flush=True)
    evaluation = score(run, registry, options, jfleg, laptop_base)
    if not options.no_promote:
        from .promote import main as promote_main

        status = promote_main(
            ["--weights", str(options.weights), run_id, "--reason", "make finetune (laptop run)"]
        )
        if status != 0:
            print(f"run {run_id} was not promoted (the gate says why above)", file=sys.stderr)
            return status
    if not options.no_export:
        from .export import export_adapter

        dest = laptop_base.export_to
        export_adapter(registry.run(run_id), dest, evaluation=evaluation, base=laptop_base.base)
        print(f"exported the adapter of {run_id} to {dest}", flush=True)
    return 0


def serve_args(laptop_base: LaptopBase, run: Run) -> tuple[str, list[str]]:
    """The serve CLI's `--model` and further arguments for the base and the run's adapter."""
    adapter = ["--adapter", f"{SERVED_MODEL_ID}={run.adapter_path}"]
    model_id = ["--model-id", laptop_base.base.gguf.model_id]
    if laptop_base.engine == "llamacpp":
        from modal_backend.serving.model_parts import ensure_model

        gguf = ensure_model(laptop_base.base.gguf)
        slots = ["--parallel", "4", "--context-tokens", "2048"]
        return str(gguf), ["--engine", "llamacpp", *model_id, *adapter, *slots]
    return laptop_base.base.name, [
        "--engine",
        "vllm",
        *model_id,
        *adapter,
        "--max-model-len",
        "2048",
    ]


def score(
    run: Run,
    registry: Registry,
    options: argparse.Namespace,
    jfleg: Path | None,
    laptop_base: LaptopBase,
) -> dict[str, Any]:
    """Steps 2-3: one engine for base and run, the side-by-side runs, the gate's eval folder."""
    from modal_backend.serving.local import LocalModelServer, ServedModel

    from .cli import apply_eval
    from .evaluation import evaluation_from_folder

    key = secrets.token_urlsafe(24)
    log = options.weights / f"laptop-server-{run.run_id}.log"
    model, args = serve_args(laptop_base, run)
    server = LocalModelServer(api_key=key, model=model, extra_args=args, log_path=log)
    engine = {"vllm": "vLLM", "llamacpp": "llama.cpp"}[laptop_base.engine]
    print(f"serving base and run from one {engine} engine (log: {log})", flush=True)
    with server:
        tuned = ServedModel(url=server.url, model=SERVED_MODEL_ID, api_key=key)
        base = ServedModel(url=server.url, model=laptop_base.base.gguf.model_id, api_key=key)
        sets = {
            **({JFLEG_DEV: jfleg} if jfleg else {}),  # first: the comparison that decides
            OWN_SET: REPO_ROOT / DEFAULT_EVAL_SET,
        }
        results: dict[str, Any] = {}
        for name, dataset in sets.items():
            entry, results[name] = side_by_side(
                run,
                name,
                dataset,
                base=base,
                tuned=tuned,
                key=key,
                options=options,
                label=f"{laptop_base.base.label} ({engine})",
            )
            manifest = dict(registry.run(run.run_id).manifest)
            manifest[VS_BASE] = {**manifest.get(VS_BASE, {}), name: entry}
            registry.write_manifest(run.run_id, manifest)
    manifest = dict(registry.run(run.run_id).manifest)
    if not manifest.get("scored"):  # the gate's eval folder: the run's answers on our eval set
        own = Path(manifest[VS_BASE][OWN_SET]["tuned"])
        dataset = REPO_ROOT / DEFAULT_EVAL_SET
        manifest["eval"] = evaluation_from_folder(
            run.path, own, dataset=dataset, limit=options.limit
        )
        apply_eval(registry, run.run_id, manifest)
    return results


def side_by_side(
    run: Run,
    name: str,
    dataset: Path,
    *,
    base: Any,
    tuned: Any,
    key: str,
    options: argparse.Namespace,
    label: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Base (our task prompt, and on our eval set the old generic prompt as production's
    baseline) and run, scored and compared: the manifest's `vs_base` entry, and the headline of
    each with the paired deltas (also written, with the per-type ERRANT counts, to
    `runs/<run>-<set>-comparison.md`)."""
    from suggestions.prompts import build_baseline_messages

    from .vs_base import Served, score_pair

    prefix = options.runs / f"{run.run_id}-{name}"
    stock = f"{label}, stock"
    old_prompt = f"{stock}, old generic prompt"
    extra = {}
    if name == OWN_SET or options.baseline_on_jfleg:  # on JFLEG it doubles the base's time
        extra = {"baseline": Served(base.url, base.model, key, old_prompt, build_baseline_messages)}
    entry = score_pair(
        name,
        dataset,
        base=Served(base.url, base.model, key, f"{stock}, task prompt"),
        tuned=Served(tuned.url, tuned.model, key, f"{stock} + our LoRA, run {run.version}"),
        out_prefix=prefix,
        concurrency=options.concurrency,
        limit=options.limit,
        extra_base=extra,
    )
    return entry, summarize_pair(run, name, entry, prefix, options.limit)


def summarize_pair(
    run: Run, name: str, entry: dict[str, Any], prefix: Path, limit: int | None
) -> dict[str, Any]:
    """A scored comparison's headline of each side and paired deltas, also written with the
    per-type ERRANT counts to `<prefix>-comparison.md` (what the exported manifest keeps)."""
    from eval.compare import compare_runs, error_type_report, format_comparison
    from eval.run_folder import read_summary

    folders = {"base": Path(entry["base"]), "tuned": Path(entry["tuned"])}
    summaries: dict[str, Any] = {}
    for role, folder in folders.items():
        summary = read_summary(folder)
        summaries[role] = {
            backend: _headline(entry) for backend, entry in summary["backends"].items()
        }
        summaries[role]["unedited_source"] = _headline(summary.get("unedited_source") or {})
    deltas = compare_runs(folders["base"], folders["tuned"], seed=0)
    table = format_comparison(deltas)
    types = error_type_report(folders["base"], folders["tuned"])
    Path(f"{prefix}-comparison.md").write_text(
        f"# {name}: run {run.run_id} against its stock base (B - A, paired bootstrap)\n\n"
        f"```\n{table}\n```\n" + (f"\n```\n{types}\n```\n" if types else "")
    )
    print(table, flush=True)
    headline = {
        "dataset": name,
        "dataset_sha256": entry["dataset_sha256"],
        "rows_limit": limit,
        "scores": summaries,
        "deltas": [
            {
                "backend": d.backend,
                "metric": d.metric,
                "n": d.n,
                "base": round(d.mean_a, 4),
                "tuned": round(d.mean_b, 4),
                "delta": round(d.delta, 4),
                "ci95": [round(d.ci_low, 4), round(d.ci_high, 4)],
                "verdict": str(d.verdict),
            }
            for d in deltas
            if d.backend == "custom"
        ],
    }
    return headline


def _headline(entry: dict[str, Any]) -> dict[str, Any]:
    metrics = entry.get("metrics") or {}
    keep = (
        "gleu",
        "errant_f05",
        "errant_precision",
        "errant_recall",
        "meaning_similarity",
        "edit_rate_source",
        "edit_rate_reference",
        "flesch_reading_ease_delta",
        "wordiness_delta",
        "proselint_delta",
        "total_ms",
        "tokens_per_s",
    )
    headline = {k: metrics[k] for k in keep if k in metrics}
    for key in ("error_rate", "examples", "errors"):
        if key in entry:
            headline[key] = entry[key]
    return headline
