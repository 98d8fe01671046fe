"""The Gradio page: Compare, Blind A/B, Leaderboard and Eval dashboard tabs.

Handlers are thin: the work lives in `compare`, `votes`, `leaderboard` and `dashboard`, which
are tested without a browser. Every streaming handler runs on the server's event loop, where the
suggestion service's HTTP clients live.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from uuid import uuid4

import gradio as gr
import pandas as pd
from pydantic import ValidationError

from suggestions.contract import LlamaRequest, describe_validation_error, parse_request

from . import dashboard, leaderboard
from .compare import Column, ModelVersions, settled, stream_columns
from .render import column_html, placeholder_html
from .runtime import Runtime
from .votes import MAX_COMMENT_CHARS, UNKNOWN_VERSION, Side, Verdict, Vote, VoteError

logger = logging.getLogger(__name__)

TYPES = ("grammar", "clarity", "style")
EXAMPLES_PER_TYPE = 3
VOTE_BUTTONS: tuple[tuple[Verdict, str], ...] = (
    ("a", "A is better"),
    ("b", "B is better"),
    ("tie", "Tie"),
    ("both_bad", "Both bad"),
)


@dataclass(frozen=True)
class BlindRound:
    """A blind comparison waiting for its vote; kept in the browser session's state."""

    request: LlamaRequest
    order: tuple[str, str]
    columns: tuple[Column, Column]
    round_id: str


def build_blocks(runtime: Runtime) -> gr.Blocks:
    # Gradio copies every downloaded file into its cache; an hourly sweep keeps that bounded.
    with gr.Blocks(title="Writing suggestions: reviewer app", delete_cache=(3600, 3600)) as blocks:
        gr.Markdown(
            "## Writing suggestions: reviewer app\n"
            "Compare backends on the same text, vote blind, and read the eval runs."
        )
        with gr.Tabs():
            with gr.Tab("Compare", id="compare"):
                _compare_tab(runtime)
            with gr.Tab("Blind A/B", id="blind"):
                _blind_tab(runtime)
            with gr.Tab("Leaderboard", id="leaderboard") as board_tab:
                _leaderboard_tab(runtime, board_tab)
            with gr.Tab("Eval dashboard", id="dashboard") as dash_tab:
                _dashboard_tab(runtime, dash_tab)
    blocks.queue(default_concurrency_limit=runtime.config.concurrency)
    return blocks  # type: ignore[no-any-return]  # gr.Blocks.__enter__ is untyped


def _inputs(runtime: Runtime, prefix: str) -> tuple[gr.Textbox, gr.Radio]:
    """The text box and type selector; `_examples` adds the clickable examples further down."""
    text = gr.Textbox(
        label="Text",
        lines=5,
        max_length=runtime.config.settings.max_text_chars,
        placeholder="Paste a sentence or a paragraph.",
        elem_id=f"{prefix}-text",
    )
    kind = gr.Radio(list(TYPES), value="grammar", label="Suggestion type", elem_id=f"{prefix}-type")
    return text, kind


def _examples(runtime: Runtime, text: gr.Textbox, kind: gr.Radio) -> None:
    examples = load_examples(runtime.config.examples_path)
    if examples:
        gr.Examples(examples=examples, inputs=[text, kind], label="Examples", examples_per_page=9)


def load_examples(path: Path | None) -> list[list[str]]:
    """A few texts of each type from the eval set, so a reviewer can start with one click."""
    if path is None or not path.is_file():
        return []
    chosen: dict[str, list[str]] = {kind: [] for kind in TYPES}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line) if line.strip() else {}
        kind = row.get("type")
        if kind in chosen and len(chosen[kind]) < EXAMPLES_PER_TYPE:
            chosen[kind].append(row["source"])
    return [[text, kind] for kind in TYPES for text in chosen[kind]]


def _request(runtime: Runtime, text: str, kind: str) -> LlamaRequest:
    try:
        return parse_request(
            {"text": text or "", "type": kind},
            max_text_chars=runtime.config.settings.max_text_chars,
        )
    except ValidationError as exc:
        raise gr.Error(describe_validation_error(exc), title="Please check the text") from None


def _compare_tab(runtime: Runtime) -> None:
    text, kind = _inputs(runtime, "compare")
    with gr.Row():
        run = gr.Button("Compare", variant="primary", elem_id="compare-run")
        stop = gr.Button("Stop", variant="stop", elem_id="compare-stop")
    service = runtime.service
    with gr.Row(equal_height=True):
        outputs = [
            gr.HTML(
                placeholder_html(service.backend(name).label, "Run a comparison to see output."),
                elem_id=f"column-{name}",
            )
            for name in runtime.columns
        ]
    _examples(runtime, text, kind)
    # Sessions whose reviewer pressed Stop. The running comparison sees the request at its next
    # snapshot (at most a tick later), shows what it has, marks the rest stopped and ends
    # normally; Gradio's own `cancels` raced the last update and could leave a column stale.
    stop_requests: set[str] = set()

    async def compare(
        text: str, kind: str, session: gr.Request
    ) -> AsyncGenerator[tuple[Any, ...], None]:
        request = _request(runtime, text, kind)
        key = session.session_hash or ""
        stop_requests.discard(key)
        # Closed explicitly, so a Stop or a closed tab closes every upstream stream at once.
        async with aclosing(stream_columns(service, runtime.columns, request)) as stream:
            async for columns in stream:
                if key in stop_requests:
                    stop_requests.discard(key)
                    yield tuple(column_html(stopped(c), request.text) for c in columns)
                    return
                yield tuple(column_html(column, request.text) for column in columns)

    def request_stop(session: gr.Request) -> None:
        stop_requests.add(session.session_hash or "")

    run.click(compare, inputs=[text, kind], outputs=outputs, api_name="compare")
    stop.click(request_stop, api_name="stop", concurrency_limit=None)


def _blind_tab(runtime: Runtime) -> None:
    if len(runtime.columns) < 2:
        gr.Markdown("Blind A/B needs at least two backends; this app has one column.")
        return
    gr.Markdown(
        "Two backends, drawn at random, answer the same text as **A** and **B**. Both answers "
        "appear together once both are finished, so speed gives nothing away. Vote, and the "
        "names are revealed."
    )
    text, kind = _inputs(runtime, "blind")
    start = gr.Button("Get two answers", variant="primary", elem_id="blind-run")
    status = gr.Markdown(elem_id="blind-status")
    with gr.Row(equal_height=True):
        side_a = gr.HTML(placeholder_html("Answer A", "No answer yet."), elem_id="blind-a")
        side_b = gr.HTML(placeholder_html("Answer B", "No answer yet."), elem_id="blind-b")
    comment = gr.Textbox(
        label="Comment (optional)",
        lines=2,
        max_length=MAX_COMMENT_CHARS,
        elem_id="blind-comment",
    )
    with gr.Row():
        buttons = [
            gr.Button(label, interactive=False, elem_id=f"vote-{verdict}")
            for verdict, label in VOTE_BUTTONS
        ]
    current = gr.State(None)
    _examples(runtime, text, kind)
    service = runtime.service
    versions = ModelVersions()
    voted_rounds: set[str] = set()  # shared by every session: a round id is drawn only once

    async def draw(text: str, kind: str) -> AsyncGenerator[tuple[Any, ...], None]:
        request = _request(runtime, text, kind)
        order = tuple(runtime.rng.sample(list(runtime.columns), 2))
        locked = [gr.update(interactive=False) for _ in buttons]
        waiting = placeholder_html("…", "Waiting for both answers.")
        yield ("Both answers are being written…", waiting, waiting, None, *locked)
        final: tuple[Column, ...] = ()
        # The versions are asked before and after the answers, so a promotion between is seen.
        before = asyncio.ensure_future(versions.of(service, order))
        try:
            async with aclosing(stream_columns(service, order, request, use_cache=False)) as stream:
                async for columns in stream:
                    final = columns
            after = await versions.of(service, order, [column.model_id for column in final])
            final = settled(final, await before, after)
        finally:
            before.cancel()
        round_ = BlindRound(request, (order[0], order[1]), (final[0], final[1]), uuid4().hex)
        failed = [c for c in final if c.status == "failed"]
        # A pair where a backend failed says nothing about quality; it is not put to a vote.
        prompt = (
            "One answer failed, so this pair cannot be judged. Get two new answers."
            if failed
            else "Which answer is better?"
        )
        yield (
            prompt,
            column_html(final[0], request.text, blind_heading="Answer A"),
            column_html(final[1], request.text, blind_heading="Answer B"),
            round_,
            *[gr.update(interactive=not failed) for _ in buttons],
        )

    start.click(
        draw,
        inputs=[text, kind],
        outputs=[status, side_a, side_b, current, *buttons],
        api_name="blind_draw",
    )

    for (verdict, _), button in zip(VOTE_BUTTONS, buttons, strict=True):

        async def vote(
            round_: BlindRound | None,
            note: str,
            request: gr.Request,
            verdict: Verdict = verdict,
        ) -> tuple[Any, ...]:
            if round_ is None or round_.round_id in voted_rounds:
                raise gr.Error("Get two answers first; each pair takes one vote.")
            if any(column.status != "done" for column in round_.columns):
                raise gr.Error("One answer failed, so this pair cannot be judged.")
            # Claimed before any await: the four buttons are separate events that may run at once.
            voted_rounds.add(round_.round_id)
            record = Vote(
                session_id=request.username or request.session_hash or "unknown",
                request=round_.request,
                a=_side(round_.columns[0]),
                b=_side(round_.columns[1]),
                verdict=verdict,
                comment=(note or "").strip(),
            )
            try:
                vote_id = await asyncio.to_thread(runtime.votes.record, record)
            except VoteError as exc:
                voted_rounds.discard(round_.round_id)
                raise gr.Error(str(exc)) from None
            source = round_.request.text
            a, b = round_.columns
            reveal = (
                f"Vote saved (#{vote_id}). **A** was {a.label} (`{a.model_id} @ {a.version}`); "
                f"**B** was {b.label} (`{b.model_id} @ {b.version}`)."
            )
            return (
                reveal,
                column_html(round_.columns[0], source),
                column_html(round_.columns[1], source),
                round_,
                "",
                *[gr.update(interactive=False) for _ in buttons],
            )

        button.click(
            vote,
            inputs=[current, comment],
            outputs=[status, side_a, side_b, current, comment, *buttons],
            api_name=f"vote_{verdict}",
        )


def stopped(column: Column) -> Column:
    return column if column.finished else replace(column, status="cancelled")


def _side(column: Column) -> Side:
    response = column.response
    return Side(
        backend=column.backend,
        model_id=column.model_id,
        label=column.label,
        output=response.revised_text if response is not None else "",
        latency_ms=response.latency_ms if response is not None else column.elapsed_ms,
        ttft_ms=column.ttft_ms,
        error=column.error,
        version=column.version or UNKNOWN_VERSION,
    )


def _leaderboard_tab(runtime: Runtime, tab: gr.Tab) -> None:
    gr.Markdown(
        "Win rate counts a tie or a 'both bad' as half a win; the interval is a 95% Wilson "
        "interval. The rating is a Bradley-Terry fit on an Elo-like scale (mean 1000), with a "
        "bootstrap interval."
    )
    refresh = gr.Button("Refresh", elem_id="leaderboard-refresh")
    table = gr.Dataframe(label="Leaderboard", interactive=False, elem_id="leaderboard-table")
    with gr.Row():
        board_csv = gr.DownloadButton("Download leaderboard CSV", elem_id="leaderboard-csv")
        votes_csv = gr.DownloadButton("Download votes CSV", elem_id="votes-csv")

    exports = runtime.config.settings.state_dir / "exports"

    def load() -> tuple[Any, str, str]:
        """Synchronous on purpose: Gradio runs it in a worker thread, so fitting the ratings
        never stalls the columns streaming for other reviewers."""
        board = leaderboard.leaderboard(runtime.votes.votes())
        board_path = leaderboard.export_csv(board, exports / "leaderboard.csv")
        votes_path = runtime.votes.export_csv(exports / "votes.csv")
        return board.round(3), str(board_path), str(votes_path)

    outputs = [table, board_csv, votes_csv]
    refresh.click(load, outputs=outputs, api_name="leaderboard", concurrency_limit=1)
    tab.select(load, outputs=outputs, api_visibility="private", concurrency_limit=1)


def _dashboard_tab(runtime: Runtime, tab: gr.Tab) -> None:
    root = runtime.config.eval_runs_dir
    gr.Markdown(
        f"Eval run folders under `{root}` (written by `python -m eval run`). Latency target: "
        f"P95 total under {dashboard.LATENCY_TARGET_MS / 1000:.0f} s."
    )
    refresh = gr.Button("Refresh", elem_id="dashboard-refresh")
    note = gr.Markdown()
    scores = gr.Dataframe(label="Scores per backend", interactive=False)
    scores_plot = gr.Plot(label="Scores")
    latency = gr.Dataframe(label="Latency percentiles (ms)", interactive=False)
    latency_plot = gr.Plot(label="Latency")

    def load() -> tuple[Any, ...]:
        runs, broken, scores, latencies = [], [], [], []
        for run in dashboard.find_runs(root):
            try:  # one half-written or damaged run must not hide the others
                run_scores = dashboard.scores_table([run])
                run_latency = dashboard.latency_table([run])
            except dashboard.DashboardError as exc:
                logger.warning("dashboard: %s", exc)
                broken.append(run.name)
            else:
                runs.append(run)
                scores.append(run_scores)
                latencies.append(run_latency)
        if runs:  # each summary read once
            score_table = pd.concat(scores, ignore_index=True)
            latency_table = pd.concat(latencies, ignore_index=True)
        else:
            score_table, latency_table = dashboard.scores_table([]), dashboard.latency_table([])
        message = f"{len(runs)} run(s) found." if runs else f"No eval runs found under `{root}`."
        if broken:
            message += f" Skipped, unreadable: {', '.join(broken)} (details in the log)."
        return (
            message,
            score_table.round(3),
            dashboard.scores_figure(score_table),
            latency_table.round(1),
            dashboard.latency_figure(latency_table),
        )

    outputs = [note, scores, scores_plot, latency, latency_plot]
    refresh.click(load, outputs=outputs, api_name="dashboard")
    tab.select(load, outputs=outputs, api_visibility="private")
    _base_vs_run(root, refresh, tab)


def _base_vs_run(root: Path, refresh: gr.Button, tab: gr.Tab) -> None:
    """Two runs side by side with the paired bootstrap, the newest base/tuned pair first."""
    gr.Markdown(
        "### Base vs run\nRun B against run A, paired by example: the delta of the means, "
        "its 95% bootstrap interval, and a verdict where the interval leaves out 0. "
        f"By default the newest `<prefix>{dashboard.BASE_SUFFIX}` (A) and "
        f"`<prefix>{dashboard.TUNED_SUFFIX}` (B) under `{root}`."
    )
    with gr.Row():
        run_a = gr.Dropdown(label="Run A", elem_id="dashboard-run-a")
        run_b = gr.Dropdown(label="Run B", elem_id="dashboard-run-b")
    note = gr.Markdown(elem_id="dashboard-comparison-note")
    table = gr.Dataframe(label="Run B against run A", interactive=False)
    types = gr.Dataframe(
        label="Grammar edits by ERRANT error type (custom): right (tp), wrong (fp), missed (fn)",
        interactive=False,
    )

    def compare(first: str | None, second: str | None) -> tuple[str, pd.DataFrame, pd.DataFrame]:
        """Synchronous: Gradio runs it in a worker thread, off the streaming loop."""
        empty = pd.DataFrame(columns=dashboard.COMPARISON_COLUMNS)
        no_types = pd.DataFrame(columns=dashboard.ERROR_TYPE_COLUMNS)
        if not first or not second:
            return "Pick two runs to compare.", empty, no_types
        try:
            result = dashboard.comparison_table(first, second)
            notes = dashboard.comparison_notes(first, second, result)
            by_type = dashboard.error_types_table(first, second)
        except dashboard.DashboardError as exc:
            return f"Cannot compare: {exc}", empty, no_types
        heading = f"**A**: {Path(first).name}, **B**: {Path(second).name}."
        return " ".join([heading, *notes]), result.round(4), by_type

    def load(first: str | None, second: str | None) -> tuple[Any, ...]:
        runs = [str(run) for run in dashboard.list_runs(root)]
        if first not in runs or second not in runs:  # keep the reviewer's pick while it exists
            pairs = dashboard.find_pairs(root)
            first, second = (str(pairs[0].base), str(pairs[0].tuned)) if pairs else (None, None)
        choices = [(Path(run).name, run) for run in runs]
        return (
            gr.update(choices=choices, value=first),
            gr.update(choices=choices, value=second),
            *compare(first, second),
        )

    outputs = [run_a, run_b, note, table, types]
    refresh.click(load, inputs=[run_a, run_b], outputs=outputs, api_name="base_vs_run")
    tab.select(load, inputs=[run_a, run_b], outputs=outputs, api_visibility="private")
    for choice in (run_a, run_b):
        choice.input(
            compare, inputs=[run_a, run_b], outputs=[note, table, types], api_visibility="private"
        )
