"""The prompt contract: the only place chat messages for a suggestion are built.

Training formats its examples with `build_training_messages`, serving and eval send
`build_messages`, and the baseline keeps the old proxy's generic prompt (`build_baseline_messages`).
`extract_revised_text` turns whatever a model wrote back into the revised passage.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Literal, TypedDict

from .contract import LlamaRequest, SuggestionType


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


SYSTEM_PROMPT = (
    "You are a careful editor for authors. You receive a passage and return the whole passage "
    "with your edits applied. Reply with the edited passage only: no preamble, no quotation "
    "marks, no notes or explanations. Keep the author's paragraph breaks."
)

TASK_INSTRUCTIONS: dict[SuggestionType, str] = {
    "grammar": (
        "Task: grammar. Correct grammar, spelling, punctuation and agreement errors. "
        "Change nothing else: keep the author's words, voice and meaning."
    ),
    "clarity": (
        "Task: clarity. Make the passage clear and direct: cut wordiness, untangle long or "
        "ambiguous sentences, prefer the active voice. Keep the meaning and the author's voice, "
        "and correct any errors."
    ),
    "style": (
        "Task: style. Improve the style: precise, vivid word choice, varied sentence rhythm, no "
        "clichés or filler. Keep the meaning, the point of view and the author's voice."
    ),
}

BASELINE_SYSTEM_PROMPT = "You are a helpful assistant."
BASELINE_TASK_WORDS: dict[SuggestionType, str] = {
    "grammar": "grammar",
    "clarity": "clarity",
    "style": "style",
}


def build_messages(request: LlamaRequest) -> list[ChatMessage]:
    """Messages our fine-tuned model is trained on and served with."""
    user = f"Passage:\n{request.text}"
    if request.context:
        user = f"Context (for reference, do not edit):\n{request.context}\n\n{user}"
    return [
        {
            "role": "system",
            "content": f"{SYSTEM_PROMPT}\n\n{TASK_INSTRUCTIONS[request.type]}",
        },
        {"role": "user", "content": user},
    ]


def build_training_messages(request: LlamaRequest, target: str) -> list[ChatMessage]:
    """A training example: exactly the served prompt, then the target as the assistant turn."""
    return [*build_messages(request), {"role": "assistant", "content": target}]


def build_baseline_messages(request: LlamaRequest) -> list[ChatMessage]:
    """The old proxy's generic prompt, kept so the baseline is compared as it really ran."""
    word = BASELINE_TASK_WORDS[request.type]
    return [
        {"role": "system", "content": BASELINE_SYSTEM_PROMPT},
        {
            "role": "user",
            "content": f"Improve the {word} of the following text. Return only the improved "
            f"text.\n\n{request.text}",
        },
    ]


def max_output_tokens(request: LlamaRequest) -> int:
    """Room for a rewrite a little longer than the input, so a good answer is never cut off."""
    return min(4096, 2 * estimate_tokens(request.text) + 64)


def estimate_tokens(text: str) -> int:
    """About four characters a token for ASCII text and one for any other character (CJK runs
    near one token a character); used for output budgets and when a server reports no usage."""
    ascii_chars = sum(1 for char in text if char.isascii())
    return math.ceil(ascii_chars / 4 + (len(text) - ascii_chars))


# --- Reading the model's answer -------------------------------------------------------------

_FENCE = re.compile(r"```[\w-]*[ \t]*\n(?P<body>.*?)\n?```[ \t]*", re.DOTALL)
_ACK = r"(?:sure|certainly|okay|ok|of course|absolutely)\b"
_PREAMBLE_LINE = re.compile(  # matched against a first line of at most _MAX_PREAMBLE characters
    rf"(?:{_ACK}[^\n]{{0,60}}?[.!,:][ \t]*)?"
    r"(?:here(?:'s| is| are)|below is|the (?:corrected|revised|edited|improved|rewritten)|"
    r"(?:corrected|revised|edited|improved|rewritten|updated)(?: (?:text|version|passage))?)"
    r"\b[^\n]{0,100}:",
    re.IGNORECASE,
)
_ACK_LINE = re.compile(rf"{_ACK}[^\n]{{0,60}}[.!:]", re.IGNORECASE)
_MAX_PREAMBLE = 200
_INLINE_LABEL = re.compile(
    r"(?:corrected|revised|edited|improved|rewritten|output)"
    r"(?: (?:text|version|passage|sentence))?:[ \t]+(?=\S)",
    re.IGNORECASE,
)
_TRAILER = re.compile(
    r"(?:\*{0,2}(?:explanation|changes|changes made|corrections|corrections made|edits|notes?|"
    r"summary of changes)\b[^\n]{0,80}:|"
    r"i (?:have |'ve )?(?:made|corrected|changed|fixed|revised|replaced|removed|rewrote|"
    r"rewritten|reworded|rephrased|split|added|combined|merged|moved|adjusted|improved|"
    r"simplified|shortened|tightened|cut|kept|updated|reorganized|reorganised)\b|"
    r"(?:the |these |my )?(?:changes|corrections|edits) (?:i made|made|include|were)\b|"
    r"let me know\b|i hope\b)",
    re.IGNORECASE,
)
_QUOTE_PAIRS = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb"}
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def extract_revised_text(output: str, original: str) -> str:
    """The revised passage inside a model's answer.

    Tries, in turn, to strip a code fence, a chatty preamble ("Here is the corrected text:"), a
    label ("Corrected: ..."), explanations after the passage, and wrapping quotes. Each cut is kept
    only if it brings the answer closer to the original passage, so text that belongs to the
    passage (a first line that reads like a preamble, a closing paragraph in the first person,
    dialogue in quotes) is never cut. Then restores the original's leading and trailing
    whitespace, which models drop and users never mean to change.
    """
    passage = original.strip()
    text = output.strip()
    for cut in (_cut_fence, _cut_preamble, _cut_label, _cut_trailer, _cut_fence, _cut_quotes):
        for candidate in cut(text):
            candidate = candidate.strip()
            if candidate and _closeness(candidate, passage) > _closeness(text, passage):
                text = candidate
                break
    if not text:
        return ""
    leading = original[: len(original) - len(original.lstrip())]
    trailing = original[len(original.rstrip()) :]
    return f"{leading}{text}{trailing}"


def _closeness(text: str, passage: str) -> float:
    """How much of the two texts' characters they share (difflib's quick_ratio), in O(n)."""
    if not text and not passage:
        return 1.0
    shared = sum((Counter(text) & Counter(passage)).values())
    return 2 * shared / (len(text) + len(passage))


def _cut_fence(text: str) -> list[str]:
    fenced = _FENCE.fullmatch(text)
    return [fenced.group("body")] if fenced else []


def _cut_preamble(text: str) -> list[str]:
    first, newline, rest = text.partition("\n")
    first = first.strip()
    if not newline or len(first) > _MAX_PREAMBLE:
        return []
    if _PREAMBLE_LINE.fullmatch(first) or _ACK_LINE.fullmatch(first):
        return [rest]
    return []


def _cut_label(text: str) -> list[str]:
    label = _INLINE_LABEL.match(text)
    return [text[label.end() :]] if label else []


def _cut_trailer(text: str) -> list[str]:
    """The answer cut before each paragraph that reads like a note about the edit."""
    return [
        text[: brk.start()]
        for brk in _PARAGRAPH_BREAK.finditer(text)
        if _TRAILER.match(text, brk.end()) or _TRAILER.match(text[brk.end() :].lstrip("*_ \t"))
    ]


def _cut_quotes(text: str) -> list[str]:
    closing = _QUOTE_PAIRS.get(text[:1])
    return [text[1:-1]] if closing and len(text) >= 2 and text.endswith(closing) else []
