"""The compare core: columns stream independently, failures stay in their column, stop really
stops the model, and the HTML shows what happened (escaped)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from app.compare import Column, stream_columns
from app.render import column_html, marked_revision
from modal_backend.serving.engines.transformers_engine import TransformersEngine
from suggestions import LlamaRequest
from suggestions.backends import MockBackend
from suggestions.contract import LlamaSuggestion
from suggestions.errors import StreamInterrupted
from suggestions.service import SuggestionService
from tests.app_support import tiny_model_backend
from tests.model_service_support import running_service

REQUEST = LlamaRequest(text="She go to school yesterday and buyed a books.", type="grammar")


def mocks() -> SuggestionService:
    return SuggestionService(
        {
            "fast": MockBackend(name="fast", delay_s=0.01),
            "slow": MockBackend(name="slow", first_token_delay_s=0.8),
            "broken": MockBackend(name="broken", fail_after=2, delay_s=0.01),
        }
    )


async def collect(service: SuggestionService, names: tuple[str, ...]) -> list[tuple[Column, ...]]:
    return [snapshot async for snapshot in stream_columns(service, names, REQUEST)]


async def test_a_slow_column_never_holds_a_fast_one_back() -> None:
    started = time.perf_counter()
    snapshots = await collect(mocks(), ("fast", "slow", "broken"))
    wall = time.perf_counter() - started
    fast_done = next(i for i, s in enumerate(snapshots) if s[0].status == "done")
    assert snapshots[fast_done][1].status == "waiting", "fast finished only after slow started"
    assert snapshots[fast_done][0].elapsed_ms < 400
    final = snapshots[-1]
    assert [column.status for column in final] == ["done", "done", "failed"]
    assert final[0].response is not None
    assert final[0].response.revised_text == "She went to school yesterday and bought books."
    assert final[1].elapsed_ms >= 800
    assert wall < 0.8 + 0.5
    # The failing column says what happened in words a user understands, nothing more.
    assert final[2].error == StreamInterrupted.user_message
    # Streaming is visible: some snapshot has partial text before the end.
    assert any(s[0].status == "streaming" and s[0].text for s in snapshots)


async def test_a_second_identical_request_is_served_from_the_cache() -> None:
    service = mocks()
    await collect(service, ("fast",))
    final = (await collect(service, ("fast",)))[-1][0]
    assert final.response is not None and final.response.cached
    assert 'class="ws-badge ws-cached"' in column_html(final, REQUEST.text)
    uncached = [s async for s in stream_columns(service, ("fast",), REQUEST, use_cache=False)]
    assert uncached[-1][0].response is not None and not uncached[-1][0].response.cached


@pytest.fixture(scope="module")
def rambling_url(rambling_engine: TransformersEngine) -> Iterator[str]:
    with running_service(rambling_engine) as url:
        yield url


async def test_stopping_a_comparison_stops_generation_on_the_model_server(
    rambling_engine: TransformersEngine, rambling_url: str
) -> None:
    service = SuggestionService({"custom": tiny_model_backend(rambling_url), "mock": MockBackend()})
    long_request = LlamaRequest(text="word " * 400, type="style")  # allows ~thousands of tokens
    before = rambling_engine.tokens_generated
    stream = stream_columns(service, ("custom", "mock"), long_request)
    async for snapshot in stream:
        if snapshot[0].status == "streaming" and len(snapshot[0].text) > 20:
            break
    await stream.aclose()  # what Gradio does when the stop button cancels the event
    await asyncio.sleep(1.0)
    settled = rambling_engine.tokens_generated - before
    await asyncio.sleep(0.5)
    assert rambling_engine.tokens_generated - before == settled, "generation went on"
    assert settled < 1500
    await service.aclose()


def test_the_revision_marks_each_edit_and_escapes_model_text() -> None:
    source = "He go <b>home</b>."
    edits = [
        LlamaSuggestion(original="go", replacement="goes", start=3, end=5, type="grammar"),
        LlamaSuggestion(original="<b>", replacement="", start=6, end=9, type="grammar"),
    ]
    html = marked_revision(source, edits)
    assert html == "He <del>go</del><ins>goes</ins> <del>&lt;b&gt;</del>home&lt;/b&gt;."
    streaming = Column(
        backend="custom", label="x", model_id="m", status="streaming", text="<script>x</script>"
    )
    assert "<script>" not in column_html(streaming, source)


def test_blind_mode_hides_the_name_model_and_timing() -> None:
    column = Column(
        backend="baseline",
        label="Modal: llama-3.1-8b",
        model_id="llama-3.1-8b",
        status="failed",
        error="busy",
        elapsed_ms=1234.0,
    )
    html = column_html(column, "text", blind_heading="Answer B")
    assert "Answer B" in html
    for secret in ("baseline", "llama-3.1-8b", "1.23"):
        assert secret not in html
