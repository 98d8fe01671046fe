"""What a model container does before Modal takes its memory snapshot and after a restore.

Modal runs a class's `@modal.enter(snap=True)` hooks once, before it snapshots the container,
and its `@modal.enter(snap=False)` hooks in every container started from that snapshot (and in
the one that took it). The two engines split their start-up across that line differently:

- `VLLMLifecycle`, with CPU + GPU snapshots: before, the stock base model is started in vLLM with
  sleep mode and put to sleep (level 1: weights copied to CPU memory, KV cache freed), so the
  snapshot holds a started engine, CUDA graphs included, rather than a GPU full of cache it would
  throw away. After, it wakes up, and a `PromotionFollower` loads the adapter that the pointer
  names now, so a snapshot never pins a version, and swaps in later promotions without a
  restart. One engine answers as the baseline (the base) and as `writing-llama` (the adapter).
- `TransformersLifecycle`, the fallback, with CPU snapshots only: the libraries are imported
  before; the weights the plan names are loaded after, one model id per container.

Modal-free: the app hands in where the volume is, how to fetch a base model and how to refresh
the volume. vLLM itself is imported only inside a container, by the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from modal_backend.serving.engines.base import Engine
from modal_backend.serving.engines.vllm_engine import VLLMSettings  # settings only, no vLLM
from modal_backend.serving.promotion_follower import DEFAULT_INTERVAL_S, PromotionFollower
from modal_backend.serving.weights import (
    SERVED_MODEL_ID,
    FetchBase,
    WeightsPlan,
    baseline_plan,
    import_inference_libraries,
    load_engine,
)

if TYPE_CHECKING:
    from modal_backend.serving.engines.vllm_engine import VLLMEngine

logger = logging.getLogger(__name__)

SLEEP_LEVEL = 1
"""Weights to CPU memory (kept in the snapshot), KV cache dropped (rebuilt on waking)."""


class Lifecycle(Protocol):
    def before_snapshot(self) -> None: ...

    def after_restore(self) -> Engine: ...

    def close(self) -> None: ...


@dataclass
class VLLMLifecycle:
    """The base model and the promoted adapter on one vLLM engine, across a GPU snapshot."""

    root: Path
    """The weights volume: the runs, `current.json`, and the base model if it is a folder."""
    base_model_id: str
    """The id the stock base answers as: the baseline's."""
    base_source: str | None
    """`WRITING_BASELINE_WEIGHTS`: a repository or folder; None for the promoted run's base."""
    fetch: FetchBase
    refresh: Callable[[], None] | None = None
    """Reloads the weights volume before each look at the pointer (None on this machine)."""
    settings: VLLMSettings = field(default_factory=VLLMSettings)
    """The engine's batch and speculation; sleep mode is turned on here, for the snapshot."""
    follow_interval_s: float = DEFAULT_INTERVAL_S
    engine: VLLMEngine | None = None
    follower: PromotionFollower | None = None

    def before_snapshot(self) -> None:
        from modal_backend.serving.engines import vllm_engine

        plan = baseline_plan(self.root, self.base_source, fetch=self.fetch)
        settings = replace(self.settings, enable_sleep_mode=True)
        self.engine = vllm_engine.VLLMEngine(
            plan.model_path, model_id=self.base_model_id, version=plan.version, settings=settings
        )
        self.engine.sleep(SLEEP_LEVEL)

    def after_restore(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("the engine was not started before the snapshot")
        self.engine.wake_up()  # before any adapter: loading one needs the GPU back
        self.follower = PromotionFollower(
            self.engine, self.root, model_id=SERVED_MODEL_ID, refresh=self.refresh
        )
        self.follower.start(self.follow_interval_s)  # loads the promoted adapter before serving
        if self.engine.adapter_version(SERVED_MODEL_ID) is None:
            adapters = self.engine.status().get("adapters", {})
            logger.warning(
                "%s is not served yet (%s): the baseline alone answers until a promoted run's "
                "adapter loads",
                SERVED_MODEL_ID,
                self.follower.last_error
                or adapters.get(SERVED_MODEL_ID, {}).get("error")
                or "no run is promoted",
            )
        return self.engine

    def close(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        if self.engine is not None:
            self.engine.close()


@dataclass
class TransformersLifecycle:
    """One model id on the transformers engine, loaded after the (CPU) snapshot."""

    plan: Callable[[], WeightsPlan]
    """What to load, read after the restore so the pointer is the current one."""
    model_id: str
    slots: int
    """Generations at once: the engine's one-at-a-time default."""
    refresh: Callable[[], None] | None = None
    engine: Engine | None = None

    def before_snapshot(self) -> None:
        import_inference_libraries()  # 10-20 s of imports that the snapshot saves

    def after_restore(self) -> Engine:
        if self.refresh is not None:
            try:  # the latest committed pointer, also after a restore from a memory snapshot
                self.refresh()
            except RuntimeError as exc:
                logger.warning("could not reload the weights volume: %s", exc)
        self.engine = load_engine(self.plan(), model_id=self.model_id, max_concurrency=self.slots)
        return self.engine

    def close(self) -> None:
        if self.engine is not None:  # absent when loading failed: keep that error
            self.engine.close()
