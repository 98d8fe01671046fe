"""What every part of the running app shares: its configuration, the suggestion service, votes."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from suggestions.backends import Backend, build_backends
from suggestions.cache import SessionCache
from suggestions.service import SuggestionService
from suggestions.usage import UsageStore

from .config import AppConfig
from .votes import VoteStore


@dataclass
class Runtime:
    config: AppConfig
    service: SuggestionService
    votes: VoteStore
    rng: random.Random = field(default_factory=random.Random)  # draws blind pairs; seedable

    @classmethod
    def build(
        cls,
        config: AppConfig,
        backends: Mapping[str, Backend] | None = None,
        rng: random.Random | None = None,
    ) -> Runtime:
        """Backends come from the settings unless given (tests, benchmarks, the local default)."""
        settings = config.settings
        chosen = (
            dict(backends) if backends is not None else build_backends(config.columns, settings)
        )
        missing = [name for name in config.columns if name not in chosen]
        if missing:
            raise ValueError(f"no backend for column(s) {', '.join(missing)}")
        for name, label in config.labels.items():
            if name in chosen:
                chosen[name].label = label
        service = SuggestionService(
            chosen,
            cache=SessionCache(ttl_s=settings.cache_ttl_s, max_entries=settings.cache_max_entries),
            usage=UsageStore(settings.usage_db_path),
        )
        votes = VoteStore(config.votes_path)
        return cls(config=config, service=service, votes=votes, rng=rng or random.Random())

    @property
    def columns(self) -> tuple[str, ...]:
        return self.config.columns
