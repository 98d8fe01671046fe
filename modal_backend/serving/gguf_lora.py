"""A PEFT LoRA adapter written as a GGUF LoRA, the form llama.cpp loads beside a GGUF base.

llama.cpp's own converter (`convert_lora_to_gguf.py`) is not on PyPI, so this is the same format
written with the `gguf` package: `general.type = adapter`, `adapter.type = lora`,
`adapter.lora.alpha`, and for every adapted base tensor `<gguf name>.lora_a` (rank x in) and
`.lora_b` (out x rank) in fp32. llama.cpp scales the product by `scale * alpha / rank`, as PEFT
does (`alpha / r`), so one adapter file is exact at scale 1 and the stock model at scale 0.

The base's own GGUF says what the adapter must match: its architecture, block count and head
counts. Llama-architecture GGUFs store the query and key rows permuted for llama.cpp's rope
(convert_hf_to_gguf's `LlamaModel.permute`), so the adapter's B rows are permuted the same way;
Qwen2 stores them as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PERMUTED_ARCHITECTURES = frozenset({"llama"})
SUPPORTED_ARCHITECTURES = PERMUTED_ARCHITECTURES | {"qwen2"}
VERSION_KEY = "general.version"


class GgufLoraError(ValueError):
    """The adapter cannot be written for this base; the message says why."""


@dataclass(frozen=True, slots=True)
class BaseShape:
    """What an adapter must match in its GGUF base."""

    architecture: str
    block_count: int
    head_count: int
    head_count_kv: int
    tensor_names: frozenset[str]

    @classmethod
    def read(cls, base_gguf: Path) -> BaseShape:
        from gguf import GGUFReader

        reader = GGUFReader(base_gguf)

        def field(key: str) -> Any:
            if key not in reader.fields:
                raise GgufLoraError(f"{base_gguf.name} has no {key!r}: is it a GGUF model?")
            return reader.fields[key].contents()

        arch = str(field("general.architecture"))
        return cls(
            architecture=arch,
            block_count=int(field(f"{arch}.block_count")),
            head_count=int(field(f"{arch}.attention.head_count")),
            head_count_kv=int(field(f"{arch}.attention.head_count_kv")),
            tensor_names=frozenset(tensor.name for tensor in reader.tensors),
        )


def write_gguf_lora(adapter_dir: Path, base_gguf: Path, out: Path, *, version: str) -> Path:
    """Write the PEFT adapter in `adapter_dir` as a GGUF LoRA for `base_gguf`, at `out`."""
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    if config.get("use_rslora") or config.get("use_dora"):
        raise GgufLoraError("rsLoRA and DoRA adapters have no llama.cpp form")
    base = BaseShape.read(base_gguf)
    if base.architecture not in SUPPORTED_ARCHITECTURES:
        raise GgufLoraError(f"no GGUF LoRA writer for the {base.architecture!r} architecture")
    names = gguf.get_tensor_name_map(_model_arch(base.architecture), base.block_count)
    pairs = _pairs(load_file(adapter_dir / ADAPTER_WEIGHTS))

    writer = gguf.GGUFWriter(None, base.architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
    writer.add_string(VERSION_KEY, version)
    for hf_name, (lora_a, lora_b) in sorted(pairs.items()):
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight",))
        if gguf_name is None or gguf_name not in base.tensor_names:
            raise GgufLoraError(f"{hf_name} has no tensor in {base_gguf.name}")
        lora_b = _as_stored(lora_b, hf_name, base)
        writer.add_tensor(f"{gguf_name}.lora_a", np.ascontiguousarray(lora_a, dtype=np.float32))
        writer.add_tensor(f"{gguf_name}.lora_b", np.ascontiguousarray(lora_b, dtype=np.float32))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    writer.write_header_to_file(partial)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(out)  # a reader never sees half a file
    return out


def adapter_version(adapter_gguf: Path) -> str | None:
    """The version written into a GGUF LoRA, or None for one written elsewhere."""
    from gguf import GGUFReader

    field = GGUFReader(adapter_gguf).fields.get(VERSION_KEY)
    return str(field.contents()) if field is not None else None


def _model_arch(name: str) -> Any:
    import gguf

    return {value: key for key, value in gguf.MODEL_ARCH_NAMES.items()}[name]


def _pairs(tensors: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`model.layers.0.self_attn.q_proj.weight` -> (A, B), from PEFT's saved names."""
    halves: dict[str, dict[str, np.ndarray]] = {}
    for name, tensor in tensors.items():
        for half in ("lora_A", "lora_B"):
            if name.endswith(f".{half}.weight"):
                base = name.removeprefix("base_model.model.").replace(f".{half}.", ".")
                halves.setdefault(base, {})[half] = tensor
                break
        else:
            raise GgufLoraError(f"{name} is not a LoRA A or B tensor (embeddings or norms?)")
    missing = [name for name, half in halves.items() if len(half) != 2]
    if missing:
        raise GgufLoraError(f"{missing[0]} has only one of its LoRA halves")
    return {name: (half["lora_A"], half["lora_B"]) for name, half in halves.items()}


def _as_stored(lora_b: np.ndarray, hf_name: str, base: BaseShape) -> np.ndarray:
    """B's rows in the order the base GGUF stores its output rows."""
    if base.architecture not in PERMUTED_ARCHITECTURES:
        return lora_b
    if hf_name.endswith("q_proj.weight"):
        return _rope_permute(lora_b, base.head_count)
    if hf_name.endswith("k_proj.weight"):
        return _rope_permute(lora_b, base.head_count_kv)
    return lora_b


def _rope_permute(rows: np.ndarray, heads: int) -> np.ndarray:
    """Each head's two rotary halves interleaved, as llama.cpp's Llama GGUFs store q and k."""
    out_features = rows.shape[0]
    return (
        rows.reshape(heads, 2, out_features // heads // 2, *rows.shape[1:])
        .swapaxes(1, 2)
        .reshape(rows.shape)
    )
