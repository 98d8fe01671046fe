"""The GPU plan: its bounds agree with DESIGN.md's physical limits, its rule picks the default
GPU the settings deploy, and the docs' table is the one it computes."""

from __future__ import annotations

from pathlib import Path

import pytest

from modal_backend.deploy import gpu_plan
from modal_backend.deploy.settings import GPU_MEMORY_GB, DeploySettings

GPU_PAGE = Path(__file__).resolve().parents[2] / "docs" / "operators" / "gpus-and-cost.md"
GPUS = {gpu.name: gpu for gpu in gpu_plan.GPUS}


@pytest.mark.parametrize(
    ("name", "precision", "design"),
    [("A10G", "bf16", 37), ("L40S", "bf16", 54), ("L40S", "fp8", 100), ("H100", "bf16", 200)],
)
def test_the_bounds_are_designs_physical_limits(name: str, precision: str, design: int) -> None:
    bound = gpu_plan.decode_bound(GPUS[name], precision)  # type: ignore[arg-type]
    assert bound == pytest.approx(design, rel=0.1)


def test_a_batch_shares_the_weight_read_until_the_kv_cache_is_full() -> None:
    h100, a10g = GPUS["H100"], GPUS["A10G"]
    assert gpu_plan.concurrency(h100, "bf16") == gpu_plan.TARGET_INPUTS
    # 24 GB less 16 GB of weights holds few 4,096-token requests; FP8 weights leave room.
    assert gpu_plan.concurrency(a10g, "bf16") < gpu_plan.TARGET_INPUTS
    assert gpu_plan.concurrency(a10g, "fp8") == gpu_plan.TARGET_INPUTS
    # Twice the requests at once on the same GPU hour: half the cost of each.
    assert gpu_plan.cost_per_1000(h100, "bf16", target=8) == pytest.approx(
        2 * gpu_plan.cost_per_1000(h100, "bf16", target=16)
    )


def test_the_rule_picks_the_gpu_that_is_deployed() -> None:
    chosen = gpu_plan.default_gpu()
    assert DeploySettings.model_fields["gpu"].default == chosen.name == "H100"
    assert gpu_plan.rewrite_seconds(chosen, "bf16") <= gpu_plan.P95_TARGET_S / 2
    cheaper = [gpu for gpu in gpu_plan.GPUS if gpu.usd_per_hour < chosen.usd_per_hour]
    assert cheaper and all(
        gpu_plan.rewrite_seconds(gpu, "bf16") > gpu_plan.P95_TARGET_S / 2 for gpu in cheaper
    )


def test_every_planned_gpu_is_one_the_settings_take() -> None:
    for gpu in gpu_plan.GPUS:
        assert GPU_MEMORY_GB[gpu.name] == gpu.memory_gb


def test_the_docs_show_the_computed_table() -> None:
    page = GPU_PAGE.read_text()
    assert gpu_plan.markdown_table(gpu_plan.default_gpu().name) in page
    assert f"target concurrency {gpu_plan.TARGET_INPUTS}" in page
