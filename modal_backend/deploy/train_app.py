"""# Fine-tuning our writing model on Modal

    modal run modal_backend/deploy/train_app.py \
        --dataset datasets/train/writing-train-v1.jsonl,coedit

trains a LoRA adapter (r=16 on every attention and MLP projection) on Llama 3.1 8B Instruct in
4-bit with Unsloth, on one GPU, and leaves a versioned run on the weights volume:

    runs/<run_id>/adapter/         the LoRA adapter
    runs/<run_id>/merged/          merged 16-bit weights, what the model service loads
    runs/<run_id>/eval/            the eval harness's scores of the merged model
    runs/<run_id>/vs-base/         the stock base and the run side by side on our eval set and
                                   JFLEG dev (from the JFLEG volume), what the gate compares
    runs/<run_id>/manifest.json    base model and revision, datasets and their SHA-256, example
                                   counts, hyperparameters, code version, losses, checks, timings

The work itself is `modal_backend.training.pipeline.train`, the same function the tests run on
a CPU with a tiny model. This file only says where it runs: the image, the GPU, the volumes.
A run is served once promoted (gated on its eval scores):

    modal run modal_backend/deploy/train_app.py::promote --args "RUN_ID"
    modal run modal_backend/deploy/train_app.py::promote --args "rollback"
    modal run modal_backend/deploy/train_app.py::promote --args "history"

The settings are the deployment's (`modal_backend/deploy/settings.py`): the volumes are the ones
the model service mounts (`WRITING_WEIGHTS_VOLUME` moves both), and `WRITING_HF_SECRET` names a
Modal Secret holding HF_TOKEN for a gated base model (the default base and CoEdIT are public).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import modal

from modal_backend.deploy.images import project_image
from modal_backend.deploy.settings import (
    HF_CACHE_MOUNT,
    JFLEG_MOUNT,
    WEIGHTS_MOUNT,
    DeploySettings,
)
from modal_backend.deploy.train_inputs import HEADLINE, build_config, local_files, stage_inputs
from modal_backend.training.config import (
    DEFAULT_BASE_MODEL,
    DEFAULT_EVAL_SET,
    DEFAULT_TRAIN_SETS,
    TrainConfig,
)

MINUTES = 60  # seconds
HOURS = 60 * MINUTES

SETTINGS = DeploySettings.from_env()
CONTAINER_ENV: dict[str, str | None] = {**SETTINGS.as_env()}
"""The container evaluates this file again and must name the same volumes."""

app = modal.App("writing-llama-train")

# ## The image
#
# The shared recipe (`images.py`) with the `train` and `eval` extras, so torch, transformers,
# PEFT and Unsloth are the versions pyproject.toml pins; on Linux, PyPI's torch wheel is the
# CUDA build. The packages are added at container start, TOML files included (the promotion
# gates), so code edits do not rebuild the image.
image = project_image(
    "train",
    "eval",
    packages=("suggestions", "modal_backend", "eval"),
    env={"HF_HOME": HF_CACHE_MOUNT, "TOKENIZERS_PARALLELISM": "false"},
)

# ## Volumes and secrets
#
# Training creates both volumes on first use; the model service mounts the same two.
weights = modal.Volume.from_name(SETTINGS.weights_volume, create_if_missing=True)
hf_cache = modal.Volume.from_name(SETTINGS.hf_cache_volume, create_if_missing=True)
# JFLEG (CC BY-NC-SA) never enters the image or the repository: the operator puts dev/ and
# test/ on this volume once, `modal volume put writing-jfleg <jfleg>/dev /dev` (and /test).
jfleg = modal.Volume.from_name(SETTINGS.jfleg_volume, create_if_missing=True)
hf_secrets = (
    [modal.Secret.from_name(SETTINGS.hf_secret, required_keys=["HF_TOKEN"])]
    if SETTINGS.hf_secret
    else []
)

GPU = "L40S"
"""48 GB: 4-bit training of the 8B model, then two 16-bit copies for the merge check in turn."""
TRAIN_TIMEOUT_S = 6 * HOURS
"""A full run (2 epochs, ~3,500 examples) takes well under this."""


# ## Training
#
# The local entrypoint sends the config and the bytes of every local dataset file; the function
# writes them into the run's folder (so the run keeps exactly what it trained and was checked
# on) and trains. Checkpoints are committed to the volume as they are written: a preempted
# container is restarted with the same run id and resumes from the latest one.
@app.function(
    image=image,
    gpu=GPU,  # which GPU? one with room for the merge check's two 16-bit copies
    timeout=TRAIN_TIMEOUT_S,  # how long may a run take? hours, with room to spare
    volumes={  # outputs; base-model downloads; JFLEG for the leakage check and the comparison
        WEIGHTS_MOUNT: weights,
        HF_CACHE_MOUNT: hf_cache,
        JFLEG_MOUNT: jfleg,
    },
    secrets=hf_secrets,  # a Hub token, only where one is configured
    env=CONTAINER_ENV,  # the same settings, so the same volumes, inside the container
)
def train_remote(config: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
    from modal_backend.training.runtime import hide_broken_torchvision

    hide_broken_torchvision()
    import unsloth  # noqa: F401  before transformers and PEFT, which it patches

    from modal_backend.training.pipeline import train

    config = {**config, "jfleg_dir": JFLEG_MOUNT}  # compared with its base on JFLEG dev there
    run_config = stage_inputs(TrainConfig.model_validate(config), files, Path(WEIGHTS_MOUNT))
    return train(run_config, Path(WEIGHTS_MOUNT), on_checkpoint=weights.commit)


@app.local_entrypoint()
def main(
    dataset: str = ",".join(DEFAULT_TRAIN_SETS),
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
    print(json.dumps({k: manifest.get(k) for k in HEADLINE}, indent=2))
    print(
        f"promote it: modal run modal_backend/deploy/train_app.py::promote --args {config.run_id}"
    )


# ## Promotion on the volume
#
# `python -m modal_backend.training.promote` against the mounted volume, committed afterwards,
# so the model service sees the new current.json on its next start.
@app.function(
    image=image,
    volumes={WEIGHTS_MOUNT: weights},  # the runs and the pointer it moves; no GPU needed
    timeout=10 * MINUTES,  # it reads manifests and scores and writes one small file
    env=CONTAINER_ENV,  # the same settings, so the same volume, inside the container
)
def promote(args: str) -> None:
    from modal_backend.training.promote import main as promote_main

    weights.reload()
    status = promote_main([*shlex.split(args), "--weights", WEIGHTS_MOUNT])
    weights.commit()
    if status != 0:
        raise SystemExit(status)
