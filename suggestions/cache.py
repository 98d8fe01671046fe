"""The session cache: the same request to the same model within five minutes is answered at once.

Bounded (least recently used entries go first) and keyed by SHA-256 of the canonical request plus
the backend and model id. Only complete, successful responses are stored.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable

from .contract import LlamaRequest, LlamaResponse

DEFAULT_TTL_S = 300.0


def cache_key(request: LlamaRequest, backend: str, model_id: str) -> str:
    """Stable across processes and field order: canonical JSON, then SHA-256."""
    canonical = json.dumps(
        {"request": request.model_dump(mode="json"), "backend": backend, "model": model_id},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class SessionCache:
    """A TTL + LRU map from cache key to response. Not shared between processes."""

    def __init__(
        self,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, LlamaResponse]] = OrderedDict()

    def get(self, key: str) -> LlamaResponse | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, response = entry
        if self._clock() >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return response

    def put(self, key: str, response: LlamaResponse) -> None:
        if self.ttl_s <= 0:
            return
        self._entries[key] = (self._clock() + self.ttl_s, response)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
