"""The fine-tuned adapter shipped in the repository: small, whole, and made from the training
data committed beside it; a damaged or missing copy is refused in words, and the reviewer app
then falls back to the stand-in instead of failing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from eval.data import dataset_sha256
from modal_backend.serving import shipped_adapter
from modal_backend.serving.shipped_adapter import (
    MAX_BYTES,
    SHIPPED_ADAPTER,
    WEIGHT_FILES,
    AdapterUnavailable,
    verified_adapter,
)
from modal_backend.training.config import DEFAULT_TRAIN_SETS, REPO_ROOT


def test_the_shipped_adapter_checks_out_and_is_small() -> None:
    adapter = verified_adapter()
    assert adapter.path == SHIPPED_ADAPTER
    assert sum((SHIPPED_ADAPTER / name).stat().st_size for name in WEIGHT_FILES) <= MAX_BYTES
    config = json.loads((SHIPPED_ADAPTER / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert adapter.manifest["model_id"] == "writing-llama"
    assert adapter.manifest["base"]["name"] == "smollm2"


def test_its_manifest_matches_the_committed_training_data() -> None:
    recorded = {d["path"]: d["sha256"] for d in verified_adapter().manifest["training_data"]}
    assert set(recorded) == set(DEFAULT_TRAIN_SETS), "retrain (make finetune) on the default set"
    for path, sha256 in recorded.items():
        assert dataset_sha256(REPO_ROOT / path) == sha256, (
            f"{path} changed since the shipped adapter was trained: run `make finetune`"
        )


def copy_of_adapter(tmp_path: Path) -> Path:
    folder = tmp_path / "adapter"
    shutil.copytree(SHIPPED_ADAPTER, folder)
    return folder


def test_a_damaged_adapter_is_refused(tmp_path: Path) -> None:
    folder = copy_of_adapter(tmp_path)
    weights = folder / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(AdapterUnavailable, match=r"does not match the SHA-256.*make finetune"):
        verified_adapter(folder)


@pytest.mark.parametrize("missing", ["manifest.json", "adapter_model.safetensors"])
def test_a_missing_file_is_refused(tmp_path: Path, missing: str) -> None:
    folder = copy_of_adapter(tmp_path)
    (folder / missing).unlink()
    with pytest.raises(AdapterUnavailable, match="make finetune"):
        verified_adapter(folder)


def test_the_app_falls_back_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.__main__ import _smollm2_server

    real = shipped_adapter.verified_adapter
    monkeypatch.setattr(shipped_adapter, "verified_adapter", lambda: real(tmp_path / "gone"))
    assert _smollm2_server(tmp_path) is None
    said = capsys.readouterr().out
    assert "no fine-tuned adapter" in said and "Qwen stand-in instead" in said


def test_the_demo_falls_back_to_the_stock_stand_in_without_the_qwen_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.__main__ import _qwen_adapter

    monkeypatch.setattr(shipped_adapter, "SHIPPED_QWEN_ADAPTER", tmp_path / "gone")
    assert _qwen_adapter() is None
    said = capsys.readouterr().out
    assert "no fine-tuned adapter" in said and "stock stand-in instead" in said
