import subprocess
import sys

import pytest

from suggestions import (
    LlamaRequest,
    LlamaResponse,
    MockBackend,
    SessionCache,
    TokenUsage,
    cache_key,
)
from suggestions.errors import StreamInterrupted
from suggestions.service import SuggestionService


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _response(text: str = "x") -> LlamaResponse:
    return LlamaResponse(
        suggestions=[],
        revised_text=text,
        model_id="m",
        backend="mock",
        usage=TokenUsage(prompt_tokens=1, completion_tokens=1),
        latency_ms=1.0,
    )


def test_entries_expire_after_the_ttl() -> None:
    clock = FakeClock()
    cache = SessionCache(ttl_s=300, clock=clock)
    cache.put("k", _response())
    clock.now += 299.9
    assert cache.get("k") is not None
    clock.now += 0.1
    assert cache.get("k") is None
    assert len(cache) == 0


def test_least_recently_used_entry_goes_first() -> None:
    cache = SessionCache(max_entries=2, clock=FakeClock())
    cache.put("a", _response("a"))
    cache.put("b", _response("b"))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", _response("c"))
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None


def test_zero_ttl_disables_the_cache() -> None:
    cache = SessionCache(ttl_s=0)
    cache.put("k", _response())
    assert cache.get("k") is None


def test_key_is_stable_across_processes_and_sensitive_to_every_field() -> None:
    request = LlamaRequest(text="Héllo wörld.", type="grammar", manuscript_id="ms-7")
    key = cache_key(request, "custom", "writing-llama")
    script = (
        "from suggestions import LlamaRequest, cache_key;"
        "r = LlamaRequest(manuscript_id='ms-7', type='grammar', text='Héllo wörld.');"
        "print(cache_key(r, 'custom', 'writing-llama'))"
    )
    other_process = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert other_process.stdout.strip() == key
    assert len(key) == 64
    variants = {
        cache_key(request.model_copy(update={"text": "Héllo wörld!"}), "custom", "writing-llama"),
        cache_key(request.model_copy(update={"type": "style"}), "custom", "writing-llama"),
        cache_key(request.model_copy(update={"context": "c"}), "custom", "writing-llama"),
        cache_key(request.model_copy(update={"manuscript_id": None}), "custom", "writing-llama"),
        cache_key(request, "baseline", "writing-llama"),
        cache_key(request, "custom", "writing-llama-v2"),
    }
    assert key not in variants and len(variants) == 6


async def test_service_hits_are_flagged_and_expire_with_the_injected_clock() -> None:
    clock = FakeClock()
    service = SuggestionService({"mock": MockBackend()}, cache=SessionCache(ttl_s=300, clock=clock))
    request = LlamaRequest(text="I dont know.", type="grammar")
    first = await service.suggest(request, backend="mock")
    hit = await service.suggest(request, backend="mock")
    assert (first.cached, hit.cached) == (False, True)
    assert hit.revised_text == first.revised_text == "I don't know."
    assert hit.time_to_first_token_ms is None
    bypass = await service.suggest(request, backend="mock", use_cache=False)
    assert bypass.cached is False
    other = LlamaRequest(text="I cant know.", type="grammar")
    await service.suggest(other, backend="mock", use_cache=False)
    assert (await service.suggest(other, backend="mock")).cached is False  # bypass wrote nothing
    clock.now += 301
    assert (await service.suggest(request, backend="mock")).cached is False


async def test_failed_streams_are_not_cached() -> None:
    service = SuggestionService({"mock": MockBackend(fail_after=2)})
    request = LlamaRequest(text="one two three four", type="grammar")
    for _ in range(2):
        with pytest.raises(StreamInterrupted):
            await service.suggest(request, backend="mock")
    assert len(service.cache) == 0
