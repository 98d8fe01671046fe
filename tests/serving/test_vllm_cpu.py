"""vLLM's CPU environment: both cores for the model on a two-core machine, one kept for the
scheduler on a bigger one, and whatever the operator set left alone."""

from __future__ import annotations

import os

import pytest

from modal_backend.serving.engines import vllm_cpu

RESERVED = "VLLM_CPU_NUM_OF_RESERVED_CPU"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RESERVED, raising=False)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)


@pytest.mark.parametrize(("cores", "reserved"), [(1, "0"), (2, "0"), (3, None), (16, None)])
def test_few_cores_all_go_to_the_model(
    monkeypatch: pytest.MonkeyPatch, cores: int, reserved: str | None
) -> None:
    monkeypatch.setattr(vllm_cpu, "usable_cores", lambda: cores)
    vllm_cpu.prepare_cpu_environment()
    assert os.environ.get(RESERVED) == reserved
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == vllm_cpu.KV_CACHE_GIB


def test_the_operators_own_values_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_cpu, "usable_cores", lambda: 2)
    monkeypatch.setenv(RESERVED, "1")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "6")
    vllm_cpu.prepare_cpu_environment()
    assert (os.environ[RESERVED], os.environ["VLLM_CPU_KVCACHE_SPACE"]) == (
        "1",
        "6",
    )


def test_the_usable_cores_are_this_process_share() -> None:
    assert 1 <= vllm_cpu.usable_cores() <= (os.cpu_count() or 1)
