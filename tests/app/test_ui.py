"""The Gradio page, driven two ways: `gradio_client` calls the compare endpoint, and a real
headless Chromium runs a comparison and a blind vote like a reviewer would.

The custom column is a real tiny model behind our model service; the others are mocks (one slow,
one failing), so every outcome a reviewer can see appears on the page.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client

from app.config import AppConfig
from app.votes import Side, VoteStore
from modal_backend.serving.engines.transformers_engine import TransformersEngine
from suggestions.backends import MockBackend
from suggestions.errors import StreamInterrupted
from tests.app_support import TINY_MODEL_ID, app_config, running_app, tiny_model_backend
from tests.model_service_support import (
    GRAMMAR_ANSWER,
    GRAMMAR_REQUEST,
    running_service,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", Path(__file__).parents[2] / "artifacts"))
STATUS = re.compile(r'data-status="(\w+)"')


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> AppConfig:
    return app_config(tmp_path_factory.mktemp("app"), ("custom", "mock", "broken"))


@pytest.fixture(scope="module")
def app_url(taught_model_url: str, config: AppConfig) -> Iterator[str]:
    backends = {
        "custom": tiny_model_backend(taught_model_url),
        "mock": MockBackend(first_token_delay_s=0.4, label="mock: slow"),
        "broken": MockBackend(name="broken", fail_after=1, label="mock: always fails"),
    }
    # Seed 2 draws (custom, broken) first, then (custom, mock): a failed pair, then a fair one.
    with running_app(config, backends, seed=2) as url:
        yield url


def statuses(outputs: tuple[object, ...] | list[object]) -> list[str]:
    return [STATUS.findall(str(html))[0] for html in outputs[:3]]


def test_gradio_client_streams_every_column_to_the_end(app_url: str) -> None:
    client = Client(app_url, verbose=False)
    job = client.submit(GRAMMAR_REQUEST.text, "grammar", api_name="/compare")
    updates = list(job)
    final = job.outputs()[-1]
    assert statuses(final) == ["done", "done", "failed"]
    assert "<ins>went</ins>" in final[0]
    assert StreamInterrupted.user_message in final[2]
    # It streamed: the fast columns were finished while the slow mock was still waiting.
    assert len(updates) > 2
    assert any(
        statuses(update)[0] == "done" and statuses(update)[1] == "waiting" for update in updates
    )
    client.close()


def test_empty_text_is_refused_with_a_message(app_url: str) -> None:
    client = Client(app_url, verbose=False)
    with pytest.raises(Exception, match="text"):
        client.predict("   ", "grammar", api_name="/compare")
    client.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make test does this)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        yield chromium
        chromium.close()


def test_a_reviewer_compares_then_votes_blind_in_a_real_browser(
    browser: object, app_url: str, config: AppConfig
) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(app_url)

    page.locator("#compare-text textarea").fill(GRAMMAR_REQUEST.text)
    page.locator("#compare-run").click()
    for name, status in (("custom", "done"), ("mock", "done"), ("broken", "failed")):
        expect(page.locator(f'#column-{name} [data-status="{status}"]')).to_be_visible()
    custom = page.locator("#column-custom")
    expect(custom.locator("ins")).to_contain_text(["went"])
    expect(custom).to_contain_text(TINY_MODEL_ID)
    expect(page.locator("#column-broken")).to_contain_text(StreamInterrupted.user_message)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app-compare.png"), full_page=True)

    page.get_by_role("tab", name="Blind A/B").click()
    page.locator("#blind-text textarea").fill(GRAMMAR_REQUEST.text)
    page.locator("#blind-run").click()
    expect(page.locator("#blind-status")).to_contain_text("cannot be judged")
    expect(page.locator("#vote-a")).to_be_disabled()  # a failed pair is not put to a vote
    page.locator("#blind-run").click()
    expect(page.locator("#blind-status")).to_contain_text("Which answer is better?")
    expect(page.locator("#vote-a")).to_be_enabled()
    expect(page.locator("#blind-a")).to_contain_text("Answer A")
    page.locator("#blind-comment textarea").fill("A reads better.")
    page.locator("#vote-a").click()
    expect(page.locator("#blind-status")).to_contain_text("Vote saved")
    page.screenshot(path=str(ARTIFACTS / "app-blind-vote.png"), full_page=True)

    page.get_by_role("tab", name="Leaderboard").click()
    table = page.locator("#leaderboard-table")
    systems = [f"{side.backend}: {side.model_id}" for side in vote_sides(config)]
    for system in systems:
        expect(table).to_contain_text(system)

    write_eval_run(config.eval_runs_dir / "nightly-42")
    page.get_by_role("tab", name="Eval dashboard").click()
    expect(page.get_by_text("1 run(s) found.")).to_be_visible()
    expect(page.locator("body")).to_contain_text("nightly-42")
    page.screenshot(path=str(ARTIFACTS / "app-dashboard.png"), full_page=True)
    page.close()

    votes = VoteStore(config.votes_path).votes()
    assert len(votes) == 1, "the browser voted once; the leaderboard read that one vote"
    vote = votes[0]
    assert vote.verdict == "a"
    assert vote.comment == "A reads better."
    assert vote.request.text == GRAMMAR_REQUEST.text
    assert (vote.a.backend, vote.b.backend) == ("custom", "mock")
    assert vote.a.output == GRAMMAR_ANSWER
    assert vote.a.model_id == TINY_MODEL_ID and vote.b.model_id == "mock"
    for side in (vote.a, vote.b):
        assert side.error is None
        assert side.latency_ms is not None and side.latency_ms > 0


def vote_sides(config: AppConfig) -> tuple[Side, Side]:
    (vote,) = VoteStore(config.votes_path).votes()
    return (vote.a, vote.b)


def write_eval_run(folder: Path) -> None:
    """A run folder as `python -m eval run` leaves it (only what the dashboard reads)."""
    folder.mkdir(parents=True)
    summary = {
        "run": folder.name,
        "dataset": "datasets/eval/writing-eval-v1.jsonl",
        "backends": {
            "custom": {
                "model_id": TINY_MODEL_ID,
                "label": "tiny Llama",
                "examples": 175,
                "errors": 0,
                "error_rate": 0.0,
                "metrics": {"gleu": 0.61, "errant_f05": 0.55, "meaning_similarity": 0.93},
                "latency": {
                    "ttft_ms": {"p50": 120.0, "p90": 180.0, "p95": 210.0, "p99": 300.0},
                    "total_ms": {"p50": 900.0, "p90": 1500.0, "p95": 1800.0, "p99": 2600.0},
                },
            }
        },
    }
    (folder / "summary.json").write_text(json.dumps(summary))


def test_the_stop_button_stops_generation_on_the_model_server(
    browser: object, rambling_engine: TransformersEngine, tmp_path: Path
) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    config = app_config(tmp_path, ("custom", "mock"))
    with (
        running_service(rambling_engine) as model_url,
        running_app(
            config, {"custom": tiny_model_backend(model_url), "mock": MockBackend()}
        ) as url,
    ):
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        page.locator("#compare-text textarea").fill("word " * 400)  # room for many tokens
        page.locator("#compare-run").click()
        expect(page.locator('#column-custom [data-status="streaming"]')).to_be_visible()
        before = rambling_engine.tokens_generated
        page.locator("#compare-stop").click()
        expect(page.locator('#column-custom [data-status="cancelled"]')).to_be_visible()
        expect(page.locator("#column-custom")).to_contain_text("stopped")
        time.sleep(1.0)
        settled = rambling_engine.tokens_generated
        time.sleep(0.5)
        assert rambling_engine.tokens_generated == settled, "generation went on after Stop"
        assert settled - before < 1500
        page.close()


def test_a_pair_takes_one_vote_even_when_all_four_buttons_race(tmp_path: Path) -> None:
    config = app_config(tmp_path, ("custom", "mock"))
    backends = {"custom": MockBackend(name="custom"), "mock": MockBackend()}
    with running_app(config, backends) as url:
        client = Client(url, verbose=False)
        status = client.predict("I dont know.", "grammar", api_name="/blind_draw")[0]
        assert status == "Which answer is better?"
        jobs = [
            client.submit(None, "", api_name=f"/vote_{verdict}")
            for verdict in ("a", "b", "tie", "both_bad")
        ]
        outcomes = []
        for job in jobs:
            try:
                outcomes.append(str(job.result()[0]))
            except Exception as error:  # the losers are refused in words
                outcomes.append(str(error))
        client.close()
    assert sum("Vote saved" in outcome for outcome in outcomes) == 1, outcomes
    assert len(VoteStore(config.votes_path).votes()) == 1
