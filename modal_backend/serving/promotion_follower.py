"""`PromotionFollower`: keeps a running engine's adapter id on the promoted run, with no restart.

It reads the registry's pointer (`current.json`) every few seconds. When the promoted run (or a
rollback) names an adapter other than the one serving, it asks the engine to swap it in: new
requests then use it while requests in flight finish on the old one (see `VLLMEngine.set_adapter`).
A version that fails to load is not retried until the pointer moves again; the old adapter keeps
serving and the error shows in `/health`. On Modal, `refresh` reloads the weights volume first,
so a promotion committed by the training job becomes visible to a running container.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from .registry import Registry, RegistryError

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0


class SwapsAdapters(Protocol):
    def set_adapter(self, model_id: str, path: str | Path, version: str) -> bool: ...

    def adapter_version(self, model_id: str) -> str | None: ...


class PromotionFollower:
    """Polls one weights root for the promoted run and swaps its adapter into `engine`."""

    def __init__(
        self,
        engine: SwapsAdapters,
        root: Path,
        *,
        model_id: str,
        refresh: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.registry = Registry(root)
        self.model_id = model_id
        self.refresh = refresh
        self.last_error: str | None = None
        self._failed: tuple[str, str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """Swap in the promoted run's adapter if it is not the one serving; True on a swap."""
        if self.refresh is not None:
            try:
                self.refresh()
            except Exception as exc:  # a volume that cannot reload now may next time
                logger.warning("could not refresh the weights: %s", exc)
        try:
            run = self.registry.current()
        except RegistryError as exc:
            self._note(f"the promotion pointer cannot be read: {exc}")
            return False
        if run is None:
            return False
        wanted = (run.run_id, run.version)
        if self.engine.adapter_version(self.model_id) == run.version or wanted == self._failed:
            return False
        if not run.has_adapter():
            self._failed = wanted
            self._note(f"run {run.run_id} is promoted but has no complete adapter to serve")
            return False
        if self.engine.set_adapter(self.model_id, run.adapter_path, run.version):
            self._failed, self.last_error = None, None
            return True
        self._failed = wanted
        return False

    def _note(self, message: str) -> None:
        if message != self.last_error:
            logger.error("%s", message)
        self.last_error = message

    def start(self, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        """Check now, then every `interval_s` seconds on a daemon thread until `stop`."""

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.check()
                except Exception:  # keep following: one bad read must not end it
                    logger.exception("checking for a promotion failed")

        self.check()
        self._thread = threading.Thread(target=loop, name="promotion-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
