"""`python -m modal_backend.training train|evaluate|data`: training on this machine.

`train` runs the same `train` function as the Modal GPU job, here on CPU (or a local GPU) with
any Hugging Face model folder, e.g. a tiny one for a smoke run; `evaluate` (re)scores a run with
the eval harness, and completes a run whose checks passed but whose scoring failed; `data`
builds the training set and runs the leakage check, with no model.

Exit status: 0 success, 1 the run failed (leakage, a post-training check, training itself),
2 bad arguments or input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .config import DEFAULT_BASE_MODEL, DEFAULT_EVAL_SET, DEFAULT_TRAIN_SETS, TrainConfig

# flag -> (TrainConfig field, type, help)
_TUNABLES: dict[str, tuple[str, type, str]] = {
    "--max-steps": ("max_steps", int, "stop after this many optimizer steps (-1: epochs)"),
    "--epochs": ("num_train_epochs", float, "passes over the training set"),
    "--learning-rate": ("learning_rate", float, "peak learning rate"),
    "--batch-size": ("per_device_train_batch_size", int, "examples per device step"),
    "--grad-accum": ("gradient_accumulation_steps", int, "steps per optimizer update"),
    "--lora-r": ("lora_r", int, "LoRA rank"),
    "--lora-alpha": ("lora_alpha", int, "LoRA scaling numerator"),
    "--max-seq-length": ("max_seq_length", int, "longer examples are dropped, not cut"),
    "--eval-fraction": ("eval_fraction", float, "share held out for the eval loss"),
    "--eval-steps": ("eval_steps", int, "eval-loss interval in steps"),
    "--save-steps": ("save_steps", int, "checkpoint interval in steps"),
    "--logging-steps": ("logging_steps", int, "loss logging interval in steps"),
    "--seed": ("seed", int, "seed for sampling, splits, LoRA init and data order"),
    "--coedit-per-type": ("coedit_per_type", int, "CoEdIT examples kept per type"),
    "--coedit-revision": ("coedit_revision", str, "pin the CoEdIT Hub revision"),
    "--base-revision": ("base_revision", str, "pin the base model's Hub revision"),
    "--merge-check-base": ("merge_check_base", str, "16-bit weights for the merge check"),
    "--check-max-new-tokens": ("check_max_new_tokens", int, "token budget of each check answer"),
    "--merge-check-tolerance": ("merge_check_tolerance", float, "near-tie logit gap allowed"),
    "--eval-limit": ("eval_limit", int, "score only the first N eval examples"),
    "--trainer-backend": ("trainer_backend", str, "auto (Unsloth, else PEFT), unsloth or peft"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        options = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        return int(options.handler(options))
    except ValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modal_backend.training", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="command")

    train = commands.add_parser("train", help="train, check and score one run")
    _data_options(train)
    train.add_argument("--weights", type=Path, required=True, help="the weights folder (runs/)")
    train.add_argument(
        "--base-model",
        default=DEFAULT_BASE_MODEL,
        help="Hub id, local folder, 'smollm2' (SmolLM2-135M-Instruct, our laptop-sized base) or "
        "'qwen1.5b' (Qwen2.5-Coder-1.5B-Instruct, the laptop stand-in)",
    )
    train.add_argument("--run-id", default=None, help="an unfinished run to resume")
    train.add_argument("--no-4bit", action="store_true", help="train a 16-bit base (GPU)")
    train.add_argument("--no-eval", action="store_true", help="skip the eval harness")
    train.add_argument("--keep-checkpoints", action="store_true")
    for flag, (_, kind, text) in _TUNABLES.items():
        train.add_argument(flag, type=kind, default=None, help=text)
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("evaluate", help="(re)score a run with the eval harness")
    evaluate.add_argument("run_id")
    evaluate.add_argument("--weights", type=Path, required=True)
    evaluate.add_argument("--dataset", default=DEFAULT_EVAL_SET)
    evaluate.add_argument("--limit", type=int, default=None)
    evaluate.add_argument(
        "--fresh",
        action="store_true",
        help="move an existing eval folder aside and score from scratch (needed when it holds "
        "a score of another eval set or limit)",
    )
    evaluate.set_defaults(handler=_evaluate)

    data = commands.add_parser("data", help="build the training set and check for leakage")
    _data_options(data)
    data.add_argument("--coedit-per-type", type=int, default=None)
    data.set_defaults(handler=_data)

    from .laptop import add_parser

    add_parser(commands)
    return parser


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        action="append",
        help=f"a training set (repeatable or comma-separated): our JSONL, a CoEdIT export, or "
        f"'coedit' for the Hub (default {','.join(DEFAULT_TRAIN_SETS)})",
    )
    parser.add_argument(
        "--eval-dataset",
        action="append",
        help=f"eval sets kept out of training; the first scores the run (default "
        f"{DEFAULT_EVAL_SET})",
    )
    parser.add_argument(
        "--no-leak-check",
        action="store_true",
        help="skip the leakage check (recorded; the run then cannot pass the promotion gate)",
    )


def _split(values: list[str] | None) -> tuple[str, ...] | None:
    if not values:
        return None
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


def base_model_path(name: str) -> str:
    """`smollm2` and `qwen1.5b` are our local bases, converted once from their GGUF files;
    anything else is a Hub id or a folder, as given."""
    from modal_backend.serving.local_bases import HF_BASES, ensure_hf_base

    base = HF_BASES.get(name)
    return str(ensure_hf_base(base)) if base else name


def config_from_options(options: argparse.Namespace) -> TrainConfig:
    fields: dict[str, Any] = {}
    if datasets := _split(options.dataset):
        fields["datasets"] = datasets
    if eval_sets := _split(options.eval_dataset):
        fields["eval_datasets"] = eval_sets
    for flag, (name, _, _) in _TUNABLES.items():
        value = getattr(options, flag[2:].replace("-", "_"), None)
        if value is not None:
            fields[name] = value
    if getattr(options, "base_model", None):
        fields["base_model"] = base_model_path(options.base_model)
    if getattr(options, "run_id", None):
        fields["run_id"] = options.run_id
    if getattr(options, "no_4bit", False):
        fields["load_in_4bit"] = False
    if getattr(options, "no_eval", False):
        fields["run_eval"] = False
    if getattr(options, "keep_checkpoints", False):
        fields["keep_checkpoints"] = True
    if getattr(options, "no_leak_check", False):
        fields["leak_check"] = False
    return TrainConfig(**fields)


def _train(options: argparse.Namespace) -> int:
    from .runtime import hide_broken_torchvision

    hide_broken_torchvision()  # before anything imports transformers
    from modal_backend.serving.registry import RegistryError

    from .checks import ChecksFailed
    from .data import DataError
    from .pipeline import train

    config = config_from_options(options)
    try:
        manifest = train(config, options.weights)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ChecksFailed as exc:
        print(f"run failed: {exc} (details in the manifest's 'checks')", file=sys.stderr)
        return 1
    print(json.dumps(_headline(manifest), indent=2))
    return 0


def _evaluate(options: argparse.Namespace) -> int:
    from eval.runner import RunError
    from modal_backend.serving.registry import Registry, RegistryError

    from .config import resolve_path
    from .evaluation import EvalFolderMismatch, evaluate_run
    from .gate import covered_eval_sha256
    from .manifest import STATUS_COMPLETE, STATUS_TRAINING

    registry = Registry(options.weights)
    try:
        run = registry.run(options.run_id)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    manifest = dict(run.manifest)
    if manifest.get("status") == STATUS_TRAINING:
        print(
            f"error: run {run.run_id} is still training, or died mid-run: resume it with "
            f"`train --run-id {run.run_id}` rather than scoring half-written weights",
            file=sys.stderr,
        )
        return 2
    if not run.has_merged():
        print(f"error: run {run.run_id} has no complete merged weights to score", file=sys.stderr)
        return 2
    dataset = resolve_path(options.dataset)
    try:
        manifest["eval"] = evaluate_run(
            run.path,
            dataset=dataset,
            model_id=run.run_id,
            version=run.version,
            limit=options.limit,
            fresh=options.fresh,
        )
    except (EvalFolderMismatch, RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    apply_eval(registry, run.run_id, manifest)
    print(json.dumps(manifest["eval"], indent=2))
    if manifest.get("status") != STATUS_COMPLETE:
        print(f"note: run {run.run_id} stays {manifest.get('status')!r}", file=sys.stderr)
    if options.limit is not None or manifest["eval"]["dataset_sha256"] not in covered_eval_sha256(
        manifest
    ):
        print(
            "note: this score cannot pass the promotion gate: it must be of a whole eval set "
            "the run's leakage check covered",
            file=sys.stderr,
        )
    return 0


def apply_eval(registry: Any, run_id: str, manifest: dict[str, Any]) -> None:
    """Record a new `eval` entry in the run's manifest; a run whose checks passed but whose
    scoring had failed is complete once it is scored."""
    from .manifest import STATUS_FAILED, finish

    manifest["scored"] = True
    checks = manifest.get("checks")
    checks_passed = isinstance(checks, dict) and checks.get("passed") is True
    if manifest.get("status") == STATUS_FAILED and checks_passed:
        # The checks passed, so the scoring was what failed; it has now succeeded.
        manifest["recovered"] = {"from_error": manifest.get("error"), "by": "evaluate"}
        finish(manifest)
        if not manifest.get("config", {}).get("keep_checkpoints"):
            from .trainer import remove_checkpoints

            remove_checkpoints(registry.run_dir(run_id))
    registry.write_manifest(run_id, manifest)


def _data(options: argparse.Namespace) -> int:
    import tempfile

    from .data import DataError, build_training_data

    config = config_from_options(options)
    with tempfile.TemporaryDirectory() as work:
        try:
            data = build_training_data(config, Path(work))
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    report = {
        "datasets": data.dataset_records(),
        "examples": data.counts(),
        "eval_sets": data.eval_sets,
        "leakage": data.leakage,
    }
    print(json.dumps(report, indent=2))
    return 0


def _headline(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a person wants to see when a run ends; the manifest has the rest."""
    summary = manifest.get("eval", {}).get("summary", {})
    return {
        "run_id": manifest["run_id"],
        "status": manifest["status"],
        "trainer_backend": manifest.get("trainer_backend"),
        "examples": manifest.get("examples"),
        "losses": {k: v for k, v in manifest.get("losses", {}).items() if k != "history"},
        "checks_passed": manifest.get("checks", {}).get("passed"),
        "eval": {
            "error_rate": summary.get("error_rate"),
            "metrics": {
                k: v
                for k, v in summary.get("metrics", {}).items()
                if k in ("gleu", "errant_f05", "meaning_similarity")
            },
        },
        "timings": manifest.get("timings"),
    }
