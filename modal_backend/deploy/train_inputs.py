"""What the Modal training job sends and stages: the entrypoint's flags as one `TrainConfig`,
the bytes of the local dataset files, and their place in the run's folder on the volume.

Plain config and file work, no Modal: `train_app.py` wires it to the GPU function, and the
tests run it on a temporary folder.
"""

from __future__ import annotations

from pathlib import Path

from modal_backend.training.config import TrainConfig, resolve_path

HEADLINE = ("run_id", "status", "trainer_backend", "examples", "checks", "eval", "timings")
"""The manifest fields the entrypoint prints when a run ends."""


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
    from eval.run_folder import code_version
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
