"""`train(config, weights_root)`: one run from datasets to a scored, versioned model folder.

data (dedupe, leakage check, hold-out) -> tokens and labels -> LoRA SFT with checkpoints ->
adapter + merged 16-bit weights -> merge and end-of-turn checks -> eval harness -> manifest.

The same function runs in the Modal GPU function (Unsloth, QLoRA on the 8B base) and on a CPU
with a tiny model (tests, smoke runs); only the config differs. Where a broken torchvision is
installed, call it in a fresh process (see `runtime.hide_broken_torchvision`).

A run id that names an unfinished run resumes it. The first attempt's config is kept in the run
folder (`train_config.json`) and a later attempt must match it except in `RESUMABLE_FIELDS`:
checkpoints of one recipe continued under another would make a model no config describes. Each
attempt is recorded under the manifest's `attempts`, and `timings` add up all of them.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modal_backend.serving.registry import MANIFEST_FILE, Registry, RegistryError

from .config import TrainConfig, resolve_path
from .manifest import STATUS_COMPLETE, finish, new_run_id, start_manifest
from .runtime import device, device_description, hide_broken_torchvision
from .vs_base import JFLEG_DEV, VS_BASE, compare_in_process, comparison_sets

if TYPE_CHECKING:
    from .data import TrainingExample

CONFIG_FILE = "train_config.json"
"""The config of a run's first attempt, which every resumed attempt must match."""
RESUMABLE_FIELDS = frozenset(
    {"max_steps", "eval_limit", "run_eval", "keep_checkpoints", "jfleg_dir"}
)
"""What may change between attempts of one run: how long to go on, and what happens after
training. `code_version` may change too (a fix to a crash is what a resume is for); each
attempt records its own."""
_ALWAYS_ALLOWED = frozenset({"code_version", "run_id"})


class RunAlreadyComplete(RegistryError):
    """The run id names a finished run; training again would overwrite what may be served."""


class ConfigChanged(RegistryError):
    """A resumed run was given a config that differs from its first attempt's."""


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
    from eval.run_folder import code_version as git_code_version

    registry = Registry(weights_root)
    code_version = config.code_version or git_code_version()
    run_id = config.run_id or new_run_id(code_version)
    run_dir = registry.run_dir(run_id)
    refuse_finished(run_dir)
    check_resumable(run_dir, config)
    previous = _previous_manifest(run_dir)
    manifest = start_manifest(config, run_id, code_version)
    attempts = _earlier_attempts(previous)
    attempts.append({"started": manifest["created"], "code_version": code_version})
    if previous:
        manifest["created"] = previous.get("created", manifest["created"])  # the first attempt
    manifest["attempts"] = attempts
    run = _Run(config, registry, run_id, manifest, persist=on_checkpoint or (lambda: None))
    run.write()
    started = time.perf_counter()
    try:
        run.execute()
    except BaseException as exc:
        finish(run.manifest, error=exc)
        run.manifest["failed_stage"] = run.stage
        raise
    else:
        finish(run.manifest)
    finally:
        run.timings["total_s"] = round(time.perf_counter() - started, 3)
        this_attempt = attempts[-1]
        this_attempt.update(
            finished=run.manifest.get("finished"),
            status=run.manifest["status"],
            timings=dict(run.timings),
        )
        if "error" in run.manifest:
            this_attempt["error"] = run.manifest["error"]
        if run.manifest.get("resumed_from"):
            this_attempt["resumed_from"] = run.manifest["resumed_from"]
        run.manifest["timings"] = _sum_timings(a.get("timings", {}) for a in attempts)
        run.write()
        run.persist()
    return run.manifest


def counts_by_type(
    examples: Sequence[TrainingExample],
    *,
    excluding: Collection[str] = (),
    only: Collection[str] | None = None,
) -> dict[str, int]:
    """Examples per suggestion type, leaving out the ids in `excluding` (or keeping only those
    in `only`): the manifest's counts after over-long examples are dropped."""
    kept = [ex for ex in examples if ex.id not in excluding and (only is None or ex.id in only)]
    return dict(sorted(Counter(ex.type for ex in kept).items()))


def refuse_finished(run_dir: Path) -> None:
    """Raise RunAlreadyComplete when `run_dir` holds a complete run."""
    manifest = run_dir / MANIFEST_FILE
    if manifest.is_file():
        status = json.loads(manifest.read_text()).get("status")
        if status == STATUS_COMPLETE:
            raise RunAlreadyComplete(
                f"run {run_dir.name!r} is already complete; leave out --run-id for a new run"
            )


def check_resumable(run_dir: Path, config: TrainConfig) -> None:
    """Record the first attempt's config, or raise ConfigChanged when this one differs from it
    outside `RESUMABLE_FIELDS`. A run from before `train_config.json` was written is compared
    with its manifest's config."""
    path = run_dir / CONFIG_FILE
    current = config.model_dump(mode="json")
    if path.is_file():
        first = json.loads(path.read_text())
    else:
        first = _previous_manifest(run_dir).get("config")
        if not isinstance(first, dict):
            run_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
            return
    changed = sorted(
        name
        for name in set(first) | set(current)
        if name not in RESUMABLE_FIELDS | _ALWAYS_ALLOWED and first.get(name) != current.get(name)
    )
    if changed:
        details = "; ".join(f"{n}: {first.get(n)!r} -> {current.get(n)!r}" for n in changed)
        raise ConfigChanged(
            f"run {run_dir.name!r} was started with another config, and resuming it would mix "
            f"two recipes ({details}). Only {', '.join(sorted(RESUMABLE_FIELDS))} may change on "
            "a resume; leave out --run-id to start a new run"
        )
    if not path.is_file():
        path.write_text(json.dumps(first, indent=2, sort_keys=True) + "\n")


def _previous_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _earlier_attempts(previous: dict[str, Any]) -> list[dict[str, Any]]:
    """The attempts a previous manifest records; one built from it if it predates `attempts`."""
    if not previous:
        return []
    recorded = previous.get("attempts")
    if isinstance(recorded, list):
        return [dict(a) for a in recorded if isinstance(a, dict)]
    attempt: dict[str, Any] = {
        key: previous[key]
        for key in ("finished", "status", "error", "timings", "resumed_from")
        if key in previous
    }
    attempt["started"] = previous.get("created")
    return [attempt]


def _sum_timings(timings: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Each stage's seconds over all attempts: what the run cost, not only its last attempt."""
    total: dict[str, float] = {}
    for entry in timings:
        for key, value in entry.items():
            if isinstance(value, int | float):
                total[key] = round(total.get(key, 0.0) + float(value), 3)
    return total


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
        self.stage = "data"
        """The stage in progress: a failed run records it (`failed_stage`), so a run whose
        checks passed and only its scoring failed can be completed by `evaluate`."""

    def write(self) -> None:
        self.registry.write_manifest(self.run_id, self.manifest)

    def timed(self, key: str) -> _Timed:
        return _Timed(self.timings, key)

    def execute(self) -> None:
        from .checks import ChecksFailed, failure_summary

        self._data_and_model()
        self.stage = "train"
        self._train_and_save()
        self.stage = "checks"
        checks = self._check()
        self.manifest["checked"] = bool(checks["passed"])
        if not checks["passed"]:
            raise ChecksFailed(failure_summary(checks))
        self.write()
        self.stage = "eval"
        self._score()
        self.stage = "cleanup"
        if not self.config.keep_checkpoints:
            from .trainer import remove_checkpoints

            remove_checkpoints(self.dir)

    def _data_and_model(self) -> None:
        from .data import DataError, build_training_data
        from .formatting import tokenize_all
        from .trainer import load_for_training

        config, manifest = self.config, self.manifest
        with self.timed("data_s"):
            data = build_training_data(self._checked_against_jfleg(), self.dir / "data")
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
        manifest["examples"].update(
            dropped_too_long=len(too_long) + len(too_long_held),
            trained_on=len(self.train_rows),
            held_out_scored=len(self.eval_rows),
            # `train` and `held_out` count before this; these are what the model really saw.
            trained_on_by_type=counts_by_type(data.train, excluding=too_long),
            held_out_scored_by_type=counts_by_type(data.held_out, excluding=too_long_held),
            dropped_too_long_by_type=counts_by_type(
                [*data.train, *data.held_out], only={*too_long, *too_long_held}
            ),
        )
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
        self.manifest["peak_memory"] = peak_memory()
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
        source = self._merge_source(base)
        self.manifest["merge_source"] = source
        revision = source.get("revision")
        with self.timed("checks_s"):
            checks = run_checks_isolated(
                base_model=base,
                # A Hub commit pins the 16-bit weights; a local folder's fingerprint is no revision.
                base_revision=revision if revision and not revision.startswith("sha256:") else None,
                adapter_dir=self.dir / "adapter",
                merged_dir=self.dir / "merged",
                device=self.device,
                max_new_tokens=config.check_max_new_tokens,
                tolerance=config.merge_check_tolerance,
            )
        self.manifest["checks"] = checks
        self.write()
        return checks

    def _merge_source(self, base: str) -> dict[str, Any]:
        """The 16-bit weights the adapter was merged into and is checked on, and their revision:
        the base model's own when they are the base, else resolved now (Unsloth fetches the
        16-bit original of a pre-quantized base when it merges, just before)."""
        from .manifest import resolve_revision

        if base == self.config.base_model:
            revision = self.manifest.get("base_model_revision")
            reason = self.manifest.get("base_model_revision_reason")
        else:
            revision, reason = resolve_revision(base, None)
        source: dict[str, Any] = {"model": base, "revision": revision}
        if reason:
            source["revision_reason"] = reason
        return source

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
        self.manifest["scored"] = True
        self._compare_with_base(resolve_path(dataset))

    def _checked_against_jfleg(self) -> TrainConfig:
        """The config with JFLEG dev and test added to the leakage check, where it names
        JFLEG's folder: the comparison set must be as unseen as the eval set."""
        jfleg = Path(self.config.jfleg_dir) if self.config.jfleg_dir else None
        found = [str(jfleg / s) for s in ("dev", "test") if jfleg and (jfleg / s).is_dir()]
        extra = tuple(path for path in found if path not in self.config.eval_datasets)
        if not extra:
            return self.config
        return self.config.model_copy(
            update={"eval_datasets": (*self.config.eval_datasets, *extra)}
        )

    def _compare_with_base(self, own_set: Path) -> None:
        """Base and run side by side on our eval set and JFLEG dev (what the promotion gate
        asks), where the config names JFLEG's folder and the whole eval set was scored."""
        jfleg = Path(self.config.jfleg_dir) if self.config.jfleg_dir else None
        sets = comparison_sets(own_set, jfleg)
        if JFLEG_DEV not in sets or self.config.eval_limit:
            return
        from .checks import adapter_base

        with self.timed("vs_base_s"):
            self.manifest[VS_BASE] = compare_in_process(
                self.dir,
                base_model=adapter_base(self.config.base_model, self.config.merge_check_base),
                merged=self.dir / "merged",
                sets=sets,
                version=self.run_id,
            )
        self.write()


def peak_memory() -> dict[str, float]:
    """This process's peak resident memory so far and, on a GPU, torch's peak allocation (GiB):
    what a machine needs to repeat the run."""
    import resource

    peak = {"rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    import torch

    if torch.cuda.is_available():
        peak["gpu_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return peak


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
