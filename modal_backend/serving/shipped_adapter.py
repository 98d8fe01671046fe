"""The fine-tuned adapters that ship in the repository, so a fresh machine serves our own run.

`models/writing-qwen-lora/` holds a LoRA adapter for the Qwen2.5-Coder-1.5B stand-in (served by
llama.cpp as a GGUF LoRA) and `models/writing-smollm2-lora/` one for SmolLM2-135M-Instruct
(served by vLLM): each has its config and weights, a `manifest.json` that says which run made
it, from which training data (with their SHA-256) and how it scored, and the SHA-256 of each
file. `make finetune` regenerates them.
`verified_adapter` checks every file against the manifest before anything serves it: a missing
or damaged adapter is refused with a message that says what to do, and callers fall back.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_ADAPTER = REPO_ROOT / "models" / "writing-smollm2-lora"
SHIPPED_QWEN_ADAPTER = REPO_ROOT / "models" / "writing-qwen-lora"
MANIFEST = "manifest.json"
WEIGHT_FILES = ("adapter_config.json", "adapter_model.safetensors")
MAX_BYTES = 24_000_000
"""An adapter stays small enough to live in git: LoRA weights only, never a merged model. A
rank-8 LoRA on every projection of the 1.5B stand-in is about 18 MB in fp16 (SmolLM2's, 5 MB)."""


class AdapterUnavailable(RuntimeError):
    """The shipped adapter is missing or does not match its manifest; says how to fix it."""


@dataclass(frozen=True)
class ShippedAdapter:
    path: Path
    version: str
    manifest: dict[str, Any]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_adapter(folder: Path = SHIPPED_ADAPTER) -> ShippedAdapter:
    """The adapter in `folder` once every file matches the SHA-256 its manifest records."""
    fix = "run `make finetune` to train and export it again, or restore it with git"
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise AdapterUnavailable(f"no fine-tuned adapter at {folder} (no {MANIFEST}): {fix}")
    try:
        manifest = json.loads(manifest_path.read_text())
        expected = dict(manifest["files"])
        version = str(manifest["version"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AdapterUnavailable(f"{manifest_path} cannot be read ({exc}): {fix}") from exc
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            raise AdapterUnavailable(f"the fine-tuned adapter is missing {path}: {fix}")
        if expected.get(name) != sha256_file(path):
            raise AdapterUnavailable(
                f"{path} does not match the SHA-256 in {manifest_path} (damaged, or a Git LFS "
                f"pointer instead of the file): {fix}"
            )
    return ShippedAdapter(folder, version, manifest)
