"""A run's manifest: what was trained, on what, how, and how it turned out.

It is written when the run starts (`status: "training"`) and rewritten at the end (`complete` or
`failed` with the error and the stage that failed), so even a crashed run says what it was.
`checked` (the post-training checks passed) and `scored` (the eval harness scored it) are kept
apart from the status, so a run whose only failure was its scoring can be scored again and
completed (`python -m modal_backend.training evaluate`). The registry serves
`version` and `base_model` from it; promotion reads `status`, `checks` and `eval`.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .runtime import library_versions

MANIFEST_SCHEMA = 1
STATUS_TRAINING = "training"
STATUS_COMPLETE = "complete"
STATUS_FAILED = "failed"


def new_run_id(code_version: str, now: datetime | None = None) -> str:
    """`YYYYMMDD-HHMMSS-<commit>`: sorts by time, and names the code that trained it."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    commit = "".join(c if c.isalnum() or c in "._-" else "-" for c in code_version.strip())
    return f"{stamp}-{commit}" if commit else stamp


def start_manifest(config: TrainConfig, run_id: str, code_version: str) -> dict[str, Any]:
    """The manifest as written before training: inputs only."""
    return {
        "schema": MANIFEST_SCHEMA,
        "run_id": run_id,
        "version": run_id,
        "status": STATUS_TRAINING,
        "checked": False,
        "scored": False,
        "created": _now(),
        "code_version": code_version,
        "base_model": config.base_model,
        **_revision_fields(config),
        "load_in_4bit": config.load_in_4bit,
        "hyperparameters": hyperparameters(config),
        "config": config.model_dump(mode="json"),
        "libraries": library_versions(),
        "outputs": {"adapter": "adapter", "merged": "merged"},
    }


def _revision_fields(config: TrainConfig) -> dict[str, Any]:
    revision, reason = resolve_revision(config.base_model, config.base_revision)
    fields: dict[str, Any] = {"base_model_revision": revision}
    if reason:
        fields["base_model_revision_reason"] = reason
    return fields


def finish(manifest: dict[str, Any], *, error: BaseException | None = None) -> dict[str, Any]:
    """Stamp the end: complete, or failed with the error's type and message."""
    manifest["finished"] = _now()
    if error is None:
        manifest["status"] = STATUS_COMPLETE
        manifest.pop("error", None)
        manifest.pop("failed_stage", None)
    else:
        manifest["status"] = STATUS_FAILED
        manifest["error"] = f"{type(error).__name__}: {error}"
    return manifest


def hyperparameters(config: TrainConfig) -> dict[str, Any]:
    """The numbers that decide the result, grouped as people look for them."""
    return {
        "lora": {
            "r": config.lora_r,
            "alpha": config.lora_alpha,
            "dropout": config.lora_dropout,
            "target_modules": list(config.target_modules),
        },
        "sft": {
            "learning_rate": config.learning_rate,
            "num_train_epochs": config.num_train_epochs,
            "max_steps": config.max_steps,
            "per_device_train_batch_size": config.per_device_train_batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps,
            "warmup_ratio": config.warmup_ratio,
            "lr_scheduler_type": config.lr_scheduler_type,
            "weight_decay": config.weight_decay,
            "optim": config.optim,
            "max_seq_length": config.max_seq_length,
            "seed": config.seed,
            "loss": "response tokens only (prompt labels -100)",
        },
    }


def base_model_revision(base_model: str, revision: str | None) -> str | None:
    """A Hub model's commit, or a local folder's content fingerprint (`sha256:...`)."""
    return resolve_revision(base_model, revision)[0]


def resolve_revision(model: str, revision: str | None) -> tuple[str | None, str | None]:
    """(revision, reason): a local folder's content fingerprint (`sha256:...`) or a Hub model's
    commit; where neither can be had, what was asked for (or None) and why, so a manifest never
    leaves a revision blank without saying so."""
    path = Path(model)
    if path.is_dir():
        return f"sha256:{folder_fingerprint(path)}", None
    try:
        from huggingface_hub import HfApi

        return HfApi().model_info(model, revision=revision).sha, None
    except Exception as exc:  # offline or not on the Hub: keep what was asked for
        reason = f"could not be resolved on the Hugging Face Hub ({type(exc).__name__}: {exc})"
        if revision:
            reason += "; recorded as requested"
        return revision, reason[:500]


def folder_fingerprint(folder: Path, *, hash_limit: int = 64 * 1024 * 1024) -> str:
    """SHA-256 over every file's name and bytes (name and size only for files over
    `hash_limit`, so multi-gigabyte weights do not take minutes to fingerprint)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode())
        size = file.stat().st_size
        digest.update(str(size).encode())
        if size <= hash_limit:
            digest.update(file.read_bytes())
    return digest.hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
