"""The grouped LoRA ops give what vLLM's own CPU ops give, for one adapter, a mix of adapters
and the no-adapter index, with 3- and 4-dimensional weights, written and added, whole and into
a slice; a token without an adapter gets none even where the last slot holds one; and vLLM's
engine uses them once they are in place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("vllm", reason="vLLM is installed by `make test` on Linux x86-64 only")
import torch
from vllm.lora.ops.torch_ops import lora_ops
from vllm.lora.punica_wrapper import punica_cpu

from modal_backend.serving.engines import vllm_cpu_lora

VLLMS = {name: getattr(lora_ops, name) for name in vllm_cpu_lora.REPLACED}
"""vLLM's ops as imported, before any test puts ours in their place."""

INDEX_CASES = {
    "one adapter": [0] * 7,
    "two adapters and none": [0, 1, -1, 1, 0, 0, -1],
    "a single token": [1],
}


def empty_last_slot(weights: torch.Tensor) -> torch.Tensor:
    """Slot -1 as vLLM leaves it with one adapter loaded: empty, so its gather adds nothing."""
    weights[-1] = 0
    return weights


def run_both(
    name: str, build: Callable[[torch.Generator], tuple[Any, ...]], **options: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """The op's output tensor after vLLM's op and after ours, from identical inputs."""
    results = []
    for op in (VLLMS[name], vllm_cpu_lora.OURS[name]):
        inputs, weights, output, indices = build(torch.Generator().manual_seed(7))
        op(inputs, weights, output, indices, **options)
        results.append(output)
    return results[0], results[1]


@pytest.mark.parametrize("indices", INDEX_CASES.values(), ids=INDEX_CASES.keys())
@pytest.mark.parametrize("four_dims", [False, True])
def test_shrink_matches_vllm(indices: list[int], four_dims: bool) -> None:
    def build(g: torch.Generator) -> tuple[Any, ...]:
        weights = empty_last_slot(torch.randn(3, 16, 40, generator=g))
        weights = weights.unsqueeze(1) if four_dims else weights
        inputs = torch.randn(len(indices), 40, generator=g)
        return inputs, weights, torch.zeros(len(indices), 16), torch.tensor(indices)

    theirs, ours = run_both("bgmv_shrink", build, scaling=0.5)
    assert ours.abs().sum() > 0
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("indices", INDEX_CASES.values(), ids=INDEX_CASES.keys())
@pytest.mark.parametrize("add_inputs", [False, True])
def test_expand_matches_vllm(indices: list[int], add_inputs: bool) -> None:
    def build(g: torch.Generator) -> tuple[Any, ...]:
        weights = empty_last_slot(torch.randn(3, 1, 24, 16, generator=g))
        output = torch.randn(len(indices), 20, generator=g)  # narrower: the common columns
        return torch.randn(len(indices), 16, generator=g), weights, output, torch.tensor(indices)

    theirs, ours = run_both("bgmv_expand", build, add_inputs=add_inputs)
    torch.testing.assert_close(ours, theirs)


def test_a_single_product_row_is_broadcast_as_vllm_does() -> None:
    def build(g: torch.Generator) -> tuple[Any, ...]:
        weights = torch.randn(2, 24, 16, generator=g)
        return torch.randn(1, 16, generator=g), weights, torch.zeros(5, 24), torch.tensor([1])

    theirs, ours = run_both("bgmv_expand", build, add_inputs=True)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("indices", INDEX_CASES.values(), ids=INDEX_CASES.keys())
@pytest.mark.parametrize("add_inputs", [False, True])
def test_expand_into_a_slice_matches_vllm(indices: list[int], add_inputs: bool) -> None:
    def build(g: torch.Generator) -> tuple[Any, ...]:
        weights = empty_last_slot(torch.randn(3, 1, 12, 16, generator=g))
        output = torch.randn(len(indices), 40, generator=g)
        return torch.randn(len(indices), 16, generator=g), weights, output, torch.tensor(indices)

    theirs, ours = run_both(
        "bgmv_expand_slice", build, slice_offset=10, slice_size=12, add_inputs=add_inputs
    )
    torch.testing.assert_close(ours, theirs)


def test_a_token_without_an_adapter_gets_none_while_two_are_loaded() -> None:
    """During an adapter swap both slots hold one: vLLM's CPU gather would give slot -1's."""
    weights = torch.randn(2, 16, 40)  # both slots loaded
    inputs, indices = torch.randn(3, 40), torch.tensor([0, -1, 1])
    ours, theirs = torch.zeros(3, 16), torch.zeros(3, 16)
    vllm_cpu_lora.bgmv_shrink(inputs, weights, ours, indices, 1.0)
    VLLMS["bgmv_shrink"](inputs, weights, theirs, indices, 1.0)
    assert torch.equal(ours[1], torch.zeros(16))
    torch.testing.assert_close(theirs[1], inputs[1] @ weights[1].T)  # the wrap-around
    torch.testing.assert_close(ours[[0, 2]], theirs[[0, 2]])
    only_base = torch.zeros(2, 16)
    vllm_cpu_lora.bgmv_shrink(inputs[:2], weights, only_base, torch.tensor([-1, -1]), 1.0)
    assert torch.equal(only_base, torch.zeros(2, 16))


def test_the_ops_are_put_in_place_where_vllm_calls_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in vllm_cpu_lora.REPLACED:  # undone after the test
        monkeypatch.setattr(lora_ops, name, VLLMS[name])
        monkeypatch.setattr(punica_cpu, name, VLLMS[name])
    assert vllm_cpu_lora.use_grouped_lora_ops()
    for name in vllm_cpu_lora.REPLACED:
        assert getattr(lora_ops, name) is getattr(punica_cpu, name) is vllm_cpu_lora.OURS[name]
    # vLLM's per-sequence op (prefill) reaches ours through lora_ops.
    inputs, weights = torch.randn(5, 40), torch.randn(2, 16, 40)
    output = torch.zeros(5, 16)
    lora_ops.sgmv_shrink(
        inputs, weights, output, None, torch.tensor([3, 2]), torch.tensor([1, 0]), 2, 3, 5, 1.0
    )
    expected = torch.cat([inputs[:3] @ weights[1].T, inputs[3:] @ weights[0].T])
    torch.testing.assert_close(output, expected)


def test_changed_vllm_ops_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def changed(inputs: Any, weights: Any, output: Any, indices: Any, scale: float) -> None: ...

    monkeypatch.setattr(lora_ops, "bgmv_shrink", changed)
    monkeypatch.setattr(punica_cpu, "bgmv_shrink", changed)
    assert not vllm_cpu_lora.use_grouped_lora_ops()
    assert lora_ops.bgmv_shrink is changed


def test_vllm_runs_our_plugin_in_each_of_its_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's CPU workers are spawned: only its plugin hook reaches them."""
    from importlib.metadata import entry_points

    ours = [p for p in entry_points(group="vllm.general_plugins") if p.name == "writing_cpu_lora"]
    assert [plugin.load() for plugin in ours] == [vllm_cpu_lora.register]
    calls: list[bool] = []
    monkeypatch.setattr(vllm_cpu_lora, "use_grouped_lora_ops", lambda: calls.append(True))
    vllm_cpu_lora.register()  # this machine is a CPU one
    assert calls == [True]
