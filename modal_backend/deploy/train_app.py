"""# Fine-tuning our writing model on Modal

    modal run modal_backend/deploy/train_app.py \
        --dataset datasets/train/writing-train-v1.jsonl,coedit

trains a LoRA adapter (r=16 on every attention and MLP projection) on Llama 3.1 8B Instruct in
4-bit with Unsloth, on one GPU, and leaves a versioned run on the weights Volume:

    runs/<run_id>/adapter/         the LoRA adapter
    runs/<run_id>/merged/          merged 16-bit weights, what the model service loads
    runs/<run_id>/eval/            the eval harness's scores of the merged model
    runs/<run_id>/manifest.json    base model and revision, datasets and their SHA-256, example
                                   counts, hyperparameters, code version, losses, checks, timings

The work itself is `modal_backend.training.pipeline.train`, the same function the tests run on
a CPU with a tiny model. This file only says where it runs: the image, the GPU, the Volume.
A run is served once promoted (gated on its eval scores):

    modal run modal_backend/deploy/train_app.py::promote --args "RUN_ID"
    modal run modal_backend/deploy/train_app.py::promote --args "rollback"
    modal run modal_backend/deploy/train_app.py::promote --args "history"
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import modal

from modal_backend.training.config import (
    DEFAULT_BASE_MODEL,
    DEFAULT_EVAL_SET,
    DEFAULT_TRAIN_SET,
    TrainConfig,
    resolve_path,
)

MINUTES = 60  # seconds
HOURS = 60 * MINUTES

APP_NAME = "writing-llama-train"
WEIGHTS_VOLUME = "writing-llama-weights"
"""The Volume the model service reads (runs/, current.json); deploy.py mounts the same one."""
WEIGHTS_DIR = "/weights"
HF_CACHE_VOLUME = "writing-llama-hf-cache"
HF_CACHE_DIR = "/hf-cache"
HF_SECRET = os.environ.get("WRITING_HF_SECRET", "")
"""Optional, as for deploy.py: the name of a Modal Secret holding HF_TOKEN, for a gated base
model (the default base and CoEdIT are public). Read where `modal run` starts."""
GPU = "L40S"
"""48 GB: 4-bit training of the 8B model, then two 16-bit copies for the merge check in turn."""
TRAIN_TIMEOUT_S = 6 * HOURS
PROMOTE_TIMEOUT_S = 10 * MINUTES
REPO_ROOT = Path(__file__).resolve().parents[2]

# ## The image
#
# Dependencies come from the project's own pyproject.toml (the `train` and `eval` extras), so
# torch, transformers and PEFT are the versions the tests run with; on Linux, PyPI's torch wheel
# is the CUDA build. Only pyproject.toml is baked in, so code edits do not rebuild the image: the
# packages are added at container start, TOML files included (the promotion gates).
image = (
    modal.Image.debian_slim(python_version="3.11")
    .add_local_file(REPO_ROOT / "pyproject.toml", "/build/pyproject.toml", copy=True)
    .run_commands("touch /build/README.md", "pip install '/build[train,eval]'")
    .env({"HF_HOME": HF_CACHE_DIR, "TOKENIZERS_PARALLELISM": "false"})
    .add_local_python_source(
        "suggestions", "modal_backend", "eval", ignore=["**/__pycache__/**", "**/*.pyc"]
    )
)

app = modal.App(APP_NAME, image=image)
HF_SECRETS = [modal.Secret.from_name(HF_SECRET, required_keys=["HF_TOKEN"])] if HF_SECRET else []
weights = modal.Volume.from_name(WEIGHTS_VOLUME, create_if_missing=True)
hf_cache = modal.Volume.from_name(HF_CACHE_VOLUME, create_if_missing=True)


# ## Training
#
# The local entrypoint sends the config and the bytes of every local dataset file; the function
# writes them into the run's folder (so the run keeps exactly what it trained and was checked
# on) and trains. Checkpoints are committed to the Volume as they are written: a preempted
# container is restarted with the same run id and resumes from the latest one.
@app.function(
    gpu=GPU,
    timeout=TRAIN_TIMEOUT_S,  # a full run (2 epochs, ~3,500 examples) takes well under this
    volumes={WEIGHTS_DIR: weights, HF_CACHE_DIR: hf_cache},  # outputs; base-model downloads
    secrets=HF_SECRETS,  # a Hub token, only where one is configured
)
def train_remote(config: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
    from modal_backend.training.runtime import hide_broken_torchvision

    hide_broken_torchvision()
    import unsloth  # noqa: F401  before transformers and PEFT, which it patches

    from modal_backend.training.pipeline import train

    run_config = stage_inputs(TrainConfig.model_validate(config), files, Path(WEIGHTS_DIR))
    return train(run_config, Path(WEIGHTS_DIR), on_checkpoint=weights.commit)


@app.local_entrypoint()
def main(
    dataset: str = DEFAULT_TRAIN_SET,
    eval_dataset: str = DEFAULT_EVAL_SET,
    base_model: str = DEFAULT_BASE_MODEL,
    run_id: str = "",
    max_steps: int = -1,
    epochs: float = 2.0,
    learning_rate: float = 2e-4,
    lora_r: int = 16,
    coedit_per_type: int = 1000,
    eval_limit: int = 0,
    run_eval: bool = True,
    no_leak_check: bool = False,
) -> None:
    """`--dataset` and `--eval-dataset` take comma-separated local files or `coedit`;
    `--no-leak-check` trains without the leakage check (recorded; not promotable unforced)."""
    config = build_config(
        dataset=dataset,
        eval_dataset=eval_dataset,
        base_model=base_model,
        run_id=run_id,
        max_steps=max_steps,
        epochs=epochs,
        learning_rate=learning_rate,
        lora_r=lora_r,
        coedit_per_type=coedit_per_type,
        eval_limit=eval_limit,
        run_eval=run_eval,
        leak_check=not no_leak_check,
    )
    files = local_files(config)
    print(f"run {config.run_id}: training on Modal ({GPU}); config:")
    print(json.dumps(config.model_dump(mode="json"), indent=2))
    manifest = train_remote.remote(config.model_dump(mode="json"), files)
    print(json.dumps({k: manifest.get(k) for k in _HEADLINE}, indent=2))
    print(
        f"promote it: modal run modal_backend/deploy/train_app.py::promote --args {config.run_id}"
    )


_HEADLINE = ("run_id", "status", "trainer_backend", "examples", "checks", "eval", "timings")


def build_config(
    *,
    dataset: str,
    eval_dataset: str,
    base_model: str,
    run_id: str,
    max_steps: int,
    epochs: float,
    learning_rate: float,
    lora_r: int,
    coedit_per_type: int,
    eval_limit: int,
    run_eval: bool,
    leak_check: bool = True,
) -> TrainConfig:
    """The entrypoint's flags as one validated config, with the run named here (where git is),
    so a restarted container resumes the same run."""
    from eval.runner import code_version
    from modal_backend.training.manifest import new_run_id

    version = code_version()
    return TrainConfig(
        run_id=run_id or new_run_id(version),
        code_version=version,
        datasets=_list(dataset),
        eval_datasets=_list(eval_dataset),
        base_model=base_model,
        max_steps=max_steps,
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        lora_r=lora_r,
        coedit_per_type=coedit_per_type,
        eval_limit=eval_limit or None,
        run_eval=run_eval,
        leak_check=leak_check,
    )


def local_files(config: TrainConfig) -> dict[str, bytes]:
    """The bytes of every dataset given as a local path, by file name (`coedit` and other
    names that are not local files are left to the container)."""
    files: dict[str, bytes] = {}
    for spec in (*config.datasets, *config.eval_datasets):
        path = resolve_path(spec)
        if not path.is_file():
            continue
        if path.name in files and files[path.name] != path.read_bytes():
            raise ValueError(f"two different dataset files are named {path.name}; rename one")
        files[path.name] = path.read_bytes()
    return files


# ## Promotion on the Volume
#
# `python -m modal_backend.training.promote` against the mounted Volume, committed afterwards,
# so the model service sees the new current.json on its next start.
@app.function(volumes={WEIGHTS_DIR: weights}, timeout=PROMOTE_TIMEOUT_S)
def promote(args: str) -> None:
    from modal_backend.training.promote import main as promote_main

    weights.reload()
    status = promote_main([*shlex.split(args), "--weights", WEIGHTS_DIR])
    weights.commit()
    if status != 0:
        raise SystemExit(status)


def stage_inputs(config: TrainConfig, files: dict[str, bytes], weights_root: Path) -> TrainConfig:
    """Write the uploaded dataset files into `runs/<run_id>/inputs/` and point the config at
    them; names that were not uploaded (`coedit`) stay as they are.

    A complete run is refused before anything is written, and a staged file is never replaced
    by different bytes: the inputs folder is the record of what a run trained and was checked
    on, and a resume must use the same data as the checkpoints it continues.
    """
    from modal_backend.training.pipeline import refuse_finished

    if not config.run_id:
        raise ValueError("the local entrypoint names the run before uploading its inputs")
    run_dir = weights_root / "runs" / config.run_id
    refuse_finished(run_dir)
    inputs = run_dir / "inputs"
    changed = sorted(
        name
        for name, content in files.items()
        if (inputs / name).is_file() and (inputs / name).read_bytes() != content
    )
    if changed:
        raise ValueError(
            f"run {config.run_id} already has different {', '.join(changed)} in {inputs}: a "
            "resumed run must train on the data it started with (leave out --run-id for a new "
            "run)"
        )
    inputs.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if not (inputs / name).is_file():
            (inputs / name).write_bytes(content)

    def staged(specs: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(
            str(inputs / Path(spec).name) if Path(spec).name in files else spec for spec in specs
        )

    return config.model_copy(
        update={"datasets": staged(config.datasets), "eval_datasets": staged(config.eval_datasets)}
    )


def _list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())
