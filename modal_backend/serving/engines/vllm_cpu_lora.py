"""LoRA on vLLM's CPU path as one matrix product per adapter in the batch.

vLLM's CPU LoRA ops (`vllm.lora.ops.torch_ops`) gather a full copy of the adapter's matrices
for every token (`weights[indices]`) and multiply token by token. A 2,048-token prefill step
copies gigabytes that way: on this project's two cores the gather made a burst of adapter
requests about ten times slower than the stock base, and decoding at a batch of 8 about twice as
slow. Here the tokens are grouped by adapter instead, and each group is multiplied by its
adapter's matrices at once: the same sums, without the copies. A token without an adapter
(index -1) gets none, as on a GPU; vLLM's CPU ops gave it the last adapter slot's.

`use_grouped_lora_ops()` puts these ops in place of vLLM's. vLLM spawns its CPU workers afresh,
so it runs there through vLLM's plugin hook (`register`, named in pyproject.toml's
`vllm.general_plugins`); `VLLM_PLUGINS=none` keeps vLLM's own ops. Each op does what the op it
replaces does: the product for every token, written or added into the output columns it names.
`tests/serving/test_vllm_cpu_lora.py` checks them against vLLM's own ops.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

REPLACED = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")
"""vLLM's per-token ops; its per-sequence ops (`sgmv_*`) expand their indices and call these."""


def products(inputs: Any, weights: Any, indices: Any, dtype: Any) -> Any:
    """`inputs[t] @ weights[indices[t]].T` for every token t, one product per adapter used.

    `weights` is `[adapters, out, in]` or `[adapters, 1, out, in]`. Index -1 means no adapter
    and gives zeros, as vLLM's GPU kernels skip it; vLLM's CPU gather reads it as the last slot,
    which holds an adapter while a second one is loaded (during our adapter swaps).
    """
    import torch

    if weights.dim() == 4:
        weights = weights.squeeze(1)
    x = inputs.to(dtype)
    used = [index for index in torch.unique(indices).tolist() if index >= 0]
    if len(used) == 1 and len(indices) and bool((indices == used[0]).all()):
        return x @ weights[used[0]].to(dtype).T
    out = x.new_zeros((x.shape[0], weights.shape[1]))
    for index in used:
        rows = indices == index
        out[rows] = x[rows] @ weights[index].to(dtype).T
    return out


def bgmv_shrink(
    inputs: Any,
    lora_b_weights: Any,
    output_tensor: Any,
    lora_indices_tensor: Any,
    scaling: float = 1.0,
) -> None:
    """Each token's input times its adapter's A matrix, scaled, into the first columns."""
    outputs = products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(
    inputs: Any,
    lora_b_weights: Any,
    output_tensor: Any,
    lora_indices_tensor: Any,
    add_inputs: bool = True,
) -> None:
    """Each token's shrunk input times its adapter's B matrix, into (or added to) the output's
    columns the two share; a single product row is broadcast to every output row."""
    outputs = products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    rows = 1 if outputs.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    width = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :width] += outputs[:rows, :width]
    else:
        output_tensor[:, :width] = outputs[:rows, :width]


def bgmv_expand_slice(
    inputs: Any,
    lora_b_weights: Any,
    output_tensor: Any,
    lora_indices_tensor: Any,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    """As `bgmv_expand`, into the columns `slice_offset` to `slice_offset + slice_size`."""
    outputs = products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    columns = slice(slice_offset, slice_offset + slice_size)
    if add_inputs:
        output_tensor[:, columns] += outputs
    else:
        output_tensor[:, columns] = outputs


OURS: dict[str, Callable[..., None]] = {
    "bgmv_shrink": bgmv_shrink,
    "bgmv_expand": bgmv_expand,
    "bgmv_expand_slice": bgmv_expand_slice,
}


def use_grouped_lora_ops() -> bool:
    """Put the grouped ops in place of vLLM's CPU ones; False (and a warning) where vLLM's ops
    are not the ones these were written against, which are then left as they are."""
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    for name in REPLACED:
        theirs = getattr(lora_ops, name, None)
        if theirs is OURS[name]:
            continue
        if theirs is None or _parameters(theirs) != _parameters(OURS[name]):
            logger.warning("vLLM's CPU LoRA op %s changed: its per-token gather stays", name)
            return False
    for name in REPLACED:
        setattr(lora_ops, name, OURS[name])  # what lora_ops' sgmv_* ops call
        setattr(punica_cpu, name, OURS[name])  # what the CPU wrapper imported by name
    return True


def _parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


def register() -> None:
    """vLLM's plugin hook, run in each of its processes: the grouped ops on a CPU only."""
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        use_grouped_lora_ops()
