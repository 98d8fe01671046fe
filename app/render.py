"""HTML for one column: who answered, how fast, the revision with its edits marked, the edit list.

Everything from a model or a user is escaped: a model's answer is untrusted text. The
`data-*` attributes are there for the browser test and for anyone scripting the page.
"""

from __future__ import annotations

from html import escape

from suggestions.contract import LlamaSuggestion

from .compare import Column

CSS = """
.ws-col { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 12px;
  min-height: 180px; }
.ws-col h3 { margin: 0 0 2px 0; font-size: 1rem; }
.ws-model { color: var(--body-text-color-subdued); font-size: 0.8rem; margin-bottom: 6px; }
.ws-stats { display: flex; flex-wrap: wrap; gap: 6px; margin-bottom: 8px; font-size: 0.8rem; }
.ws-stat { background: var(--background-fill-secondary); border-radius: 4px; padding: 1px 6px;
  font-variant-numeric: tabular-nums; }
.ws-badge { border-radius: 4px; padding: 1px 6px; font-weight: 600; }
.ws-status-done .ws-state { background: #d1fae5; color: #065f46; }
.ws-status-streaming .ws-state, .ws-status-waiting .ws-state { background: #e0e7ff;
  color: #3730a3; }
.ws-status-failed .ws-state, .ws-status-cancelled .ws-state { background: #fee2e2;
  color: #991b1b; }
.ws-cached { background: #fef3c7; color: #92400e; }
.ws-text { white-space: pre-wrap; line-height: 1.5; }
.ws-text del { background: #fee2e2; color: #991b1b; }
.ws-text ins { background: #d1fae5; color: #065f46; text-decoration: none; }
.ws-error { color: #991b1b; }
.ws-edits { margin: 8px 0 0 0; padding-left: 18px; font-size: 0.85rem; }
.ws-type { color: var(--body-text-color-subdued); }
"""

STATE_WORDS = {
    "waiting": "waiting",
    "streaming": "streaming",
    "done": "done",
    "failed": "failed",
    "cancelled": "stopped",
}


def column_html(column: Column, source: str, *, blind_heading: str | None = None) -> str:
    """The whole column. Blind mode shows only `blind_heading`: no name, model or timing."""
    blind = blind_heading is not None
    title = column.label if blind_heading is None else blind_heading
    model = "" if blind else f"model: {column.model_id}"
    stats = "" if blind else _stats(column)
    backend = "" if blind else column.backend
    return (
        f'<div class="ws-col ws-status-{column.status}" data-backend="{escape(backend)}" '
        f'data-status="{column.status}">'
        f"<h3>{escape(title)}</h3>"
        f'<div class="ws-model">{escape(model)}</div>'
        f'<div class="ws-stats">{stats}</div>'
        f"{_body(column, source)}"
        "</div>"
    )


def placeholder_html(label: str, message: str) -> str:
    return (
        f'<div class="ws-col" data-status="idle"><h3>{escape(label)}</h3>'
        f'<div class="ws-text ws-type">{escape(message)}</div></div>'
    )


def _stats(column: Column) -> str:
    parts = [f'<span class="ws-badge ws-state">{STATE_WORDS[column.status]}</span>']
    ttft = f"{column.ttft_ms / 1000:.2f} s" if column.ttft_ms is not None else "–"
    parts.append(f'<span class="ws-stat" title="time to first token">first token {ttft}</span>')
    parts.append(f'<span class="ws-stat" title="total time">total {_seconds(column)}</span>')
    speed = column.tokens_per_s
    if speed is not None:
        parts.append(f'<span class="ws-stat">{speed:.1f} tok/s</span>')
    if column.response is not None and column.response.cached:
        parts.append(
            '<span class="ws-badge ws-cached" title="from the 5-minute cache">cached</span>'
        )
    return "".join(parts)


def _seconds(column: Column) -> str:
    return f"{column.elapsed_ms / 1000:.2f} s"


def _body(column: Column, source: str) -> str:
    if column.status == "failed":
        return f'<div class="ws-error">{escape(column.error or "This backend failed.")}</div>'
    if column.response is not None:
        suggestions = column.response.suggestions
        return (
            f'<div class="ws-text">{marked_revision(source, suggestions)}</div>'
            f"{edit_list_html(suggestions)}"
        )
    if column.status == "waiting":
        return '<div class="ws-text ws-type">waiting for the first words…</div>'
    return f'<div class="ws-text">{escape(column.text)}</div>'


def marked_revision(source: str, suggestions: list[LlamaSuggestion]) -> str:
    """The source with each edit shown as a deletion and an insertion, in reading order."""
    out: list[str] = []
    position = 0
    for edit in sorted(suggestions, key=lambda s: (s.start, s.end)):
        if edit.start < position:  # overlapping edits cannot be drawn inline; skip the later
            continue
        out.append(escape(source[position : edit.start]))
        if edit.original:
            out.append(f"<del>{escape(edit.original)}</del>")
        if edit.replacement:
            out.append(f"<ins>{escape(edit.replacement)}</ins>")
        position = edit.end
    out.append(escape(source[position:]))
    return "".join(out)


def edit_list_html(suggestions: list[LlamaSuggestion]) -> str:
    if not suggestions:
        return '<div class="ws-type" data-edits="0">No changes suggested.</div>'
    items = "".join(
        f"<li><del>{escape(s.original) or '∅'}</del> → <ins>{escape(s.replacement) or '∅'}</ins>"
        f' <span class="ws-type">({escape(s.type)})</span></li>'
        for s in suggestions
    )
    return f'<ol class="ws-edits" data-edits="{len(suggestions)}">{items}</ol>'
