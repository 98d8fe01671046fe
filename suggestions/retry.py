"""When to try a request again, and how long to wait first.

Retries happen only before the first byte of a response body: a stream that has started is never
replayed, since the caller may already have shown part of it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, honouring the server's Retry-After."""

    max_retries: int = 2
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_retry_after_s: float = 20.0  # a server asking for a longer pause gets no retry from us
    jitter: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay_before_retry(self, retry_number: int, retry_after_s: float | None) -> float | None:
        """Seconds to wait before retry `retry_number` (1-based), or None to give up."""
        if retry_number > self.max_retries:
            return None
        if retry_after_s is not None:
            if retry_after_s > self.max_retry_after_s:
                return None
            return retry_after_s
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (retry_number - 1))
        return self.jitter.uniform(ceiling / 2, ceiling)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date. None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
