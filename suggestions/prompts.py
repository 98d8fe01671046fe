"""The prompt contract: the only place chat messages for a suggestion are built.

Training formats its examples with `build_training_messages`, serving and eval send
`build_messages`, and the baseline keeps the old proxy's generic prompt (`build_baseline_messages`).
`extract_revised_text` turns whatever a model wrote back into the revised passage.
"""

from __future__ import annotations

import math
import re
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
    """About four characters a token for English; used only when a server reports no usage."""
    return math.ceil(len(text) / 4)


# --- Reading the model's answer -------------------------------------------------------------

_FENCE = re.compile(r"^```[\w-]*[ \t]*\n(?P<body>.*?)\n?```[ \t]*$", re.DOTALL)
_PREAMBLE = re.compile(
    r"^(?:(?:sure|certainly|okay|ok|of course|absolutely)\b[^\n]*?[.!,]?\s*)?"
    r"(?:here(?:'s| is| are)|below is|the (?:corrected|revised|edited|improved|rewritten)|"
    r"(?:corrected|revised|edited|improved|rewritten|updated)(?: (?:text|version|passage))?)"
    r"[^\n]{0,80}:[ \t]*\n+",
    re.IGNORECASE,
)
_BARE_ACK = re.compile(
    r"^(?:sure|certainly|okay|ok|of course|absolutely)[^\n]{0,60}[.!:][ \t]*\n+",
    re.IGNORECASE,
)
_INLINE_LABEL = re.compile(
    r"^(?:corrected|revised|edited|improved|rewritten|output)"
    r"(?: (?:text|version|passage|sentence))?:[ \t]+(?=\S)",
    re.IGNORECASE,
)
_TRAILER = re.compile(
    r"^(?:\*{0,2}(?:explanation|changes|changes made|corrections|corrections made|edits|notes?|"
    r"summary of changes)\b[^\n]*:|"
    r"i (?:have |'ve )?(?:made|corrected|changed|fixed|revised|replaced|removed|rewrote)\b|"
    r"(?:the |these |my )?(?:changes|corrections|edits) (?:i made|made|include|were)\b|"
    r"let me know\b|i hope\b)",
    re.IGNORECASE,
)
_QUOTE_PAIRS = {
    '"': '"',
    "'": "'",
    "\u201c": "\u201d",
    "\u2018": "\u2019",
    "\u00ab": "\u00bb",
}
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def extract_revised_text(output: str, original: str) -> str:
    """The revised passage inside a model's answer.

    Strips code fences, chatty preambles ("Here is the corrected text:"), wrapping quotes the
    original did not have, and explanations added after the passage; then restores the original's
    leading and trailing whitespace, which models drop and users never mean to change.
    """
    text = output.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group("body").strip()
    for pattern in (_PREAMBLE, _BARE_ACK, _INLINE_LABEL):
        stripped = pattern.sub("", text, count=1)
        if stripped.strip() and not pattern.match(original.strip()):
            text = stripped.strip()
    text = _drop_trailing_explanations(text, original)
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group("body").strip()
    text = _unquote(text, original.strip())
    if not text:
        return ""
    leading = original[: len(original) - len(original.lstrip())]
    trailing = original[len(original.rstrip()) :]
    return f"{leading}{text}{trailing}"


def _drop_trailing_explanations(text: str, original: str) -> str:
    """Cut the answer at the first paragraph that reads as a note about the edit, but only when
    the answer has more paragraphs than the original (so a real closing paragraph is kept)."""
    breaks = list(_PARAGRAPH_BREAK.finditer(text))
    original_count = len(_PARAGRAPH_BREAK.split(original.strip()))
    if len(breaks) + 1 <= original_count:
        return text
    for index in range(max(1, original_count), len(breaks) + 1):
        paragraph = text[breaks[index - 1].end() :]
        if _TRAILER.match(paragraph.lstrip("*_ \t")):
            return text[: breaks[index - 1].start()].rstrip()
    return text


def _unquote(text: str, original: str) -> str:
    if len(text) < 2 or (original and original[0] in _QUOTE_PAIRS):
        return text
    closing = _QUOTE_PAIRS.get(text[0])
    if closing and text.endswith(closing):
        return text[1:-1].strip()
    return text
