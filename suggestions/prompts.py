"""The prompt contract: the only place chat messages for a suggestion are built.

Training formats its examples with `build_training_messages`, serving and eval send
`build_messages`, and the baseline keeps the old proxy's generic prompt (`build_baseline_messages`).
`extract.extract_revised_text` turns whatever a model wrote back into the revised passage.
"""

from __future__ import annotations

import math

from .contract import LlamaRequest, SuggestionType
from .wire import ChatMessage

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
    return [
        {"role": "system", "content": BASELINE_SYSTEM_PROMPT},
        {
            "role": "user",
            "content": f"Improve the {request.type} of the following text. "
            f"Return only the improved text.\n\n{request.text}",
        },
    ]


MAX_OUTPUT_TOKENS = 16_384  # a model server must accept max_tokens up to this


def max_output_tokens(request: LlamaRequest) -> int:
    """Room for a rewrite a little longer than the input, so a good answer is never cut off;
    at the 8,000-character limit even CJK text (about a token a character) fits."""
    return min(MAX_OUTPUT_TOKENS, 2 * estimate_tokens(request.text) + 64)


def estimate_tokens(text: str) -> int:
    """About four characters a token for ASCII text and one for any other character (CJK runs
    near one token a character); used for output budgets and when a server reports no usage."""
    ascii_chars = sum(1 for char in text if char.isascii())
    return math.ceil(ascii_chars / 4 + (len(text) - ascii_chars))
