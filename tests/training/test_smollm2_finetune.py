"""A real, short fine-tune of SmolLM2-135M-Instruct by our pipeline on CPU: the training loss
falls, the run passes its post-training checks, and what our server answers with the new
adapter differs from what the stock base answers. (The full laptop run, `make finetune`, takes
about half an hour and stays out of the tests.)"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from modal_backend.serving.engines.transformers_engine import TransformersEngine
from modal_backend.serving.local_bases import SMOLLM2_MODEL_ID, ensure_smollm2
from modal_backend.serving.registry import Registry
from modal_backend.training.config import DEFAULT_TRAIN_SET, resolve_path
from suggestions import LlamaRequest
from suggestions.prompts import build_messages
from tests.model_service_support import auth, running_service
from tests.training.test_cpu_run import run_training, write_jsonl

pytestmark = pytest.mark.timeout(600)
STEPS = 12
PROBE = LlamaRequest(text="Yesterday he walk to the market and buy three apple.", type="grammar")


def answer(engine: TransformersEngine) -> str:
    with running_service(engine) as url:
        reply = httpx.post(
            f"{url}/v1/chat/completions",
            json={"messages": build_messages(PROBE), "max_tokens": 40},
            headers=auth(),
            timeout=120,
        )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["choices"][0]["message"]["content"])


def test_a_short_run_lowers_the_loss_and_changes_the_served_answer(tmp_path: Path) -> None:
    base = ensure_smollm2(progress=False)
    rows = [json.loads(line) for line in resolve_path(DEFAULT_TRAIN_SET).read_text().splitlines()]
    grammar = [row for row in rows if row["type"] == "grammar"][:24]
    train_file = write_jsonl(tmp_path / "train.jsonl", grammar)
    weights = tmp_path / "weights"
    result = run_training(
        "--weights", weights, "--base-model", "smollm2", "--dataset", train_file,
        "--max-steps", STEPS, "--batch-size", 2, "--grad-accum", 1, "--learning-rate", 1e-3,
        "--lora-r", 8, "--lora-alpha", 16, "--max-seq-length", 256, "--eval-fraction", 0.1,
        "--logging-steps", 1, "--save-steps", 100, "--eval-steps", 100,
        "--check-max-new-tokens", 24, "--no-eval",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    registry = Registry(weights)
    (run_id,) = registry.run_ids()
    run = registry.run(run_id)
    manifest = run.manifest
    assert manifest["status"] == "complete" and manifest["checks"]["passed"] is True
    assert manifest["base_model"] == str(base)
    losses = [entry["loss"] for entry in manifest["losses"]["history"] if "loss" in entry]
    assert len(losses) >= STEPS - 1
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.8 * first, losses

    stock = answer(TransformersEngine.load(base, model_id=SMOLLM2_MODEL_ID))
    tuned = answer(TransformersEngine.load(base, adapter_path=run.adapter_path))
    assert tuned != stock
    assert len(tuned) < 2 * len(PROBE.text), tuned  # an edit of the passage, not a ramble
