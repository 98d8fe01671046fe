"""Export a run's LoRA adapter into the repository (`models/writing-smollm2-lora/` for SmolLM2,
`models/writing-qwen-lora/` for the Qwen stand-in).

The adapter's weights are stored in float16 (half the bytes of the fp32 training copy, within
the size a repository file may take here; vLLM, PEFT and the GGUF LoRA writer upcast them), its
config keeps PEFT's fields with the base named by its public id, and `manifest.json` records
where it came from: the run and its version, the base model, each training file with its
SHA-256, the recipe, the losses, the eval headline, and the SHA-256 of every file shipped
(checked on load by `modal_backend.serving.shipped_adapter`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from modal_backend.serving.local_bases import SMOLLM2, HfBase
from modal_backend.serving.registry import Run
from modal_backend.serving.shipped_adapter import (
    MANIFEST,
    MAX_BYTES,
    SHIPPED_ADAPTER,
    WEIGHT_FILES,
    sha256_file,
)
from modal_backend.serving.weights import SERVED_MODEL_ID


def export_adapter(
    run: Run,
    dest: Path = SHIPPED_ADAPTER,
    *,
    evaluation: dict[str, Any] | None = None,
    base: HfBase = SMOLLM2,
) -> dict[str, Any]:
    """Write the run's adapter and manifest into `dest` (replacing what was there, whole)."""
    import torch
    from safetensors.torch import load_file, save_file

    if not run.has_adapter():
        raise ValueError(f"run {run.run_id} has no complete adapter to export")
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        tensors = load_file(str(run.adapter_path / "adapter_model.safetensors"))
        half = {
            name: t.to(torch.float16) if t.is_floating_point() else t for name, t in tensors.items()
        }
        save_file(half, str(partial / "adapter_model.safetensors"), metadata={"format": "pt"})
        config = json.loads((run.adapter_path / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = base.public_id
        (partial / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        size = sum((partial / name).stat().st_size for name in WEIGHT_FILES)
        if size > MAX_BYTES:
            raise ValueError(
                f"the adapter is {size:,} bytes, over the {MAX_BYTES:,} a repository file may "
                "take: train a smaller rank (--lora-r)"
            )
        manifest = shipped_manifest(run, partial, evaluation, base)
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for item in partial.iterdir():
            item.chmod(0o644)  # safetensors writes owner-only files; these are shared
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(partial, dest)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return manifest


def shipped_manifest(
    run: Run, folder: Path, evaluation: dict[str, Any] | None = None, base: HfBase = SMOLLM2
) -> dict[str, Any]:
    source = run.manifest
    losses = {k: v for k, v in (source.get("losses") or {}).items() if k != "history"}
    history = (source.get("losses") or {}).get("history") or []
    return {
        "model_id": SERVED_MODEL_ID,
        "version": run.version,
        "run_id": run.run_id,
        "code_version": source.get("code_version"),
        "base": {
            "name": base.name,
            "public_id": base.public_id,
            "gguf_file": base.gguf.file_name,
            "gguf_sha256": base.gguf.sha256,
            "from_package": ", ".join(base.gguf.requirements()),
        },
        "training_data": [
            {"path": d.get("path"), "sha256": d.get("sha256"), "rows": d.get("rows")}
            for d in source.get("datasets") or []
        ],
        "examples": source.get("examples"),
        "hyperparameters": source.get("hyperparameters"),
        "trainer_backend": source.get("trainer_backend"),
        "losses": losses,
        "loss_history": [
            {k: e[k] for k in ("step", "loss", "eval_loss") if k in e} for e in history
        ],
        "timings": source.get("timings"),
        "peak_memory": source.get("peak_memory"),
        "device": source.get("device"),
        "eval": evaluation or {},
        "dtype": "float16",
        "files": {name: sha256_file(folder / name) for name in WEIGHT_FILES},
    }
