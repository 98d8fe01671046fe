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
from modal_backend.serving.engines.transformers_engine import TransformersEngine
from modal_backend.serving.local import serve_in_thread
from modal_backend.serving.registry import Registry, Run
from modal_backend.serving.server import create_app
from modal_backend.training.checks import CHECK_PROMPTS
from modal_backend.training.config import LORA_TARGET_MODULES, TrainConfig
from modal_backend.training.data import TrainingExample, split
from modal_backend.training.pipeline import RunAlreadyComplete, train
from modal_backend.training.promote import main as promote
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
    """The tiny test Llama with an output layer a LoRA can steer (see `trainable_scale`)."""
    from modal_backend.serving.testing import build_tiny_llama

    return build_tiny_llama(folder, trainable_scale=30)


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
    assert manifest["examples"]["trained_on_by_type"] == {"clarity": 1, "grammar": 2, "style": 1}
    assert manifest["examples"]["held_out_scored_by_type"] == {"grammar": 1}
    assert manifest["examples"]["dropped_too_long_by_type"] == {}
    assert manifest["merge_source"] == {
        "model": str(trained.base),
        "revision": manifest["base_model_revision"],
    }
    assert "base_model_revision_reason" not in manifest
    assert manifest["checked"] is True and manifest["scored"] is True
    assert manifest["attempts"][0]["status"] == "complete"
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
    assert checks["first_divergence"] is None and checks["merge_tolerance"] == 0.5
    assert all(prompt["logits_match"] for prompt in checks["prompts"])
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


def test_a_merge_that_left_the_adapter_out_is_caught(trained: Trained, tmp_path: Path) -> None:
    """The merged folder holds the base's weights (tokenizer and generation config intact):
    the check must fail and say where the two models first disagree."""
    import shutil

    from modal_backend.training.checks import MERGE_TOLERANCE, run_checks

    bad = tmp_path / "merged"
    shutil.copytree(trained.run.merged_path, bad)
    for weights in bad.glob("model*.safetensors*"):
        weights.unlink()
    shutil.copy(trained.base / "model.safetensors", bad / "model.safetensors")
    result = run_checks(
        base_model=str(trained.base),
        adapter_dir=trained.run.adapter_path,
        merged_dir=bad,
        device="cpu",
        max_new_tokens=8,
    )
    assert result["passed"] is False and result["merged_matches_adapter"] is False
    first = result["first_divergence"]
    assert first["type"] == CHECK_PROMPTS[0].type and first["position"] == 0
    assert first["tolerated"] is False
    assert max(first["adapter_margin"], first["merged_margin"]) > MERGE_TOLERANCE
    assert all(not prompt["logits_match"] for prompt in result["prompts"])


def test_a_near_tie_is_tolerated_and_a_real_divergence_is_not() -> None:
    import torch

    from modal_backend.training.checks import compare_answer_logits

    adapter = torch.tensor([[5.0, 1.0, 0.0], [2.00, 1.95, 0.0], [0.0, 0.0, 9.0]])
    answer = [0, 0, 2]  # the adapter model's greedy tokens
    near_tie = torch.tensor([[5.0, 1.0, 0.0], [1.96, 1.99, 0.0], [0.0, 0.0, 9.0]])
    tolerated = compare_answer_logits(adapter, near_tie, answer, tolerance=0.5)
    assert tolerated["matches"] is True and tolerated["divergences"] == 1
    assert tolerated["first_divergence"] == {
        "position": 1,
        "adapter_token": 0,
        "merged_token": 1,
        "adapter_margin": 0.05,
        "merged_margin": 0.03,
        "tolerated": True,
    }
    wrong = torch.tensor([[5.0, 1.0, 0.0], [1.96, 1.99, 0.0], [0.0, 6.0, 1.0]])
    caught = compare_answer_logits(adapter, wrong, answer, tolerance=0.5)
    assert caught["matches"] is False and caught["divergences"] == 2
    assert caught["first_divergence"]["position"] == 2  # the first one beyond the tolerance
    assert caught["first_divergence"]["merged_margin"] == 5.0
    assert caught["max_abs_logit_diff"] == 8.0
    same = compare_answer_logits(adapter, adapter, answer, tolerance=0.0)
    assert same["first_divergence"] is None


def test_the_eval_harness_scored_the_run(trained: Trained) -> None:
    evaluation = trained.run.manifest["eval"]
    assert evaluation["folder"] == "eval" and evaluation["limit"] == 2
    assert evaluation["dataset_sha256"] == dataset_sha256(trained.eval_file)
    summary = evaluation["summary"]
    assert summary["examples"] == 2 and summary["model_id"] == trained.run.run_id
    assert "errant_f05" in summary["metrics"]
    saved = json.loads((trained.run.path / "eval" / "summary.json").read_text())
    assert saved["backends"]["custom"]["error_rate"] == summary["error_rate"]


def test_a_run_whose_only_failure_was_scoring_is_completed_by_evaluate(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from modal_backend.training.cli import main as training_cli

    weights = tmp_path / "weights"
    run_id = trained.run.run_id
    shutil.copytree(trained.run.path, weights / "runs" / run_id)
    registry = Registry(weights)
    manifest = registry.run(run_id).manifest
    del manifest["eval"]
    manifest.update(status="failed", failed_stage="eval", scored=False, error="OSError: lost")
    registry.write_manifest(run_id, manifest)
    (weights / "runs" / run_id / "checkpoints" / "checkpoint-40").mkdir(parents=True)
    command = ["evaluate", run_id, "--weights", str(weights), "--dataset", str(trained.eval_file)]

    # The eval folder holds a score with --limit 2: another limit is refused, not mixed in.
    assert training_cli([*command, "--limit", "1"]) == 2
    assert "pass --fresh" in capsys.readouterr().err
    assert registry.run(run_id).manifest["status"] == "failed"

    assert training_cli([*command, "--limit", "1", "--fresh"]) == 0
    rescored = registry.run(run_id).manifest
    assert rescored["status"] == "complete" and rescored["scored"] is True
    assert "error" not in rescored and "failed_stage" not in rescored
    assert rescored["recovered"] == {"from_error": "OSError: lost", "by": "evaluate"}
    assert rescored["eval"]["limit"] == 1 and rescored["eval"]["replaced"].startswith("eval.")
    assert (weights / "runs" / run_id / rescored["eval"]["replaced"] / "summary.json").is_file()
    assert not (weights / "runs" / run_id / "checkpoints").exists()
    assert "cannot pass the promotion gate" in capsys.readouterr().err  # a partial score

    manifest = registry.run(run_id).manifest
    manifest["status"] = "training"
    registry.write_manifest(run_id, manifest)
    assert training_cli(command) == 2
    assert "still training" in capsys.readouterr().err


def test_a_failure_while_scoring_is_recorded_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stages before scoring are stubbed: what matters is what the manifest says."""
    from modal_backend.training import pipeline

    def checked(self: Any) -> dict[str, Any]:
        self.manifest["checks"] = {"passed": True}
        return {"passed": True}

    def scoring_fails(self: Any) -> None:
        raise RuntimeError("the model server died")

    monkeypatch.setattr(pipeline._Run, "_data_and_model", lambda self: None)
    monkeypatch.setattr(pipeline._Run, "_train_and_save", lambda self: None)
    monkeypatch.setattr(pipeline._Run, "_check", checked)
    monkeypatch.setattr(pipeline._Run, "_score", scoring_fails)
    config = TrainConfig(run_id="scoring", base_model="tiny", code_version="test")
    with pytest.raises(RuntimeError, match="server died"):
        train(config, tmp_path)
    manifest = Registry(tmp_path).run("scoring").manifest
    assert manifest["status"] == "failed" and manifest["failed_stage"] == "eval"
    assert manifest["checked"] is True and manifest["scored"] is False


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
        logging_steps=1,
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

    # The train loss covers all six steps, the four before the resume included.
    logged = [entry["loss"] for entry in resumed["losses"]["history"] if "loss" in entry]
    assert len(logged) == 6
    assert resumed["losses"]["train"] == pytest.approx(sum(logged) / 6, rel=1e-4)

    # Both attempts are recorded, and the timings add them up.
    first, second = resumed["attempts"]
    assert first["status"] == "failed" and second["resumed_from"] == "checkpoint-4"
    assert first["timings"] == failed["timings"]
    for key in ("train_s", "total_s"):
        both = first["timings"][key] + second["timings"][key]
        assert resumed["timings"][key] == pytest.approx(both, abs=0.002)
    assert resumed["created"] == failed["created"]


def test_a_resume_with_another_recipe_is_refused(
    inputs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Refused before anything is loaded or written: the check is on the config alone."""
    from modal_backend.training.pipeline import ConfigChanged, check_resumable

    base, train_file, _ = inputs
    config = TrainConfig(
        run_id="pinned", base_model=str(base), datasets=(str(train_file),), max_steps=4
    )
    run_dir = tmp_path / "runs" / "pinned"
    check_resumable(run_dir, config)  # the first attempt records its config
    assert json.loads((run_dir / "train_config.json").read_text())["learning_rate"] == 2e-4
    check_resumable(run_dir, config.model_copy(update={"max_steps": 8, "eval_limit": 3}))
    changed = config.model_copy(update={"learning_rate": 1e-3, "lora_r": 8})
    with pytest.raises(ConfigChanged, match=r"learning_rate: 0\.0002 -> 0\.001; lora_r: 16 -> 8"):
        check_resumable(run_dir, changed)
    with pytest.raises(ConfigChanged, match="started with another config"):
        train(changed, tmp_path)
    assert not (run_dir / "manifest.json").exists()


def test_counts_by_type_leave_out_the_dropped_examples() -> None:
    from modal_backend.training.pipeline import counts_by_type

    examples = [
        TrainingExample("ours:1", "grammar", "a", "b"),
        TrainingExample("ours:2", "grammar", "c", "d"),
        TrainingExample("ours:3", "style", "e", "f"),
    ]
    assert counts_by_type(examples) == {"grammar": 2, "style": 1}
    assert counts_by_type(examples, excluding=["ours:2"]) == {"grammar": 1, "style": 1}
    assert counts_by_type(examples, only={"ours:3"}) == {"style": 1}


def test_a_half_written_checkpoint_is_skipped_for_the_previous_one(tmp_path: Path) -> None:
    from modal_backend.training.trainer import latest_checkpoint

    def checkpoint(step: int, *files: str) -> Path:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in files:
            (folder / name).write_text("{}")
        return folder

    assert latest_checkpoint(tmp_path) is None
    good = checkpoint(2, "adapter_model.safetensors", "trainer_state.json")
    checkpoint(4, "adapter_model.safetensors")  # preempted before trainer_state.json
    checkpoint(6)  # preempted before anything
    torn = checkpoint(8, "adapter_model.safetensors")
    (torn / "trainer_state.json").write_text('{"global_step": 8, "log_hi')
    assert latest_checkpoint(tmp_path) == good
    newest = checkpoint(10, "adapter_model.safetensors", "trainer_state.json")
    assert latest_checkpoint(tmp_path) == newest


def test_the_train_loss_weights_each_logged_value_by_the_steps_it_covers() -> None:
    from modal_backend.training.trainer import train_loss_from_history

    history = [
        {"step": 10.0, "loss": 2.0},
        {"step": 10.0, "eval_loss": 9.0},
        {"step": 20.0, "loss": 1.0},
        {"step": 25.0, "loss": 4.0},
    ]
    assert train_loss_from_history(history) == pytest.approx((20 + 10 + 20) / 25)
    assert train_loss_from_history([{"step": 5.0, "eval_loss": 1.0}]) is None


def test_the_run_is_compared_with_its_stock_base_where_it_was_trained(
    trained: Trained, tmp_path: Path
) -> None:
    """What the Modal job does after scoring: base and merged run on real transformers
    engines behind our server, scored side by side on our eval set and a JFLEG-shaped dev set
    (sentences of ours in JFLEG's layout), recorded for the gate, which then judges them."""
    from modal_backend.training.vs_base import compare_in_process, comparison_sets, judge

    dev = tmp_path / "jfleg" / "dev"
    dev.mkdir(parents=True)
    sources = ["They was late.", "He have two cat."]
    (dev / "dev.src").write_text("\n".join(sources) + "\n")
    for index in range(4):
        (dev / f"dev.ref{index}").write_text("They were late.\nHe has two cats.\n")
    sets = comparison_sets(trained.eval_file, tmp_path / "jfleg")
    assert set(sets) == {"writing-eval", "jfleg-dev"}
    entries = compare_in_process(
        tmp_path / "run",
        base_model=str(trained.base),
        merged=trained.run.path / "merged",
        sets=sets,
        version=trained.run.run_id,
    )
    assert entries["jfleg-dev"]["role"] == "better" and entries["jfleg-dev"]["limit"] is None
    for entry in entries.values():
        for role in ("base", "tuned"):
            summary = json.loads((Path(entry[role]) / "summary.json").read_text())
            assert summary["backends"]["custom"]["examples"] == (
                2 if entry is entries["jfleg-dev"] else len(EVAL_ROWS)
            )
    tuned = json.loads(
        (Path(entries["jfleg-dev"]["tuned"]) / "predictions.jsonl").read_text().splitlines()[0]
    )
    assert tuned["model_id"] == trained.run.run_id
    results, problems = judge({"vs_base": entries})
    assert problems == []
    assert {r.name.split(":")[0] for r in results} == {
        "vs stock base on jfleg-dev",
        "vs stock base on writing-eval",
    }
