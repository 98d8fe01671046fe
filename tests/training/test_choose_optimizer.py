"""The optimizer a run really uses: an 8-bit one only where a GPU and bitsandbytes both are."""

from __future__ import annotations

import importlib.util

import pytest

from modal_backend.training.trainer import choose_optimizer


def test_a_gpu_without_bitsandbytes_trains_with_adamw_torch_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name)
    )
    optimizer, note = choose_optimizer("adamw_8bit", on_gpu=True)
    assert optimizer == "adamw_torch"
    assert note is not None and "bitsandbytes" in note and "adamw_8bit" in note


def test_a_gpu_with_bitsandbytes_keeps_the_8bit_optimizer(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    spec = object()
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: spec if name == "bitsandbytes" else real(name),
    )
    assert choose_optimizer("adamw_8bit", on_gpu=True) == ("adamw_8bit", None)


@pytest.mark.parametrize(("wanted", "on_gpu"), [("adamw_8bit", False), ("adamw_torch", True)])
def test_the_cpu_and_plain_optimizers_need_no_note(wanted: str, on_gpu: bool) -> None:
    optimizer, note = choose_optimizer(wanted, on_gpu=on_gpu)
    assert optimizer == ("adamw_torch" if not on_gpu else wanted) and note is None
