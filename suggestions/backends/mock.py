"""A deterministic stand-in model: a small rule table, streamed word by word.

Its edits are real ones (they show up as suggestions), it needs no network, and it is what the
custom slot answers with outside production when no model URL is set.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from functools import partial

from ..contract import LlamaRequest, SuggestionType, TokenUsage
from ..errors import StreamInterrupted
from ..prompts import build_messages
from .base import BackendEvent, StreamEnd, TextDelta


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    replacement: str
    types: frozenset[SuggestionType]


def _rule(pattern: str, replacement: str, *types: SuggestionType) -> Rule:
    return Rule(re.compile(pattern, re.IGNORECASE), replacement, frozenset(types))


_ALL: tuple[SuggestionType, ...] = ("grammar", "clarity", "style")

RULES: tuple[Rule, ...] = (
    # grammar: applied for every type, since clearer or finer prose is also correct prose
    _rule(r"\bgo to (\w+) yesterday\b", r"went to \1 yesterday", *_ALL),
    _rule(r"\bbuyed\b", "bought", *_ALL),
    _rule(r"\bbringed\b", "brought", *_ALL),
    _rule(r"\bteached\b", "taught", *_ALL),
    _rule(r"\ba (books|friends|apples|letters|days|things|people)\b", r"\1", *_ALL),
    _rule(r"\b(he|she|it) (don't)\b", r"\1 doesn't", *_ALL),
    _rule(r"\b(he|she|it) (go|want|need|like|say)\b", r"\1 \2s", *_ALL),
    _rule(r"\b(could|should|would) of\b", r"\1 have", *_ALL),
    _rule(r"\balot\b", "a lot", *_ALL),
    _rule(r"\bdont\b", "don't", *_ALL),
    _rule(r"\bcant\b", "can't", *_ALL),
    _rule(r"\brecieve", "receive", *_ALL),
    _rule(r"\bseperate", "separate", *_ALL),
    _rule(r"\bdefinately\b", "definitely", *_ALL),
    _rule(r"\btheir (is|are|was|were)\b", r"there \1", *_ALL),
    _rule(r"\byour (welcome|right)\b", r"you're \1", *_ALL),
    _rule(r"\bi\b", "I", *_ALL),
    _rule(r"(?<=\w) {2,}(?=\w)", " ", *_ALL),
    # clarity: cut the filler that hides the point
    _rule(r"\bin order to\b", "to", "clarity", "style"),
    _rule(r"\bdue to the fact that\b", "because", "clarity", "style"),
    _rule(r"\bat this point in time\b", "now", "clarity", "style"),
    _rule(r"\bin the event that\b", "if", "clarity", "style"),
    _rule(r"\bfor the purpose of\b", "for", "clarity", "style"),
    _rule(r"\bhas the ability to\b", "can", "clarity", "style"),
    _rule(r"\bit is important to note that\s+", "", "clarity", "style"),
    _rule(r"\bbasically,?\s+", "", "clarity", "style"),
    # style: stronger, plainer words
    _rule(r"\bvery (big|large)\b", "enormous", "style"),
    _rule(r"\bvery (small|little)\b", "tiny", "style"),
    _rule(r"\bvery (good|nice)\b", "excellent", "style"),
    _rule(r"\bvery (bad)\b", "terrible", "style"),
    _rule(r"\bvery (tired)\b", "exhausted", "style"),
    _rule(r"\bvery (happy)\b", "delighted", "style"),
    _rule(r"\bvery (scared|afraid)\b", "terrified", "style"),
    _rule(r"\breally\s+", "", "style"),
    _rule(r"\ba lot of\b", "many", "style"),
    _rule(r"\bwalked quickly\b", "hurried", "style"),
    _rule(r"\bsaid loudly\b", "shouted", "style"),
    # last, so that it also sees the words the rules above put in
    _rule(r"\ba ([aeio]\w*)\b", r"an \1", *_ALL),
)


def revise(text: str, suggestion_type: SuggestionType) -> str:
    """Apply the rule table, keeping a capital letter where the original had one."""
    for rule in RULES:
        if suggestion_type in rule.types:
            text = rule.pattern.sub(partial(_keep_case, rule.replacement), text)
    return text


def _keep_case(replacement: str, match: re.Match[str]) -> str:
    new = match.expand(replacement)
    if match.group(0)[:1].isupper() and new[:1].islower():
        return new[:1].upper() + new[1:]
    return new


_WORD_WITH_SPACE = re.compile(r"\S+\s*|\s+")


class MockBackend:
    """Streams `revise(text)` word by word; `delay_s` between words, `fail_after` words to fail."""

    def __init__(
        self,
        *,
        name: str = "mock",
        delay_s: float = 0.0,
        first_token_delay_s: float = 0.0,
        fail_after: int | None = None,
        label: str = "mock: rule-based, no model",
    ) -> None:
        self.name = name
        self.model_id = "mock"
        self.label = label
        self.delay_s = delay_s
        self.first_token_delay_s = first_token_delay_s
        self.fail_after = fail_after

    async def stream(self, request: LlamaRequest) -> AsyncGenerator[BackendEvent, None]:
        words = _WORD_WITH_SPACE.findall(revise(request.text, request.type))
        if self.first_token_delay_s:
            await asyncio.sleep(self.first_token_delay_s)
        for index, word in enumerate(words):
            if self.fail_after is not None and index >= self.fail_after:
                raise StreamInterrupted(
                    f"mock stream stopped after {index} words", backend=self.name
                )
            if index and self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield TextDelta(word)
        prompt_words = sum(len(m["content"].split()) for m in build_messages(request))
        usage = TokenUsage(prompt_tokens=prompt_words, completion_tokens=len(words))
        yield StreamEnd(model_id=self.model_id, finish_reason="stop", usage=usage)
