"""Clarity and style injection for `augment`: make a tight sentence wordy, passive or padded.

The clean sentence is the target, so each rule only adds what a clarity or style edit would
take out again: a wordy phrase for a plain word ("due to the fact that" for "because"), a
redundant modifier, a nominalisation, a passive, a filler, an intensifier or a cliché. None adds
information, so the clean sentence still says everything the padded one does.
"""

from __future__ import annotations

import random
import re

from .augment_rules import (
    Context,
    Rule,
    like,
    one_of,
    sub_one,
    word_after,
    word_before,
    word_set,
    words_pattern,
)

_STARTS = re.compile(r"(?:^|(?<=[.!?] ))(?=[A-Z])")


def sentence_starts(text: str) -> list[int]:
    """Where each sentence begins (not inside dialogue, whose quotes a prefix would break)."""
    return [m.start() for m in _STARTS.finditer(text)]


def lower_start(text: str, ctx: Context) -> str:
    """The sentence with its first word lowercased, unless it is a name, "I" or part of a
    title ("Chapter Seven")."""
    word = re.match(r"([\w']+) ?(\w?)", text)
    if word is None or word.group(1) == "I" or word.group(1).lower() not in ctx.lower_words:
        return text
    return text if word.group(2).isupper() else text[0].lower() + text[1:]


def prefix(text: str, rng: random.Random, ctx: Context, phrases: tuple[str, ...]) -> str | None:
    """A phrase put before one sentence: "It is important to note that the ferry was late." """
    starts = sentence_starts(text)
    if not starts or text.startswith('"'):
        return None
    at = starts[rng.randrange(len(starts))]
    if text[at:].startswith(OPENERS):
        return None  # one opener a sentence: "Honestly, truth be told, ..." is no one's draft
    if text[at:].startswith(("If ", "Although ", "Because ", "When ")) and rng.random() < 0.5:
        return None
    phrase = phrases[rng.randrange(len(phrases))]
    return text[:at] + phrase + lower_start(text[at:], ctx)


# --- clarity -----------------------------------------------------------------------------------

THROAT_CLEARING = (
    "It is important to note that ", "It should be noted that ", "It is worth mentioning that ",
    "It is a fact that ", "It goes without saying that ", "It is clear that ",
)  # fmt: skip
PURPOSE_BEFORE = word_set(
    "went came stopped stayed returned paused hurried ran climbed walked drove called phoned "
    "knelt leaned bent sat stood worked moved flew borrowed early home back outside upstairs "
    "downstairs aside down up out off over twice again it them money late"
)
PURPOSE_VERBS = word_set(
    "see buy find check get ask make keep save catch fetch watch hear visit collect meet help "
    "tell read write learn fix hide wash feed open close cover protect avoid reach measure "
    "test study show mark warm cool dry clean stop finish pay raise cut reduce carry bring "
    "explain thank light look tie inspect interview swim repair build finish apply tell"
)
_PURPOSE = re.compile(r"(?<=\w) to (?=(\w+))")
_WORDY = {
    "because": "due to the fact that", "although": "despite the fact that",
    "whether": "whether or not", "usually": "in most cases", "often": "more often than not",
    "always": "at all times", "near": "in the vicinity of",
    "until": "up until", "every day": "on a daily basis", "every week": "on a weekly basis",
    "every year": "on a yearly basis", "close to": "in close proximity to",
}  # fmt: skip
_WORDY_PATTERN = words_pattern(_WORDY)
_OPENERS = {"If ": "In the event that ", "To ": "In order to ", "Most ": "The majority of ",
            "Many ": "A large number of ", "When ": "At the time when ",
            "While ": "During the time that "}  # fmt: skip
_SO = re.compile(r", so (?=(?:he|she|they|we|I|it|the|his|her|their|our|nobody)\b)")
_NOW = re.compile(r"(?<![\w'])now(?=[.,])")
_BEFORE_AFTER = re.compile(r"(?<![\w'])(before|after) (?=(the|a|an|his|her|their|every|dawn)\b)")


def wordiness(text: str, rng: random.Random, ctx: Context) -> str | None:
    """A plain word or phrase padded out: "because" -> "due to the fact that", "in order to"."""
    options: list[str | None] = []

    def wordy(m: re.Match[str]) -> str | None:
        word = m.group(0).lower()
        if word == "because" and word_after(text, m.end()).lower() == "of":
            return None
        return like(m.group(0), _WORDY[word])

    options.append(sub_one(text, _WORDY_PATTERN, wordy, rng))

    def purpose(m: re.Match[str]) -> str | None:
        ok = word_before(text, m.start() + 1) in PURPOSE_BEFORE and m.group(1) in PURPOSE_VERBS
        return " in order to " if ok else None

    options.append(sub_one(text, _PURPOSE, purpose, rng))
    for opener, padded in _OPENERS.items():
        if text.startswith(opener) and (opener != "To " or word_after(text, 3) in PURPOSE_VERBS):
            rest = text[len(opener) :]
            keep = opener in {"If ", "To ", "When ", "While "}
            options.append(padded + (rest if keep else lower_start(rest, ctx)))
    options.append(sub_one(text, _NOW, lambda m: "at this point in time", rng))
    options.append(sub_one(text, _SO, lambda m: ", with the result that ", rng))
    prior = {"before": "prior to ", "after": "subsequent to "}
    options.append(
        sub_one(text, _BEFORE_AFTER, lambda m: like(m.group(1), prior[m.group(1).lower()]), rng)
    )
    return one_of(options, rng)


_REDUNDANT = {
    "plans": "future plans", "history": "past history", "results": "end results",
    "result": "end result", "returned": "returned back", "gift": "free gift",
    "consensus": "consensus of opinion", "the truth": "the honest truth",
    "the twins": "the two twins", "sank": "sank down", "knelt": "knelt down",
    "empty": "completely empty", "circled": "circled around",
    "finished": "completely finished", "essential": "absolutely essential", "began": "first began",
    "repeat": "repeat again", "surrounded": "completely surrounded", "merged": "merged together",
    "at noon": "at twelve noon", "at midnight": "at twelve midnight",
    "combined": "combined together",
}  # fmt: skip
_REDUNDANT_PATTERN = words_pattern(_REDUNDANT)
_DIMENSIONS = {
    "small": "in size", "large": "in size", "big": "in size", "tiny": "in size", "huge": "in size",
    "red": "in color", "blue": "in color", "green": "in color", "white": "in color",
    "brown": "in color", "gray": "in color", "black": "in color", "yellow": "in color",
    "long": "in length", "short": "in length", "heavy": "in weight", "round": "in shape",
    "square": "in shape", "few": "in number", "tall": "in height", "narrow": "in width",
}  # fmt: skip
_DIMENSION = re.compile(r"(?<![\w'])(" + "|".join(_DIMENSIONS) + r")(?=[.,;]| and | but |$)")
_EACH = re.compile(r"(?<![\w'])(each|Each) (?!other|of|one)(?=[a-z])")


def redundancy(text: str, rng: random.Random, ctx: Context) -> str | None:
    """A word that repeats what its neighbour says: "future plans", "each and every"."""

    def redundant(m: re.Match[str]) -> str | None:
        padded = _REDUNDANT[m.group(0).lower()]
        extra = padded.replace(m.group(0).lower(), "").strip()
        if extra in text.lower().split() or word_before(text, m.start()) in {"future", "end"}:
            return None
        return like(m.group(0), padded)

    def dimension(m: re.Match[str]) -> str | None:
        if word_before(text, m.start()) not in COPULAS:
            return None
        return f"{m.group(1)} {_DIMENSIONS[m.group(1)]}"

    options = [
        sub_one(text, _REDUNDANT_PATTERN, redundant, rng),
        sub_one(text, _EACH, lambda m: f"{m.group(1)} and every ", rng),
        sub_one(text, _DIMENSION, dimension, rng),
    ]
    return one_of(options, rng)


_OBJECT_DET = r"(?=(?:the|a|an|his|her|their|our|my|its|every|each|all|some|two|three|ten)\b)"
NOMINAL = {
    "decided to": "made a decision to", "decided that": "made the decision that",
    "agreed to": "came to an agreement to", "agreed that": "came to the agreement that",
    "considered": "gave consideration to", "investigated": "carried out an investigation into",
    "analyzed": "performed an analysis of", "discussed": "had a discussion about",
    "reviewed": "conducted a review of", "explained": "provided an explanation of",
    "tested": "carried out tests on", "inspects": "carries out inspections of",
    "interviewed": "conducted interviews with", "described": "gave a description of",
    "describes": "gives a description of", "repaired": "carried out repairs to",
    "tried to": "made an attempt to", "looked at": "took a look at",
    "measured": "took measurements of",
    "visited": "paid a visit to", "examined": "carried out an examination of",
    "changed": "made changes to", "answered": "gave an answer to", "needs": "is in need of",
    "depends on": "is dependent on", "suggested": "made the suggestion of",
    "improved": "made improvements to",
    "decided against": "made a decision against", "hesitated": "showed hesitation",
}  # fmt: skip
_NOMINAL_PATTERN = re.compile(
    "|".join(
        rf"(?<![\w']){re.escape(verb)}(?![\w'])" + ("" if " " in verb else " " + _OBJECT_DET)
        for verb in NOMINAL
    )
)


def nominalization(text: str, rng: random.Random, ctx: Context) -> str | None:
    """A verb turned into a noun with a light verb: "decided to" -> "made a decision to"."""

    def nominal(m: re.Match[str]) -> str:
        return NOMINAL[m.group(0).strip()] + (" " if m.group(0).endswith(" ") else "")

    return sub_one(text, _NOMINAL_PATTERN, nominal, rng)


PARTICIPLES = {
    "wrote": "written", "built": "built", "sold": "sold", "bought": "bought", "found": "found",
    "made": "made", "took": "taken", "gave": "given", "broke": "broken", "hid": "hidden",
    "kept": "kept", "sent": "sent", "drew": "drawn", "caught": "caught", "threw": "thrown",
    "stole": "stolen", "lit": "lit", "held": "held", "won": "won", "ate": "eaten", "tore": "torn",
    "cut": "cut", "read": "read", "led": "led", "rebuilt": "rebuilt", "shook": "shaken",
}  # fmt: skip
PASSIVE_REGULAR = word_set(
    "painted approved analyzed reviewed discussed tested repaired fixed opened designed "
    "published funded cleaned collected planted interviewed investigated inspected installed "
    "introduced announced organized visited examined measured considered explained praised "
    "criticized described locked pulled pushed carried counted mended closed delivered "
    "launched signed translated recorded ordered raised replaced removed destroyed damaged "
    "dredged awarded hired banned received"
)
_AGENTS = {"He": "him", "She": "her", "They": "them", "We": "us", "I": "me"}
_TIME = (
    r"after|before|during|last|every|because|while|when|until|yesterday|on (?:Monday|Tuesday|"
    r"Wednesday|Thursday|Friday|Saturday|Sunday)|in (?:the )?(?:spring|summer|autumn|winter|"
    r"morning|evening|\d{4})"
)
_ACTIVE = re.compile(
    r"^(?P<subj>(?:The|A|Our|My|His|Her|Their)(?: [a-z]+){1,2}|[A-Z][a-z]+|I) (?P<verb>[a-z]+) "
    r"(?P<obj>(?:the|a|an|his|her|their|our|my|its|every|each|two|three)"
    r"(?: (?!(?:at|in|on|of|to|with|for|from|by|into|onto|under|and|but)\b)[a-z'-]+){1,3}?)"
    rf"(?P<rest> (?:{_TIME}|with|into|onto|to|under)\b[^,;]*)?(?P<end>[.!])$"
)
_IRREGULAR_PLURALS = word_set("children people men women feet teeth mice geese")


def passive(text: str, rng: random.Random, ctx: Context) -> str | None:
    """A one-clause active sentence turned passive: "The budget was approved by the council"."""
    m = _ACTIVE.match(text)
    if m is None:
        return None
    verb = m["verb"]
    participle = verb if verb in PASSIVE_REGULAR else PARTICIPLES.get(verb)
    if participle is None:
        return None
    subj = m["subj"]
    agent = _AGENTS.get(subj) or (subj[0].lower() + subj[1:] if " " in subj else subj)
    if " " not in subj and subj not in _AGENTS and subj.lower() in ctx.lower_words:
        agent = subj.lower()
    obj = m["obj"]
    det, head = obj.split()[0], obj.split()[-1]
    plural = (
        det in {"two", "three"}
        or head in _IRREGULAR_PLURALS
        or (
            det not in {"a", "an", "every", "each"}
            and head.endswith("s")
            and not head.endswith("ss")
        )
    )
    be = "were" if plural else "was"
    return f"{obj[0].upper()}{obj[1:]} {be} {participle} by {agent}{m['rest'] or ''}{m['end']}"


CLARITY_RULES: tuple[Rule, ...] = (
    Rule("wordiness", "clarity", ("wordiness",), wordiness,
         "a plain word padded (because -> due to the fact that, to -> in order to, now -> at "
         "this point in time, before -> prior to, whether -> whether or not)"),
    Rule("throat-clearing", "clarity", ("wordiness",),
         lambda text, rng, ctx: prefix(text, rng, ctx, THROAT_CLEARING),
         "an empty opener before a sentence (It should be noted that, It is clear that)",
         share=0.3),
    Rule("redundancy", "clarity", ("redundancy",), redundancy,
         "a redundant modifier (future plans, returned back, each and every, small in size)"),
    Rule("nominalization", "clarity", ("nominalization",), nominalization,
         "a verb turned into a noun phrase (decided to -> made a decision to)"),
    Rule("passive", "clarity", ("passive-voice",), passive,
         "a one-clause active sentence turned passive, with the agent in a by-phrase"),
)  # fmt: skip


# --- style -------------------------------------------------------------------------------------

ADJECTIVES = word_set(
    "cold hot quiet dark long short old small large big tired hungry happy sad calm simple "
    "easy difficult hard strong weak narrow wide deep thin heavy bright damp steep busy rough "
    "sharp salty sour sweet proud safe dangerous beautiful comfortable important persuasive "
    "careful slow quick cheap expensive rare strange weird good bad restless silent famous "
    "popular useful nervous young fast clear early lame ripe sure honest patient thick "
    "crooked tough warm quiet clever funny strict kind serious difficult"
)
ADVERBS = word_set(
    "slowly quickly quietly carefully calmly gently softly sharply badly clearly patiently "
    "rarely often steadily loudly"
)
COPULAS = word_set("is are was were seemed looked felt sounded became be been remained")
DETERMINED = word_set("the a an his her their our my its this that")
NOT_NOUNS = word_set("of in on at and but or to was were is are with for from by as than that")
INTENSIFIERS = ("very", "really", "extremely", "incredibly", "truly", "totally", "so")
HEDGES = ("kind of", "sort of", "pretty", "rather", "somewhat", "fairly")
HEDGES_ATTRIBUTIVE = ("pretty", "rather", "somewhat", "fairly")
"""After an article "kind of" would read as a noun ("a kind of long day")."""
_MODIFIABLE = re.compile(r"(?<![\w'])(?:(a|an|A|An) )?([a-z]+)(?![\w'-])")
_NO_INTENSIFIER = word_set("too so as more most less least very how quite rather")


def _before_modifiable(text: str, rng: random.Random, hedging: bool) -> str | None:
    def insert(m: re.Match[str]) -> str | None:
        article, word = m.group(1), m.group(2)
        before = word_before(text, m.start())
        if before in _NO_INTENSIFIER:
            return None
        if word in ADVERBS and not hedging and article is None:
            attributive = False
        elif word in ADJECTIVES:
            following = re.match(r" ([a-z]+)", text[m.end() :])
            after = following.group(1) if following else ""
            predicate = article is None and before in COPULAS
            attributive = (article is not None or before in DETERMINED) and (
                bool(after) and after not in NOT_NOUNS
            )
            if not (predicate or attributive):
                return None
        else:
            return None
        words = (
            HEDGES_ATTRIBUTIVE if hedging and attributive else HEDGES if hedging else INTENSIFIERS
        )
        extra = words[rng.randrange(len(words))]
        if article is None:
            return f"{extra} {word}"
        return f"{like(article, 'an' if extra[0] in 'aeiou' else 'a')} {extra} {word}"

    return sub_one(text, _MODIFIABLE, insert, rng)


def intensifier(text: str, rng: random.Random, ctx: Context) -> str | None:
    """An empty intensifier: "was cold" -> "was really cold", "a long day" -> "a very long
    day", "slowly" -> "very slowly"."""
    return _before_modifiable(text, rng, hedging=False)


def hedge(text: str, rng: random.Random, ctx: Context) -> str | None:
    """A hedge that weakens a plain description: "was quiet" -> "was kind of quiet"."""
    return _before_modifiable(text, rng, hedging=True)


FILLER_OPENERS = ("Basically, ", "Honestly, ", "Actually, ", "To be honest, ", "In all honesty, ")
FILLER_WORDS = ("actually", "basically", "literally", "just", "simply", "really")
_SUBJECT_VERB = re.compile(
    r"^((?:The [a-z]+|He|She|They|We|I|[A-Z][a-z]+)) "
    r"(?=([a-z]+ed|went|came|took|gave|wrote|found|kept|sat|stood|made|knew|told)\b)"
)


def filler(text: str, rng: random.Random, ctx: Context) -> str | None:
    """A filler word after the subject that says nothing: "she actually opened the door"."""
    m = _SUBJECT_VERB.match(text)
    if m is None or (m.group(1).split()[-1] in ctx.lower_words - {"the"} and " " not in m.group(1)):
        return None  # "Most ..." is not a subject to pad
    word = FILLER_WORDS[rng.randrange(len(FILLER_WORDS))]
    return f"{m.group(1)} {word} {text[m.end() :]}"


CLICHE_OPENERS = (
    "At the end of the day, ", "When all is said and done, ", "All things considered, ",
    "Needless to say, ", "Truth be told, ", "As a matter of fact, ",
)  # fmt: skip
SIMILES = {
    "quiet": "as quiet as a mouse", "cold": "as cold as ice", "clear": "crystal clear",
    "easy": "as easy as pie", "old": "as old as the hills", "busy": "as busy as a bee",
    "white": "as white as a sheet", "dry": "as dry as a bone", "thin": "as thin as a rail",
    "fast": "as fast as lightning", "slow": "as slow as molasses", "happy": "as happy as a clam",
    "hungry": "as hungry as a wolf", "strong": "as strong as an ox", "sharp": "as sharp as a tack",
    "flat": "as flat as a pancake", "dark": "as dark as night", "calm": "as calm as a millpond",
    "tired": "dog-tired", "hot": "as hot as an oven", "red": "as red as a beet",
    "brown": "as brown as a berry", "heavy": "as heavy as lead", "sure": "as sure as death",
    "silent": "as silent as the grave", "light": "as light as a feather",
    "steep": "as steep as a church roof", "clean": "as clean as a whistle",
}  # fmt: skip
_SIMILE = re.compile(r"(?<![\w'])(" + "|".join(SIMILES) + r")(?=[.,!?;]| and | but |$)")
_PHRASES = {
    "finally": "at long last", "at last": "at long last", "every day": "day in and day out",
    "in the end": "when all is said and done", "suddenly": "all of a sudden",
    "every night": "night after night", "for years": "for donkey's years",
    "immediately": "in the blink of an eye", "quickly": "in no time at all",
    "never": "never in a million years", "everyone": "each and every one of them",
}  # fmt: skip
_PHRASE_PATTERN = words_pattern(_PHRASES)


def cliche(text: str, rng: random.Random, ctx: Context) -> str | None:
    """A stock phrase for a plain one: "as quiet as a mouse", "at long last"."""

    def simile(m: re.Match[str]) -> str | None:
        return SIMILES[m.group(1)] if word_before(text, m.start()) in COPULAS else None

    def phrase(m: re.Match[str]) -> str | None:
        word = m.group(0).lower()
        if word == "never" and word_before(text, m.start()) in {"had", "has", "have", "will"}:
            return None
        if word == "everyone" and word_after(text, m.end()).lower() in {"else", "who"}:
            return None
        return like(m.group(0), _PHRASES[word])

    options = [sub_one(text, _SIMILE, simile, rng), sub_one(text, _PHRASE_PATTERN, phrase, rng)]
    return one_of(options, rng)


_ECHOES = {
    "whispered": "softly", "shouted": "loudly", "hurried": "quickly", "rushed": "quickly",
    "crept": "quietly", "muttered": "quietly", "sprinted": "fast", "sighed": "heavily",
    "grabbed": "quickly", "stared": "intently", "slammed": "hard", "raced": "quickly",
    "murmured": "softly", "yelled": "loudly", "dashed": "quickly", "tiptoed": "quietly",
}  # fmt: skip
_ECHO = words_pattern(_ECHOES)


def echo_adverb(text: str, rng: random.Random, ctx: Context) -> str | None:
    """An adverb that repeats its verb: "whispered softly", "hurried quickly"."""
    return sub_one(text, _ECHO, lambda m: f"{m.group(0)} {_ECHOES[m.group(0).lower()]}", rng)


OPENERS = THROAT_CLEARING + FILLER_OPENERS + CLICHE_OPENERS
"""Every opener a rule may add, so none is added to a sentence that already has one."""

STYLE_RULES: tuple[Rule, ...] = (
    Rule("intensifier", "style", ("intensifier",), intensifier,
         "an empty intensifier before an adjective or adverb (very, really, extremely, so)"),
    Rule("hedge", "style", ("filler",), hedge,
         "a hedge before an adjective (kind of, sort of, pretty, rather)"),
    Rule("filler", "style", ("filler",), filler,
         "a filler word between the subject and its verb (actually, basically, just)"),
    Rule("filler-opener", "style", ("filler",),
         lambda text, rng, ctx: prefix(text, rng, ctx, FILLER_OPENERS),
         "a filler opener before a sentence (Basically, Honestly, To be honest)", share=0.15),
    Rule("cliche", "style", ("cliche",), cliche,
         "a stock simile (as quiet as a mouse) or phrase (at long last, all of a sudden)"),
    Rule("cliche-opener", "style", ("cliche",),
         lambda text, rng, ctx: prefix(text, rng, ctx, CLICHE_OPENERS),
         "a cliched opener (At the end of the day, When all is said and done)", share=0.15),
    Rule("echo-adverb", "style", ("adverb",), echo_adverb,
         "an adverb its verb already implies (whispered softly, hurried quickly)"),
)  # fmt: skip
