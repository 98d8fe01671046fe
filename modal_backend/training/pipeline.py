"""`train(config, weights_root)`: one run from datasets to a scored, versioned model folder.

data (dedupe, leakage check, hold-out) -> tokens and labels -> LoRA SFT with checkpoints ->
adapter + merged 16-bit weights -> merge and end-of-turn checks -> eval harness -> manifest.

The same function runs in the Modal GPU function (Unsloth, QLoRA on the 8B base) and on a CPU
with a tiny model (tests, smoke runs); only the config differs. Where a broken torchvision is
installed, call it in a fresh process (see `runtime.hide_broken_torchvision`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modal_backend.registry import MANIFEST_FILE, Registry, RegistryError

from .config import TrainConfig, resolve_path
from .manifest import STATUS_COMPLETE, finish, new_run_id, start_manifest
from .runtime import device, device_description, hide_broken_torchvision


class RunAlreadyComplete(RegistryError):
    """The run id names a finished run; training again would overwrite what may be served."""


def train(
    config: TrainConfig,
    weights_root: Path,
    *,
    on_checkpoint: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train, save, check and score one run under `weights_root/runs/<run_id>/`; returns the
    manifest. Raises (after recording the failure in the manifest) on leakage, a failed check
    or any training error. A run id whose folder holds checkpoints resumes from the latest."""
    hide_broken_torchvision()
    from eval.runner import code_version as git_code_version

    registry = Registry(weights_root)
    code_version = config.code_version or git_code_version()
    run_id = config.run_id or new_run_id(code_version)
    _refuse_finished(registry.run_dir(run_id))
    manifest = start_manifest(config, run_id, code_version)
    run = _Run(config, registry, run_id, manifest, persist=on_checkpoint or (lambda: None))
    run.write()
    started = time.perf_counter()
    try:
        run.execute()
    except BaseException as exc:
        finish(run.manifest, error=exc)
        raise
    else:
        finish(run.manifest)
    finally:
        run.timings["total_s"] = round(time.perf_counter() - started, 3)
        run.manifest["timings"] = run.timings
        run.write()
        run.persist()
    return run.manifest


class _Run:
    """One run in progress: its config, folder and manifest, written after every stage so a
    crash leaves a manifest that says how far it got."""

    def __init__(
        self,
        config: TrainConfig,
        registry: Registry,
        run_id: str,
        manifest: dict[str, Any],
        *,
        persist: Callable[[], None],
    ) -> None:
        self.config = config
        self.registry = registry
        self.run_id = run_id
        self.dir = registry.run_dir(run_id)
        self.manifest = manifest
        self.timings: dict[str, float] = {}
        self.persist = persist
        """Makes what is on disk durable (a Modal Volume commit); a no-op locally."""

    def write(self) -> None:
        self.registry.write_manifest(self.run_id, self.manifest)

    def timed(self, key: str) -> _Timed:
        return _Timed(self.timings, key)

    def execute(self) -> None:
        from .checks import ChecksFailed, failure_summary

        self._data_and_model()
        self._train_and_save()
        checks = self._check()
        if not checks["passed"]:
            raise ChecksFailed(failure_summary(checks))
        self._score()
        if not self.config.keep_checkpoints:
            from .trainer import remove_checkpoints

            remove_checkpoints(self.dir)

    def _data_and_model(self) -> None:
        from .data import DataError, build_training_data
        from .formatting import tokenize_all
        from .trainer import load_for_training

        config, manifest = self.config, self.manifest
        with self.timed("data_s"):
            data = build_training_data(config, self.dir / "data")
        manifest["datasets"] = data.dataset_records()
        manifest["eval_sets"] = data.eval_sets
        manifest["leakage"] = data.leakage
        manifest["examples"] = data.counts()
        self.write()

        self.device = device()
        manifest["device"] = device_description()
        with self.timed("load_s"):
            self.loaded = load_for_training(config, self.device)
        manifest["trainer_backend"] = self.loaded.backend
        manifest["load_in_4bit"] = self.loaded.quantized
        if self.loaded.fallback_reason:
            manifest["trainer_backend_reason"] = self.loaded.fallback_reason
        tokenizer, limit = self.loaded.tokenizer, config.max_seq_length
        self.train_rows, too_long = tokenize_all(tokenizer, data.train, max_length=limit)
        self.eval_rows, too_long_held = tokenize_all(tokenizer, data.held_out, max_length=limit)
        manifest["examples"]["dropped_too_long"] = len(too_long) + len(too_long_held)
        manifest["examples"]["trained_on"] = len(self.train_rows)
        manifest["examples"]["held_out_scored"] = len(self.eval_rows)
        self.write()
        if not self.train_rows:
            raise DataError(f"no training example fits in {limit} tokens (--max-seq-length)")

    def _train_and_save(self) -> None:
        from .trainer import fit, release, save_adapter_and_merged

        with self.timed("train_s"):
            result = fit(
                self.loaded,
                self.config,
                self.train_rows,
                self.eval_rows,
                self.dir,
                on_checkpoint=self.persist,
            )
        self.manifest["training"] = result.settings
        self.manifest["losses"] = {
            "train": result.train_loss,
            "eval": result.eval_loss,
            "steps": result.steps,
            "history": result.history,
        }
        if result.resumed_from:
            self.manifest["resumed_from"] = result.resumed_from
        with self.timed("save_s"):
            save_adapter_and_merged(self.loaded, self.dir / "adapter", self.dir / "merged")
            release(self.loaded)
        self.write()
        self.persist()

    def _check(self) -> dict[str, Any]:
        from .checks import adapter_base, run_checks_isolated

        config = self.config
        base = adapter_base(config.base_model, config.merge_check_base)
        with self.timed("checks_s"):
            checks = run_checks_isolated(
                base_model=base,
                # The revision pins the base model's repository, not its 16-bit original's.
                base_revision=config.base_revision if base == config.base_model else None,
                adapter_dir=self.dir / "adapter",
                merged_dir=self.dir / "merged",
                device=self.device,
                max_new_tokens=config.check_max_new_tokens,
            )
        self.manifest["checks"] = checks
        self.write()
        return checks

    def _score(self) -> None:
        dataset = self.config.scoring_dataset
        if not (self.config.run_eval and dataset):
            return
        from .evaluation import evaluate_run

        with self.timed("eval_s"):
            self.manifest["eval"] = evaluate_run(
                self.dir,
                dataset=resolve_path(dataset),
                model_id=self.run_id,
                version=self.run_id,
                limit=self.config.eval_limit,
            )


def _refuse_finished(run_dir: Path) -> None:
    import json

    manifest = run_dir / MANIFEST_FILE
    if manifest.is_file():
        status = json.loads(manifest.read_text()).get("status")
        if status == STATUS_COMPLETE:
            raise RunAlreadyComplete(
                f"run {run_dir.name!r} is already complete; leave out --run-id for a new run"
            )


class _Timed:
    """Adds the block's wall time, in seconds, to `timings[key]`."""

    def __init__(self, timings: dict[str, float], key: str) -> None:
        self.timings = timings
        self.key = key

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.started
        self.timings[self.key] = round(self.timings.get(self.key, 0.0) + elapsed, 3)
