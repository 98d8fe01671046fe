"""The revised passage inside a model's answer.

Models wrap their edit in chatter: a code fence, "Sure! Here is the corrected text:", a label
("Corrected: ..."), quotes, or notes after the passage ("I changed 'go' to 'went'."). Each is cut
only when its pattern matches AND the piece it would remove is not part of the original passage,
so a passage that itself starts with "Okay, so..." or ends with a first-person paragraph keeps
every word.
"""

from __future__ import annotations

import re

from rapidfuzz import fuzz

_FENCE = re.compile(r"```[\w-]*[ \t]*\n(?P<body>.*?)\n?```[ \t]*", re.DOTALL)
_ACK = r"(?:sure|certainly|okay|ok|of course|absolutely)\b"
_PREAMBLE_LINE = re.compile(  # matched against one line of at most _MAX_PREAMBLE characters
    rf"(?:{_ACK}[^\n]{{0,60}}?[.!,:][ \t]*)?"
    r"(?:here(?:'s| is| are)|below is|the (?:corrected|revised|edited|improved|rewritten)|"
    r"(?:corrected|revised|edited|improved|rewritten|updated)(?: (?:text|version|passage))?)"
    r"\b[^\n]{0,100}:"
    rf"|{_ACK}[^\n]{{0,60}}[.!:]",
    re.IGNORECASE,
)
_MAX_PREAMBLE = 200
_LABEL = re.compile(
    r"(?:corrected|revised|edited|improved|rewritten|output)"
    r"(?: (?:text|version|passage|sentence))?:[ \t]+(?=\S)",
    re.IGNORECASE,
)
_TRAILER = re.compile(
    r"[*_ \t]*(?:(?:explanation|changes|changes made|corrections|corrections made|edits|notes?|"
    r"summary of changes)\b[^\n]{0,80}:|"
    r"i (?:have |'ve )?(?:made|corrected|changed|fixed|revised|replaced|removed|rewrote|"
    r"rewritten|reworded|rephrased|split|added|combined|merged|moved|adjusted|improved|"
    r"simplified|shortened|tightened|cut|kept|updated|reorganized|reorganised)\b|"
    r"(?:the |these |my )?(?:changes|corrections|edits) (?:i made|made|include|were)\b|"
    r"let me know\b|i hope\b)",
    re.IGNORECASE,
)
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb"}
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_WORD = re.compile(r"\w+")
_SHORT_PIECE = 16  # characters; shorter pieces must appear verbatim to count as the passage's
_SIMILAR = 80  # rapidfuzz partial_ratio from which a longer piece counts as the passage's
_OPENING_WORDS = 6  # a piece is judged by its opening words: a model may extend what follows


def extract_revised_text(output: str, original: str) -> str:
    """The passage the model wrote, with the original's leading and trailing whitespace (which
    models drop and users never mean to change). Empty when the answer holds no text."""
    passage = _Passage(original)
    text = _unfence(output.strip(), original)
    while (shorter := _cut_preamble(text, passage)) is not None:  # "Sure!\nHere it is:\n..."
        text = shorter
    text = _cut_label(text, passage)
    text = _cut_trailer(text, passage)
    text = _unquote(_unfence(text, original), original)
    if not text:
        return ""
    leading = original[: len(original) - len(original.lstrip())]
    trailing = original[len(original.rstrip()) :]
    return f"{leading}{text}{trailing}"


class _Passage:
    """The original, normalised once, answering "is this piece part of it?"."""

    def __init__(self, original: str) -> None:
        self.words = " ".join(_WORD.findall(original.casefold()))

    def contains(self, piece: str) -> bool:
        """Whether the piece's opening words appear, give or take an edit, in the passage."""
        words = " ".join(_WORD.findall(piece.casefold())[:_OPENING_WORDS])
        if not words:
            return False
        if len(words) < _SHORT_PIECE:
            return f" {words} " in f" {self.words} "
        return fuzz.partial_ratio(words, self.words) >= _SIMILAR


def _unfence(text: str, original: str) -> str:
    fenced = _FENCE.fullmatch(text)
    if fenced is None or original.lstrip().startswith("```"):
        return text
    return fenced.group("body").strip()


def _cut_preamble(text: str, passage: _Passage) -> str | None:
    first, newline, rest = text.partition("\n")
    first = first.strip()
    if not newline or not rest.strip() or len(first) > _MAX_PREAMBLE:
        return None
    if _PREAMBLE_LINE.fullmatch(first) and not passage.contains(first):
        return rest.strip()
    return None


def _cut_label(text: str, passage: _Passage) -> str:
    label = _LABEL.match(text)
    if label is None or passage.contains(label.group(0)):
        return text
    return text[label.end() :].strip()


def _cut_trailer(text: str, passage: _Passage) -> str:
    """Cut before the first paragraph that reads like a note about the edit and is not the
    passage's own (a model may split a paragraph, and a passage may speak in the first person)."""
    breaks = list(_PARAGRAPH_BREAK.finditer(text))
    for index, brk in enumerate(breaks):
        end = breaks[index + 1].start() if index + 1 < len(breaks) else len(text)
        paragraph = text[brk.end() : end]
        if _TRAILER.match(paragraph) and not passage.contains(paragraph):
            return text[: brk.start()].rstrip()
    return text


def _unquote(text: str, original: str) -> str:
    """Drop quotes wrapped around the whole answer, unless they belong to the text: the original
    starts or ends with a quote, or the same mark appears inside (dialogue, apostrophes)."""
    closing = _QUOTES.get(text[:1])
    if not closing or len(text) < 2 or not text.endswith(closing):
        return text
    inner, stripped = text[1:-1], original.strip()
    marks = set(_QUOTES) | set(_QUOTES.values())
    if stripped[:1] in marks or stripped[-1:] in marks or text[0] in inner or closing in inner:
        return text
    return inner.strip()
