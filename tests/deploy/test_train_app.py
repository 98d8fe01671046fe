"""The Modal training job as declared (no Modal account needed), the run's defaults, and the
training process's environment."""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import modal
import pytest
from pydantic import ValidationError

import modal_backend.deploy.train_app as job
from modal_backend.deploy.settings import HF_CACHE_MOUNT, JFLEG_MOUNT, WEIGHTS_MOUNT
from modal_backend.deploy.train_inputs import build_config, local_files, stage_inputs
from modal_backend.training.config import (
    DEFAULT_BASE_MODEL,
    LORA_TARGET_MODULES,
    TrainConfig,
)
from modal_backend.training.manifest import folder_fingerprint, new_run_id


@pytest.fixture
def evaluate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ModuleType]]:
    """Evaluate a deploy module again under some `WRITING_*` variables, as `modal run` would;
    afterwards each one is evaluated again under the environment as it was."""
    evaluated: list[ModuleType] = []

    def under(name: str, **env: str) -> ModuleType:
        for variable in [variable for variable in os.environ if variable.startswith("WRITING_")]:
            monkeypatch.delenv(variable)
        for variable, value in env.items():
            monkeypatch.setenv(variable, value)
        evaluated.append(importlib.reload(importlib.import_module(name)))
        return evaluated[-1]

    yield under
    monkeypatch.undo()
    for module in evaluated:
        importlib.reload(module)


def test_training_runs_on_a_gpu_with_the_weights_volume_mounted() -> None:
    spec = job.train_remote._spec_
    assert spec.gpus == job.GPU == "L40S"
    assert repr(spec.volumes[WEIGHTS_MOUNT]) == repr(job.weights)
    assert "writing-llama-weights" in repr(job.weights)
    assert repr(spec.volumes[HF_CACHE_MOUNT]) == repr(job.hf_cache)
    assert job.TRAIN_TIMEOUT_S == 6 * 60 * 60
    assert isinstance(job.main, modal.app.LocalEntrypoint)
    assert job.promote._spec_.gpus is None
    assert repr(job.promote._spec_.volumes[WEIGHTS_MOUNT]) == repr(job.weights)


def test_training_mounts_the_jfleg_volume_for_the_comparison_with_the_base(
    evaluate: Callable[..., ModuleType],
) -> None:
    """JFLEG stays out of the image: training reads it from the operator's volume."""
    job = evaluate("modal_backend.deploy.train_app", WRITING_JFLEG_VOLUME="jfleg-staging")
    assert "jfleg-staging" in repr(job.jfleg)
    assert repr(job.train_remote._spec_.volumes[JFLEG_MOUNT]) == repr(job.jfleg)


def test_training_writes_where_the_deployment_reads(evaluate: Callable[..., ModuleType]) -> None:
    """One setting names each volume for both apps, mounted at the same path in both."""
    env = {"WRITING_WEIGHTS_VOLUME": "weights-staging", "WRITING_HF_CACHE_VOLUME": "hub-staging"}
    train = evaluate("modal_backend.deploy.train_app", **env)
    serving = evaluate("modal_backend.deploy.serving_app", **env)
    assert "weights-staging" in repr(train.weights)
    assert repr(train.weights) == repr(serving.weights_volume)
    assert "hub-staging" in repr(train.hf_cache)
    assert repr(train.hf_cache) == repr(serving.hf_cache_volume)
    model = serving.WritingModel().serve.info()
    assert {path: mount.name for path, mount in model.volumes.items()} == {
        WEIGHTS_MOUNT: "weights-staging",
        HF_CACHE_MOUNT: "hub-staging",
    }
    # The training container evaluates the file again and must name the same volumes.
    assert train.CONTAINER_ENV["WRITING_WEIGHTS_VOLUME"] == "weights-staging"


def test_both_apps_build_on_the_one_image_recipe(
    evaluate: Callable[..., ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modal_backend.deploy import images

    built: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    recipe = images.project_image

    def spy(*extras: str, packages: tuple[str, ...], **kwargs: Any) -> modal.Image:
        built.append((extras, packages))
        return recipe(*extras, packages=packages, **kwargs)

    monkeypatch.setattr(images, "project_image", spy)
    evaluate("modal_backend.deploy.train_app")
    evaluate("modal_backend.deploy.serving_app", WRITING_UNSLOTH="0")
    assert built == [
        (("train", "eval"), ("suggestions", "modal_backend", "eval")),
        (("hf",), ("modal_backend", "suggestions")),
        (("app",), ("app", "suggestions", "modal_backend", "eval")),
        ((), ("modal_backend",)),
    ]


def test_the_entrypoint_names_the_run_and_validates_its_flags() -> None:
    flags = {
        "dataset": "datasets/train/writing-train-v1.jsonl, coedit",
        "eval_dataset": "datasets/eval/writing-eval-v1.jsonl",
        "base_model": DEFAULT_BASE_MODEL,
        "run_id": "",
        "max_steps": -1,
        "epochs": 2.0,
        "learning_rate": 2e-4,
        "lora_r": 16,
        "coedit_per_type": 1000,
        "eval_limit": 0,
        "run_eval": True,
    }
    config = build_config(**flags)  # type: ignore[arg-type]
    assert config.run_id and re.fullmatch(r"\d{8}-\d{6}-[\w.-]+", config.run_id)
    assert config.code_version
    assert config.datasets == ("datasets/train/writing-train-v1.jsonl", "coedit")
    assert config.eval_limit is None
    with pytest.raises(ValidationError):
        build_config(**{**flags, "max_steps": 0})  # type: ignore[arg-type]


def test_local_datasets_are_uploaded_and_staged_in_the_run_folder(tmp_path: Path) -> None:
    ours = tmp_path / "ours.jsonl"
    ours.write_text('{"id": "a"}\n')
    config = TrainConfig(run_id="r1", datasets=(str(ours), "coedit"), eval_datasets=(str(ours),))
    files = local_files(config)
    assert files == {"ours.jsonl": b'{"id": "a"}\n'}
    staged = stage_inputs(config, files, tmp_path / "volume")
    inputs = tmp_path / "volume" / "runs" / "r1" / "inputs"
    assert staged.datasets == (str(inputs / "ours.jsonl"), "coedit")
    assert staged.eval_datasets == (str(inputs / "ours.jsonl"),)
    assert (inputs / "ours.jsonl").read_bytes() == files["ours.jsonl"]


def test_a_complete_run_is_refused_before_its_inputs_are_touched(tmp_path: Path) -> None:
    from modal_backend.training.pipeline import RunAlreadyComplete

    ours = tmp_path / "ours.jsonl"
    ours.write_text('{"id": "a"}\n')
    config = TrainConfig(run_id="done", datasets=(str(ours),), eval_datasets=())
    volume = tmp_path / "volume"
    stage_inputs(config, local_files(config), volume)
    run_dir = volume / "runs" / "done"
    (run_dir / "manifest.json").write_text('{"status": "complete"}')
    ours.write_text('{"id": "b"}\n')  # edited since
    with pytest.raises(RunAlreadyComplete):
        stage_inputs(config, local_files(config), volume)
    assert (run_dir / "inputs" / "ours.jsonl").read_text() == '{"id": "a"}\n'


def test_a_staged_input_is_never_replaced_by_different_bytes(tmp_path: Path) -> None:
    ours = tmp_path / "ours.jsonl"
    ours.write_text('{"id": "a"}\n')
    config = TrainConfig(run_id="r1", datasets=(str(ours),), eval_datasets=())
    volume = tmp_path / "volume"
    staged = stage_inputs(config, local_files(config), volume)
    assert stage_inputs(config, local_files(config), volume) == staged  # a restart
    ours.write_text('{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"already has different ours\.jsonl"):
        stage_inputs(config, local_files(config), volume)
    assert (volume / "runs" / "r1" / "inputs" / "ours.jsonl").read_text() == '{"id": "a"}\n'


def test_the_default_recipe() -> None:
    config = TrainConfig()
    assert config.base_model == "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit"
    assert config.load_in_4bit and config.lora_r == 16
    assert config.target_modules == LORA_TARGET_MODULES
    assert set(LORA_TARGET_MODULES) == {
        *("q_proj", "k_proj", "v_proj", "o_proj"),
        *("gate_proj", "up_proj", "down_proj"),
    }
    assert 0 < config.eval_fraction < 0.5  # an evaluation split
    assert config.scoring_dataset == "datasets/eval/writing-eval-v1.jsonl"


def test_run_ids_sort_by_time_and_name_the_code() -> None:
    from datetime import UTC, datetime

    when = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)
    assert new_run_id("9f2df71-dirty", when) == "20261126-153000-9f2df71-dirty"
    assert new_run_id("", when) == "20261126-153000"


def test_an_unresolvable_base_revision_is_recorded_with_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import huggingface_hub

    from modal_backend.training.manifest import start_manifest

    def offline(self: object, *args: object, **kwargs: object) -> None:
        raise ConnectionError("no route to the Hub")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", offline)
    manifest = start_manifest(TrainConfig(), "r1", "abc123")
    assert manifest["base_model_revision"] is None
    assert "ConnectionError: no route to the Hub" in manifest["base_model_revision_reason"]
    pinned = start_manifest(TrainConfig(base_revision="deadbeef"), "r1", "abc123")
    assert pinned["base_model_revision"] == "deadbeef"
    assert "recorded as requested" in pinned["base_model_revision_reason"]


def test_a_local_base_model_is_fingerprinted_by_its_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    first = folder_fingerprint(tmp_path)
    (tmp_path / "config.json").write_text('{"a": 1}')
    assert folder_fingerprint(tmp_path) != first


def test_a_broken_torchvision_is_hidden_from_a_fresh_training_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PyPI torchvision beside the CPU torch fails like this when its operators load."""
    import importlib
    import sys
    import types

    from modal_backend.training.runtime import TrainingEnvironmentError, hide_broken_torchvision

    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "ops.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with monkeypatch.context() as patch:  # too late once transformers is imported
            loaded = sys.modules.get("transformers") or types.ModuleType("transformers")
            patch.setitem(sys.modules, "transformers", loaded)
            with pytest.raises(TrainingEnvironmentError, match="fresh process"):
                hide_broken_torchvision()
        monkeypatch.delitem(sys.modules, "transformers", raising=False)  # a fresh process
        assert hide_broken_torchvision() is True
        with pytest.raises(ImportError):
            importlib.import_module("torchvision")
        assert hide_broken_torchvision() is True  # idempotent
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "torchvision"]:
            del sys.modules[name]
