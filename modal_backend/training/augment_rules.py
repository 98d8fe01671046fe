"""Grammar error injection for `augment`: each rule breaks a correct sentence in one known way.

A rule takes a clean sentence (our own writing, the target) and returns a corrupted copy (the
source), or None where it has nothing to work on. Rules only make changes that are errors in
any reading (a/an swapped, "was" for "were", "recieve"), never edits that could still be
correct English, so the clean sentence is always the right fix. Each rule draws only from the
`random.Random` it is given, so the output is fixed by the seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from suggestions.contract import SuggestionType


@dataclass(frozen=True)
class Context:
    """What a rule may know beyond the sentence: the words the pool writes in lower case, so
    a rule lowercases only common words (never a name) and a typo never makes a real word."""

    lower_words: frozenset[str]


Apply = Callable[[str, random.Random, Context], str | None]


@dataclass(frozen=True)
class Rule:
    """One named way of corrupting a clean sentence, and the problem tags it introduces."""

    name: str
    kind: SuggestionType
    tags: tuple[str, ...]
    apply: Apply
    summary: str
    share: float = 1.0
    """The most of its type's examples this rule may start: openers fit almost any sentence and
    would otherwise crowd out the rules that need particular words."""


def word_set(words: str) -> frozenset[str]:
    """A set of words written as one string, so long word lists stay readable."""
    return frozenset(words.split())


def words_pattern(words: Mapping[str, str] | tuple[str, ...]) -> re.Pattern[str]:
    """Whole words (apostrophes count as letters, so "do" never matches inside "don't")."""
    ordered = sorted(words, key=len, reverse=True)
    alternatives = "|".join(re.escape(word) for word in ordered)
    return re.compile(rf"(?<![\w'])(?:{alternatives})(?![\w'])", re.IGNORECASE)


def like(original: str, new: str) -> str:
    """`new` with `original`'s leading capital, so a sentence start stays a sentence start."""
    if original[:1].isupper() and new:
        return new[0].upper() + new[1:]
    return new


def sub_one(
    text: str,
    pattern: re.Pattern[str],
    replace: Callable[[re.Match[str]], str | None],
    rng: random.Random,
) -> str | None:
    """Replace one match, drawn at random from those `replace` accepts; None if none does."""
    options = [(m, new) for m in pattern.finditer(text) if (new := replace(m)) is not None]
    if not options:
        return None
    match, new = options[rng.randrange(len(options))]
    return text[: match.start()] + new + text[match.end() :]


def one_of(options: Sequence[str | None], rng: random.Random) -> str | None:
    """One of the corruptions a rule found, drawn at random; None if it found none."""
    found = [option for option in options if option is not None]
    return found[rng.randrange(len(found))] if found else None


def word_before(text: str, index: int) -> str:
    """The word just before `index` (lower case), or "" at the start."""
    found = re.search(r"([\w']+)\W*$", text[:index])
    return found.group(1).lower() if found else ""


def word_after(text: str, index: int) -> str:
    found = re.match(r"\W*([\w']+)", text[index:])
    return found.group(1) if found else ""


def table_rule(
    table: Mapping[str, str], skip: Callable[[str, re.Match[str]], bool] | None = None
) -> Apply:
    """A rule that swaps one word of `table` for its wrong partner, keeping its case."""
    pattern = words_pattern(table)

    def apply(text: str, rng: random.Random, ctx: Context) -> str | None:
        def replace(m: re.Match[str]) -> str | None:
            if skip is not None and skip(text, m):
                return None
            return like(m.group(0), table[m.group(0).lower()])

        return sub_one(text, pattern, replace, rng)

    return apply


# --- agreement ---------------------------------------------------------------------------------

AGREEMENT = {
    "is": "are", "are": "is", "was": "were", "were": "was", "has": "have", "have": "has",
    "does": "do", "do": "does", "doesn't": "don't", "don't": "doesn't", "isn't": "aren't",
    "aren't": "isn't", "wasn't": "weren't", "weren't": "wasn't", "hasn't": "haven't",
    "haven't": "hasn't",
}  # fmt: skip


COLLECTIVE = word_set(
    "staff team crew family committee council audience government board police jury band "
    "class choir orchestra public company couple majority"
)


def _subjunctive(text: str, m: re.Match[str]) -> bool:
    """'if she were' may become 'was' and stay acceptable, as may 'the staff were': leave
    such verbs alone."""
    before = set(re.findall(r"[\w']+", text[: m.start()].lower())[-3:])
    if m.group(0).lower() == "were" and before & {"if", "wish", "though"}:
        return True
    return bool(before & COLLECTIVE)


# --- verb form ---------------------------------------------------------------------------------

REGULAR_VERBS = word_set(
    "open walk look turn pull push ask wait start watch climb count paint fix kill jump kick "
    "laugh listen lock mend park plant reach repair return stay pick fill visit want work "
    "call clean cook cross help finish print roll shout touch thank test follow offer order "
    "answer rest rush land hand check collect attend add end pass point arrive smile close "
    "decide move notice love like hope live use change believe serve dance place raise save "
    "share taste create describe receive refuse promise introduce produce replace measure "
    "celebrate rescue approve announce publish discuss review consider explain interview "
    "investigate inspect examine install design fund praise criticize analyze organize stop "
    "plan drop slip grab step wrap nod tap hurry carry marry bury study worry cry dry copy "
    "apply"
)
DETERMINERS = word_set(
    "the a an his her its their our my your this that these those every each no some"
)
PAST_TO_PARTICIPLE = {
    "saw": "seen", "did": "done", "went": "gone", "began": "begun", "drank": "drunk",
    "sang": "sung", "swam": "swum", "wrote": "written", "took": "taken", "ate": "eaten",
    "gave": "given", "broke": "broken", "spoke": "spoken", "chose": "chosen", "stole": "stolen",
    "drove": "driven", "rode": "ridden", "fell": "fallen", "froze": "frozen", "tore": "torn",
    "threw": "thrown", "grew": "grown", "knew": "known", "flew": "flown", "drew": "drawn",
    "shook": "shaken", "hid": "hidden", "forgot": "forgotten", "rang": "rung", "sank": "sunk",
    "wore": "worn",
}  # fmt: skip
PARTICIPLE_TO_PAST = {part: past for past, part in PAST_TO_PARTICIPLE.items()} | {
    "run": "ran", "come": "came", "become": "became",
}  # fmt: skip
AUXILIARIES = word_set("had has have having was were been be is are")
OVERREGULAR = {
    "caught": "catched", "taught": "teached", "bought": "buyed", "thought": "thinked",
    "built": "builded", "sold": "selled", "told": "telled", "kept": "keeped", "slept": "sleeped",
    "found": "finded", "held": "holded", "stood": "standed", "felt": "feeled", "lost": "losed",
    "sent": "sended", "spent": "spended", "brought": "bringed", "paid": "payed", "fed": "feeded",
    "meant": "meaned",
}  # fmt: skip


def _regular_base(word: str) -> str | None:
    lower = word.lower()
    if not lower.endswith("ed") or len(lower) < 5:
        return None
    candidates = [lower[:-2], lower[:-1]]
    if lower.endswith("ied"):
        candidates.append(lower[:-3] + "y")
    if len(lower) > 5 and lower[-3] == lower[-4]:
        candidates.append(lower[:-3])
    return next((c for c in candidates if c in REGULAR_VERBS), None)


_ED = re.compile(r"(?<![\w'])[A-Za-z]+ed(?![\w'])")


def tense(text: str, rng: random.Random, ctx: Context) -> str | None:
    """A regular past or participle with its -ed dropped ("she opened" -> "she open")."""

    def replace(m: re.Match[str]) -> str | None:
        base = _regular_base(m.group(0))
        if base is None or word_before(text, m.start()) in DETERMINERS:
            return None  # "a closed door" -> "a close door" would still be English
        return like(m.group(0), base)

    return sub_one(text, _ED, replace, rng)


_IRREGULAR = words_pattern((*PAST_TO_PARTICIPLE, *PARTICIPLE_TO_PAST, *OVERREGULAR))


def verb_form(text: str, rng: random.Random, ctx: Context) -> str | None:
    """An irregular verb in the wrong form: "she seen", "had went", "catched"."""

    def replace(m: re.Match[str]) -> str | None:
        word = m.group(0).lower()
        after_aux = word_before(text, m.start()) in AUXILIARIES
        if word in OVERREGULAR:
            return like(m.group(0), OVERREGULAR[word])
        if word in PAST_TO_PARTICIPLE and not after_aux:
            return like(m.group(0), PAST_TO_PARTICIPLE[word])
        if word in PARTICIPLE_TO_PAST and after_aux:
            return like(m.group(0), PARTICIPLE_TO_PAST[word])
        return None

    return sub_one(text, _IRREGULAR, replace, rng)


# --- articles ----------------------------------------------------------------------------------

COUNT_NOUNS = word_set(
    "dog cat house door boat ship letter committee council report book novel chapter story "
    "train bus bridge river road car kettle lamp lantern key gate fence shed barn farm field "
    "garden museum library school hospital hotel shop bakery station harbor village town city "
    "church chapel window table chair knife bowl cup candle clock map coin ring box drawer "
    "tree lake hill island mountain path trail street square market festival meeting survey "
    "study program manuscript memoir draft scene page narrator heroine protagonist villain "
    "detective captain doctor nurse teacher farmer baker guard priest driver stranger boy "
    "girl child man woman tent well mill roof wall cellar attic kitchen hall room office "
    "company team project plan recipe course app song film play parcel ferry tractor horse "
    "fox owl goat parrot heron bell piano violin suitcase umbrella photograph envelope "
    "postcard budget contract law tax bicycle camp fire storm flood"
)
_ARTICLE = re.compile(r"(?<![\w'])(a|an|the) ([\w']+)", re.IGNORECASE)
_KEEP_A = word_set("few little lot bit while great dozen hundred thousand number")


def article(text: str, rng: random.Random, ctx: Context) -> str | None:
    """ "a" and "an" swapped, or an article dropped before a singular count noun."""

    def replace(m: re.Match[str]) -> str | None:
        word, nxt = m.group(1), m.group(2)
        if word.lower() in {"a", "an"}:
            if rng.random() < 0.6:
                return f"{like(word, 'an' if word.lower() == 'a' else 'a')} {nxt}"
            return None if nxt.lower() in _KEEP_A else like(word, nxt)
        return like(word, nxt) if nxt in COUNT_NOUNS else None

    return sub_one(text, _ARTICLE, replace, rng)


# --- prepositions ------------------------------------------------------------------------------

PREPOSITIONS = {
    "interested in": "interested on", "afraid of": "afraid from", "good at": "good in",
    "arrived at": "arrived to", "depends on": "depends of", "depend on": "depend of",
    "responsible for": "responsible of", "proud of": "proud on", "married to": "married with",
    "capable of": "capable to", "grateful to": "grateful with", "different from": "different of",
    "far from": "far of", "aimed at": "aimed to",
    "in advance": "on advance", "in the dark": "on the dark", "on weekends": "in weekends",
    "in the morning": "at the morning", "at night": "on night",
    "in simple terms": "on simple terms",
    "in the village": "on the village", "in the city": "on the city", "in winter": "on winter",
    "in summer": "on summer", "in the spring": "on the spring", "at dawn": "in dawn",
    "close to": "close from",
    "on monday": "in Monday", "on tuesday": "in Tuesday", "on wednesday": "in Wednesday",
    "on saturday": "in Saturday", "on sunday": "in Sunday", "in search of": "in search for",
    "in love with": "in love of", "listened to": "listened at",
}  # fmt: skip
_YEAR = re.compile(r"(?<![\w'])in (1[89]\d\d|20\d\d)(?![\w'])")


def preposition(text: str, rng: random.Random, ctx: Context) -> str | None:
    """The wrong preposition in a fixed phrase ("interested on", "arrived to", "on 1952")."""
    options = [table_rule(PREPOSITIONS)(text, rng, ctx)]
    if _YEAR.search(text):
        options.append(sub_one(text, _YEAR, lambda m: f"on {m.group(1)}", rng))
    return one_of(options, rng)


# --- spelling ----------------------------------------------------------------------------------

MISSPELLINGS = {
    "receive": "recieve", "received": "recieved", "separate": "seperate",
    "separated": "seperated", "definitely": "definately", "necessary": "neccessary",
    "until": "untill", "beginning": "begining", "believe": "beleive", "believed": "beleived",
    "friend": "freind", "friends": "freinds", "weird": "wierd", "tomorrow": "tommorow",
    "embarrassed": "embarassed", "accommodation": "accomodation", "government": "goverment",
    "environment": "enviroment", "library": "libary", "february": "Febuary",
    "calendars": "calenders", "restaurant": "restaraunt", "business": "buisness",
    "because": "becuase", "which": "wich", "argument": "arguement", "achieve": "acheive",
    "piece": "peice", "across": "accross", "finally": "finaly", "different": "diffrent",
    "interesting": "intresting", "probably": "probly", "surprised": "suprised",
    "surprise": "suprise", "committee": "commitee", "grateful": "greatful",
    "neighbors": "nieghbors", "village": "vilage", "quiet": "quite",
    "whether": "wether", "island": "iland", "weather": "wheather", "writing": "writting",
    "written": "writen", "coming": "comming", "stopped": "stoped", "address": "adress",
    "carried": "carryed", "thought": "thougth", "height": "heigth",
    "heights": "hieghts", "answer": "anwser", "disappears": "dissapears", "truly": "truely",
    "especially": "expecially", "guard": "gaurd", "foreign": "foriegn", "language": "langauge",
    "knowledge": "knowlege", "patience": "patients", "tongue": "tounge", "chimney": "chimeny",
    "museum": "musuem", "beautiful": "beatiful", "familiar": "familar", "recommends": "recomends",
}  # fmt: skip
_LETTERS = re.compile(r"(?<![\w'])[a-z]{7,}(?![\w'])")


def typo(text: str, rng: random.Random, ctx: Context) -> str | None:
    """Two adjacent inner letters swapped ("kitchen" -> "kicthen"), never a real word."""

    def replace(m: re.Match[str]) -> str | None:
        word = m.group(0)
        spots = [i for i in range(1, len(word) - 2) if word[i] != word[i + 1]]
        if not spots:
            return None
        i = spots[rng.randrange(len(spots))]
        swapped = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        return None if swapped in ctx.lower_words else swapped

    return sub_one(text, _LETTERS, replace, rng)


# --- punctuation and capitals ------------------------------------------------------------------

_SPLICE = re.compile(r"(?<=\w)\. ([A-Z][\w']*)")
_APOSTROPHE = re.compile(r"(?<=[a-z])'(?=(s|t|re|ve|ll|m|d)(?![\w']))", re.IGNORECASE)


def punctuation(text: str, rng: random.Random, ctx: Context) -> str | None:
    """A missing full stop, a comma splice, or a dropped apostrophe ("dont", "Maras")."""
    options: list[str] = []
    if text.endswith(".") and not text.endswith('."'):
        options.append(text[:-1])

    def splice(m: re.Match[str]) -> str:
        word = m.group(1)
        return ", " + (word.lower() if word.lower() in ctx.lower_words and word != "I" else word)

    if (joined := sub_one(text, _SPLICE, splice, rng)) is not None:
        options.append(joined)
    if (dropped := sub_one(text, _APOSTROPHE, lambda m: "", rng)) is not None:
        options.append(dropped)
    return options[rng.randrange(len(options))] if options else None


_MID_CAPITAL = re.compile(r"(?<=[a-z,;] )([A-Z][a-z']+|I)(?![\w'])")
_LOWER_NOUN = words_pattern(tuple(sorted(COUNT_NOUNS)))


def capitalization(text: str, rng: random.Random, ctx: Context) -> str | None:
    """A sentence start or a name in lower case ("monday", "i"), or a common noun capitalised."""
    options: list[str] = []
    if text[:1].isupper():
        options.append(text[0].lower() + text[1:])
    lowered = sub_one(text, _MID_CAPITAL, lambda m: m.group(0).lower(), rng)
    if lowered is not None:
        options.append(lowered)

    def capital(m: re.Match[str]) -> str | None:
        return m.group(0).capitalize() if m.group(0).islower() and m.start() > 0 else None

    if (raised := sub_one(text, _LOWER_NOUN, capital, rng)) is not None:
        options.append(raised)
    return options[rng.randrange(len(options))] if options else None


_DOUBLE = words_pattern(("the", "a", "to", "of", "in", "and", "was", "is", "it", "that", "on"))


def doubled_word(text: str, rng: random.Random, ctx: Context) -> str | None:
    """One short word written twice ("the the"), the slip a writer's eye skips."""
    return sub_one(text, _DOUBLE, lambda m: f"{m.group(0)} {m.group(0).lower()}", rng)


HOMOPHONES = {
    "its": "it's", "it's": "its", "their": "there", "there": "their", "they're": "their",
    "your": "you're", "you're": "your", "than": "then", "then": "than", "too": "to",
    "lose": "loose", "whose": "who's", "were": "where", "where": "were", "whether": "weather",
    "passed": "past", "past": "passed", "threw": "through", "through": "threw", "knew": "new",
    "new": "knew", "write": "right", "except": "accept", "accept": "except", "break": "brake",
    "piece": "peace", "peace": "piece", "week": "weak", "weak": "week", "whole": "hole",
    "hole": "whole", "see": "sea", "sea": "see", "buy": "by", "our": "are",
    "hear": "here", "quiet": "quite", "quite": "quiet", "affect": "effect", "effect": "affect",
    "allowed": "aloud", "aloud": "allowed", "led": "lead", "advice": "advise", "weather": "whether",
}  # fmt: skip
_COULD_HAVE = re.compile(r"\b(could|would|should|must|might) have\b", re.IGNORECASE)


def homophone(text: str, rng: random.Random, ctx: Context) -> str | None:
    """A sound-alike for the right word: its/it's, their/there, than/then, "could of"."""
    options = [table_rule(HOMOPHONES, _subjunctive)(text, rng, ctx)]
    options.append(sub_one(text, _COULD_HAVE, lambda m: f"{m.group(1)} of", rng))
    return one_of(options, rng)


GRAMMAR_RULES: tuple[Rule, ...] = (
    Rule("agreement", "grammar", ("subject-verb-agreement",), table_rule(AGREEMENT, _subjunctive),
         "is/are, was/were, has/have, do/does (and their negatives) swapped"),
    Rule("tense", "grammar", ("tense",), tense,
         "a regular past tense or participle with its -ed dropped"),
    Rule("verb-form", "grammar", ("verb-form",), verb_form,
         "past for participle and back (seen/saw, went/gone), over-regular pasts (catched)"),
    Rule("article", "grammar", ("article",), article,
         "a/an swapped, or an article dropped before a singular count noun"),
    Rule("preposition", "grammar", ("preposition",), preposition,
         "the wrong preposition in a fixed phrase (interested on, arrived to, on 1952)"),
    Rule("spelling", "grammar", ("spelling",), table_rule(MISSPELLINGS),
         "a common misspelling from a fixed list (recieve, seperate, definately)"),
    Rule("typo", "grammar", ("spelling",), typo,
         "two adjacent letters swapped in a long word, never making a real word"),
    Rule("punctuation", "grammar", ("punctuation",), punctuation,
         "a missing full stop, a comma splice, or a dropped apostrophe"),
    Rule("capitalization", "grammar", ("capitalization",), capitalization,
         "a sentence start or name lowercased, or a common noun capitalised"),
    Rule("doubled-word", "grammar", ("repetition",), doubled_word,
         "a short word written twice (the the)"),
    Rule("homophone", "grammar", ("homophone", "spelling"), homophone,
         "its/it's, their/there, than/then, could of and other sound-alikes"),
)  # fmt: skip
