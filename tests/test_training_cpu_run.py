"""A real training run on CPU: tiny Llama -> LoRA SFT -> adapter + merged -> checks -> eval
harness -> manifest; then the run is served over loopback HTTP, streams what it learned, and
goes through the promotion gate.

Training runs as the command an ML engineer types (`python -m modal_backend.training train`),
in its own process, as it must (see `modal_backend.training.runtime`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from eval.data import dataset_sha256
from modal_backend.engines.transformers_engine import TransformersEngine
from modal_backend.local_server import serve_in_thread
from modal_backend.promote import main as promote
from modal_backend.registry import Registry, Run
from modal_backend.server import create_app
from modal_backend.training.checks import CHECK_PROMPTS
from modal_backend.training.config import LORA_TARGET_MODULES, TrainConfig
from modal_backend.training.data import TrainingExample, split
from modal_backend.training.pipeline import RunAlreadyComplete, train
from suggestions import LlamaResponse, SuggestionService, TextDelta
from suggestions.backends import ChatBackend

API_KEY = "training-test-key"
ANSWERS = {
    "grammar": "She went to school yesterday and bought some books.",
    "clarity": "To win, the team had to practise daily.",
    "style": "The sunset was beautiful.",
}
HELD_OUT = {
    "id": "held",
    "type": "grammar",
    "source": "They was late.",
    "references": ["They were late."],
}
TRAIN_ROWS = [
    HELD_OUT,  # the seeded split holds out the first row; a test below checks that
    *(
        {"id": f"check-{r.type}", "type": r.type, "source": r.text, "references": [ANSWERS[r.type]]}
        for r in CHECK_PROMPTS
    ),
    {
        "id": "extra",
        "type": "grammar",
        "source": "He have two cat.",
        "references": ["He has two cats."],
    },
]
EVAL_ROWS = [
    {
        "id": "e-1",
        "type": "grammar",
        "source": "The committee have reviewed the proposal yesterday.",
        "references": ["The committee reviewed the proposal yesterday."],
    },
    {
        "id": "e-2",
        "type": "style",
        "source": "Rain fell and fell on the old old bridge.",
        "references": ["Rain fell steadily on the old bridge."],
    },
]
SMOKE = {
    "--max-steps": 100,
    "--batch-size": 4,
    "--grad-accum": 1,
    "--learning-rate": 1e-2,
    "--eval-fraction": 0.2,
    "--save-steps": 40,
    "--eval-steps": 40,
    "--logging-steps": 20,
    "--check-max-new-tokens": 32,
    "--max-seq-length": 512,
    "--eval-limit": 2,
}
"""Enough steps for the tiny model to learn its four answers by heart (about 5 s on one core)."""


def trainable_tiny_llama(folder: Path) -> Path:
    """The tiny test Llama with an output layer LoRA can steer: its random output rows are
    scaled up (a LoRA on the projections cannot move the final norm) and the end-of-turn and
    end-of-text rows, which the tiny model pins at zero, get random values like any token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modal_backend.tiny_llama import build_tiny_llama

    build_tiny_llama(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
        for token in ("<|eot_id|>", "<|end_of_text|>"):
            row = tokenizer.convert_tokens_to_ids(token)
            model.lm_head.weight[row] = torch.randn(model.config.hidden_size, generator=generator)
    model.save_pretrained(folder)
    return folder


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def run_training(*args: object) -> subprocess.CompletedProcess[str]:
    """`python -m modal_backend.training train ...` on one core, with the Hub switched off."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [sys.executable, "-m", "modal_backend.training", "train", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def smoke_flags() -> list[str]:
    return [str(part) for flag, value in SMOKE.items() for part in (flag, value)]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny matrices: one thread is faster than two fighting over a shared machine's cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass(frozen=True)
class Trained:
    base: Path
    train_file: Path
    eval_file: Path
    weights: Path
    run: Run


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("training-inputs")
    return (
        trainable_tiny_llama(root / "base"),
        write_jsonl(root / "ours.jsonl", TRAIN_ROWS),
        write_jsonl(root / "eval.jsonl", EVAL_ROWS),
    )


@pytest.fixture(scope="module")
def trained(inputs: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Trained:
    base, train_file, eval_file = inputs
    weights = tmp_path_factory.mktemp("weights")
    result = run_training(
        "--weights", weights, "--base-model", base, "--dataset", train_file,
        "--eval-dataset", eval_file, *smoke_flags(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    registry = Registry(weights)
    (run_id,) = registry.run_ids()
    return Trained(base, train_file, eval_file, weights, registry.run(run_id))


def test_the_seeded_split_trains_on_every_check_prompt() -> None:
    examples = [
        TrainingExample(f"ours:{row['id']}", row["type"], row["source"], row["references"][0])  # type: ignore[arg-type]
        for row in TRAIN_ROWS
    ]
    _, held = split(examples, float(SMOKE["--eval-fraction"]), seed=TrainConfig().seed)
    assert [example.id for example in held] == ["ours:held"]


def test_the_run_trains_on_cpu_and_records_everything_in_its_manifest(trained: Trained) -> None:
    manifest, run = trained.run.manifest, trained.run
    assert manifest["status"] == "complete", manifest.get("error")
    assert manifest["version"] == run.run_id
    assert manifest["trainer_backend"] in {"peft", "unsloth-cpu"}
    assert manifest["base_model"] == str(trained.base)
    assert manifest["base_model_revision"].startswith("sha256:")
    assert manifest["code_version"]
    (dataset,) = manifest["datasets"]
    assert dataset["sha256"] == dataset_sha256(trained.train_file)
    assert dataset["by_type"] == {"clarity": 1, "grammar": 3, "style": 1}
    assert manifest["examples"]["train"] == {"clarity": 1, "grammar": 2, "style": 1}
    assert manifest["examples"]["held_out"] == {"grammar": 1}
    assert manifest["eval_sets"][0]["sha256"] == dataset_sha256(trained.eval_file)
    assert manifest["leakage"]["leaks"] == 0
    lora = manifest["hyperparameters"]["lora"]
    assert lora["r"] == 16 and lora["target_modules"] == list(LORA_TARGET_MODULES)
    assert manifest["training"] == {"optimizer": "adamw_torch", "precision": "fp32"}
    losses = manifest["losses"]
    assert losses["steps"] == 100 and losses["eval"] is not None
    logged = [entry["loss"] for entry in losses["history"] if "loss" in entry]
    assert logged[-1] < logged[0] / 4  # it learned
    assert set(manifest["timings"]) >= {"data_s", "load_s", "train_s", "save_s", "checks_s"}
    assert {"eval_s", "total_s"} <= set(manifest["timings"])
    assert run.has_adapter() and run.has_merged()
    assert not (run.path / "checkpoints").exists()  # removed once the run is complete


def test_the_merged_model_matches_the_adapter_and_stops_at_end_of_turn(trained: Trained) -> None:
    checks = trained.run.manifest["checks"]
    assert checks["passed"] and checks["merged_matches_adapter"]
    assert checks["stops_at_end_of_turn"] and checks["generation_config_stops_at_end_of_turn"]
    assert [p["adapter_text"] for p in checks["prompts"]] == [
        ANSWERS[r.type] for r in CHECK_PROMPTS
    ]
    generation = json.loads((trained.run.merged_path / "generation_config.json").read_text())
    assert 0 in generation["eos_token_id"]  # <|eot_id|> is token 0 of the tiny vocabulary


def test_the_checks_command_gives_the_same_verdict(trained: Trained, tmp_path: Path) -> None:
    """What runs in a fresh process after an Unsloth run (Unsloth patches the Llama classes)."""
    from modal_backend.training.checks import main as checks_command

    out = tmp_path / "checks.json"
    run = trained.run
    argv = ["--base", str(trained.base), "--adapter", str(run.adapter_path)]
    argv += ["--merged", str(run.merged_path), "--max-new-tokens", "32", "--out", str(out)]
    assert checks_command(argv) == 0
    result = json.loads(out.read_text())
    assert result["passed"] is True
    assert result["prompts"] == run.manifest["checks"]["prompts"]


def test_the_eval_harness_scored_the_run(trained: Trained) -> None:
    evaluation = trained.run.manifest["eval"]
    assert evaluation["folder"] == "eval" and evaluation["limit"] == 2
    assert evaluation["dataset_sha256"] == dataset_sha256(trained.eval_file)
    summary = evaluation["summary"]
    assert summary["examples"] == 2 and summary["model_id"] == trained.run.run_id
    assert "errant_f05" in summary["metrics"]
    saved = json.loads((trained.run.path / "eval" / "summary.json").read_text())
    assert saved["backends"]["custom"]["error_rate"] == summary["error_rate"]


def answer(engine: TransformersEngine, request: Any) -> tuple[str, LlamaResponse]:
    """Serve `engine` on loopback and stream one suggestion through our client."""

    async def ask(url: str) -> tuple[str, LlamaResponse]:
        backend = ChatBackend(
            name="custom", base_url=url, model=engine.model_id, label="run", api_key=API_KEY
        )
        service = SuggestionService({"custom": backend}, usage=None)
        deltas: list[str] = []
        final = None
        async for item in service.stream(request, backend="custom"):
            if isinstance(item, TextDelta):
                deltas.append(item.text)
            else:
                final = item
        await service.aclose()
        assert final is not None
        return "".join(deltas), final

    with serve_in_thread(create_app(engine, api_key=API_KEY)) as url:
        health = httpx.get(f"{url}/health").json()
        assert health["version"] == engine.version
        return asyncio.run(ask(url))


def test_the_saved_run_is_served_and_streams_what_it_learned(trained: Trained) -> None:
    run = trained.run
    engine = TransformersEngine.load(run.merged_path, model_id=run.run_id, version=run.version)
    request = CHECK_PROMPTS[0]
    streamed, response = answer(engine, request)
    assert streamed == ANSWERS["grammar"]
    assert response.revised_text == ANSWERS["grammar"]
    assert response.model_id == run.run_id
    assert {(s.original, s.replacement) for s in response.suggestions} >= {("go", "went")}


def test_base_plus_adapter_serves_the_same_answer(trained: Trained) -> None:
    engine = TransformersEngine.load(
        trained.base, adapter_path=trained.run.adapter_path, model_id="adapter"
    )
    streamed, _ = answer(engine, CHECK_PROMPTS[1])
    assert streamed == ANSWERS["clarity"]


def test_the_gate_refuses_the_tiny_run_unless_forced(
    trained: Trained, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id, weights = trained.run.run_id, str(trained.weights)
    assert promote([run_id, "--weights", weights]) == 1
    assert "errant_f05" in capsys.readouterr().out
    registry = Registry(weights)
    assert registry.current_id() is None
    assert promote([run_id, "--weights", weights, "--force", "--reason", "smoke test"]) == 0
    assert registry.current_id() == run_id
    (entry,) = registry.history()
    assert entry["forced"] is True and entry["reason"] == "smoke test"


def test_a_complete_run_is_not_trained_over(trained: Trained) -> None:
    config = TrainConfig(run_id=trained.run.run_id, base_model=str(trained.base))
    with pytest.raises(RunAlreadyComplete, match="already complete"):
        train(config, trained.weights)


def test_a_failed_run_resumes_from_its_latest_checkpoint(
    inputs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """`train` called directly, as the Modal function calls it, twice with one run id."""
    from modal_backend.training.checks import ChecksFailed

    base, train_file, eval_file = inputs
    config = TrainConfig(
        run_id="resumable",
        base_model=str(base),
        datasets=(str(train_file),),
        eval_datasets=(str(eval_file),),
        max_steps=4,
        save_steps=2,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        max_seq_length=512,
        check_max_new_tokens=1,  # too few to reach <|eot_id|>: the checks fail
        run_eval=False,
    )
    commits: list[str] = []
    with pytest.raises(ChecksFailed, match="stops at end of turn"):
        train(config, tmp_path, on_checkpoint=lambda: commits.append("commit"))
    run_dir = tmp_path / "runs" / "resumable"
    assert (run_dir / "checkpoints" / "checkpoint-4").is_dir()  # kept: the run did not finish
    failed = json.loads((run_dir / "manifest.json").read_text())
    assert failed["status"] == "failed" and "ChecksFailed" in failed["error"]
    assert len(commits) >= 3  # each checkpoint, the saved weights, the final manifest

    with pytest.raises(ChecksFailed):
        train(config.model_copy(update={"max_steps": 6}), tmp_path)
    resumed = json.loads((run_dir / "manifest.json").read_text())
    assert resumed["resumed_from"] == "checkpoint-4"
    assert resumed["losses"]["steps"] == 6
