"""Learner errors for training data v2: the error families JFLEG-style writing is full of.

Each rule breaks a correct passage of ours in one way a learner of English would, and knows the
passage's own tense: a tense error is an inconsistency inside the passage (one verb of a present
passage put in the past, or a past verb left bare), never a shift of a correct passage into
another tense. So the model learns to keep the author's tense, person and voice, and the clean
passage is always the minimal fix. Rules shared with v1 (articles, prepositions, spelling,
punctuation, capitals, sound-alikes, irregular verb forms) come from `augment_rules`; every draw
comes from the `random.Random` given, so the output is fixed by the seed.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from .augment_rules import (
    AGREEMENT,
    COUNT_NOUNS,
    PREPOSITIONS,
    REGULAR_VERBS,
    Context,
    Rule,
    _subjunctive,
    article,
    capitalization,
    homophone,
    like,
    one_of,
    punctuation,
    sub_one,
    table_rule,
    typo,
    verb_form,
    word_before,
    word_set,
    words_pattern,
)
from .augment_rules import MISSPELLINGS as V1_MISSPELLINGS
from .augment_rules import tense as dropped_ed

Tense = Literal["present", "past"]


@dataclass(frozen=True)
class PassageContext(Context):
    """What a v2 rule knows about the passage beyond its words: its tense and register."""

    tense: Tense = "past"
    register: str = ""


def _tense(ctx: Context) -> Tense:
    return ctx.tense if isinstance(ctx, PassageContext) else "past"


def _register(ctx: Context) -> str:
    return ctx.register if isinstance(ctx, PassageContext) else ""


# --- verbs: agreement and tense consistency -----------------------------------------------------

THIRD_SINGULAR_SUBJECTS = word_set("he she it who everyone everybody nobody someone each")
PLURAL_SUBJECTS = word_set("i we they you people children students parents")


def third_person(base: str) -> str:
    """`walk` -> `walks`, `carry` -> `carries`, `watch` -> `watches`."""
    if base.endswith("y") and base[-2:-1] not in "aeiou":
        return base[:-1] + "ies"
    if base.endswith(("s", "sh", "ch", "x", "z", "o")):
        return base + "es"
    return base + "s"


def past_form(base: str) -> str:
    """`walk` -> `walked`, `stop` -> `stopped`, `carry` -> `carried`, `live` -> `lived`."""
    if base.endswith("e"):
        return base + "d"
    if base.endswith("y") and base[-2:-1] not in "aeiou":
        return base[:-1] + "ied"
    doubled = {"stop", "plan", "drop", "slip", "grab", "step", "wrap", "nod", "tap", "shop"}
    return base + base[-1] + "ed" if base in doubled else base + "ed"


_THIRD_FORMS = {third_person(verb): verb for verb in REGULAR_VERBS}
_THIRD_PATTERN = words_pattern(tuple(_THIRD_FORMS))
_BASE_PATTERN = words_pattern(tuple(REGULAR_VERBS))
_PRESENT_MARKERS = words_pattern(("is", "are", "am", "has", "have", "does", "do", *_THIRD_FORMS))
_PAST_MARKERS = re.compile(r"(?<![\w'])(?:was|were|had|did|[a-z]{3,}ed)(?![\w'])")


def _subject_is_singular(text: str, index: int) -> bool:
    """The word before is a third-person singular pronoun, a name, or a singular count noun."""
    before = re.search(r"([\w']+)\W*$", text[:index])
    if before is None:
        return False
    word = before.group(1)
    lower = word.lower()
    if lower in THIRD_SINGULAR_SUBJECTS or lower in COUNT_NOUNS:
        return True
    start = before.start(1)
    return word[:1].isupper() and start > 0 and text[start - 2 : start] not in {". ", '" '}


def agreement(text: str, rng: random.Random, ctx: Context) -> str | None:
    """Subject and verb disagree, in the passage's own tense: "she walk", "they walks", "he
    don't", "the rooms is"; in a past passage "they was"."""
    options = [table_rule(AGREEMENT, _subjunctive)(text, rng, ctx)]
    if _tense(ctx) == "present":

        def drop_s(m: re.Match[str]) -> str | None:
            if not _subject_is_singular(text, m.start()):
                return None
            return like(m.group(0), _THIRD_FORMS[m.group(0).lower()])

        def add_s(m: re.Match[str]) -> str | None:
            if word_before(text, m.start()) not in PLURAL_SUBJECTS:
                return None
            return like(m.group(0), third_person(m.group(0).lower()))

        options.append(sub_one(text, _THIRD_PATTERN, drop_s, rng))
        options.append(sub_one(text, _BASE_PATTERN, add_s, rng))
    return one_of(options, rng)


def tense_slip(text: str, rng: random.Random, ctx: Context) -> str | None:
    """One verb out of step with the passage: a present passage with one verb in the past
    ("she lives ... and worked"), or a past passage with a past verb left bare ("we open").
    A present passage needs two other present verbs, so the slip is an inconsistency."""
    if _register(ctx) == "dialogue":
        return None  # quotations keep their own tenses
    if _tense(ctx) == "past":
        return dropped_ed(text, rng, ctx)
    if len(_PRESENT_MARKERS.findall(text)) < 3 or _PAST_MARKERS.search(text):
        return None

    def to_past(m: re.Match[str]) -> str | None:
        if not _subject_is_singular(text, m.start()):
            return None
        return like(m.group(0), past_form(_THIRD_FORMS[m.group(0).lower()]))

    return sub_one(text, _THIRD_PATTERN, to_past, rng)


_MODAL_BASE = re.compile(
    r"(?<![\w'])(can|could|should|must|will|would|might|may) (?!not\b)([a-z]+)(?![\w'])",
    re.IGNORECASE,
)
_TO_BASE = re.compile(r"(?<![\w'])(want|wants|need|needs|try|tries|decided|hope|plan) to ([a-z]+)")


def verb_pattern(text: str, rng: random.Random, ctx: Context) -> str | None:
    """A verb in the wrong form after a modal or "to" ("can swims", "want to going"), or an
    irregular verb in the wrong form ("buyed", "had went")."""
    options = [verb_form(text, rng, ctx)]

    def after_modal(m: re.Match[str]) -> str | None:
        verb = m.group(2)
        if verb not in REGULAR_VERBS:
            return None
        return f"{m.group(1)} {third_person(verb) if rng.random() < 0.6 else past_form(verb)}"

    def after_to(m: re.Match[str]) -> str | None:
        verb = m.group(2)
        if verb not in REGULAR_VERBS or verb.endswith("e"):
            return None
        return f"{m.group(1)} to {verb}ing"

    options.append(sub_one(text, _MODAL_BASE, after_modal, rng))
    options.append(sub_one(text, _TO_BASE, after_to, rng))
    return one_of(options, rng)


# --- nouns: number and countability -------------------------------------------------------------

_IRREGULAR_PLURAL = {"people": "person", "children": "child", "men": "man", "women": "woman"}
NUMBER_WORDS = word_set(
    "two three four five six seven eight nine ten twelve twenty fifty hundred many several few "
    "these those both various"
)
SINGULAR_WORDS = word_set("a an one each every another this that")
_PLURAL_AFTER = re.compile(
    r"(?<![\w'])(" + "|".join(sorted(NUMBER_WORDS)) + r") ([a-z]+ )?([a-z]{3,}s|people|children|"
    r"men|women)(?![\w'])",
    re.IGNORECASE,
)
_SINGULAR_AFTER = re.compile(
    r"(?<![\w'])(each|every|another|one) ([a-z]{3,})(?![\w'])", re.IGNORECASE
)
ADJECTIVE_ENDINGS = ("ful", "ous", "ive", "able", "al", "ic", "less", "ish")


def singular(plural: str, ctx: Context) -> str | None:
    """The singular of a plural noun the pool also writes in the singular, else None."""
    if plural in _IRREGULAR_PLURAL:
        return _IRREGULAR_PLURAL[plural]
    candidates = [plural[:-1]]
    if plural.endswith("ies"):
        candidates.insert(0, plural[:-3] + "y")
    if plural.endswith(("ches", "shes", "xes", "sses")):
        candidates.insert(0, plural[:-2])
    found = [c for c in candidates if c in ctx.lower_words or c in COUNT_NOUNS]
    return found[0] if found and not plural.endswith("ss") else None


def noun_number(text: str, rng: random.Random, ctx: Context) -> str | None:
    """A plural noun left singular after a number or quantifier ("three apple", "many
    student"), or a singular made plural after "every" or "one" ("every students")."""

    def to_singular(m: re.Match[str]) -> str | None:
        adjective = m.group(2) or ""
        if adjective and (adjective.strip() in REGULAR_VERBS or adjective.strip().endswith("s")):
            return None
        one = singular(m.group(3).lower(), ctx)
        if one is None or (m.group(3).lower().endswith("ss")):
            return None
        return f"{m.group(1)} {adjective}{like(m.group(3), one)}"

    def to_plural(m: re.Match[str]) -> str | None:
        noun = m.group(2)
        if noun not in COUNT_NOUNS:
            return None
        return f"{m.group(1)} {third_person(noun) if not noun.endswith('s') else noun}"

    options = [
        sub_one(text, _PLURAL_AFTER, to_singular, rng),
        sub_one(text, _SINGULAR_AFTER, to_plural, rng),
    ]
    return one_of(options, rng)


UNCOUNTABLE = word_set(
    "information advice furniture homework equipment luggage baggage news research knowledge "
    "traffic money music feedback software evidence progress"
)
_UNCOUNTABLE = re.compile(
    r"(?<![\w'])(some |much |the |any |more |)(" + "|".join(sorted(UNCOUNTABLE)) + r")(?![\w'])",
    re.IGNORECASE,
)


def countability(text: str, rng: random.Random, ctx: Context) -> str | None:
    """An uncountable noun counted: "an advice", "some informations", "many furnitures"."""

    def count(m: re.Match[str]) -> str | None:
        noun = m.group(2)
        if noun.lower() == "news" or not noun.islower():
            return None
        if m.group(1) == "" and word_before(text, m.start()) in {"the", "of", "my", "our"}:
            return None
        if m.group(1) in {"", "the "} and rng.random() < 0.5:
            return f"{m.group(1)}{'an' if noun[0] in 'aeiou' else 'a'} {noun}".replace("the ", "")
        return f"{m.group(1)}{noun}s"

    return sub_one(text, _UNCOUNTABLE, count, rng)


# --- word order --------------------------------------------------------------------------------

ORDER_ADJECTIVES = word_set(
    "new old big small large little young long short good bad great high low cheap expensive "
    "hot cold warm quiet busy modern local free healthy important popular safe easy hard "
    "difficult beautiful friendly nice clean dirty heavy empty full"
)
_ADJ_NOUN = re.compile(
    r"(?<![\w'])(the|a|an|my|our|his|her|their|this|your) ([a-z]+) ([a-z]+)(?=[ .,;!?])"
)
_FREQUENCY = re.compile(
    r"(?<![\w'])(always|usually|often|never|sometimes) ([a-z]+) (the|a|an|my|our|his|her|"
    r"their|it|them|me|him|us|your)(?![\w'])"
)
_ENOUGH = re.compile(r"(?<![\w'])([a-z]+) enough(?![\w'])")


def word_order(text: str, rng: random.Random, ctx: Context) -> str | None:
    """Words out of order: an adjective after its noun ("a car new"), an adverb of frequency
    after its verb ("I eat always the"), "enough" before its adjective ("enough old")."""

    def adjective_after(m: re.Match[str]) -> str | None:
        adjective, noun = m.group(2), m.group(3)
        if adjective not in ORDER_ADJECTIVES or noun not in COUNT_NOUNS:
            return None
        return f"{m.group(1)} {noun} {adjective}"

    def adverb_after(m: re.Match[str]) -> str | None:
        verb = m.group(2)
        if verb not in REGULAR_VERBS and verb not in _THIRD_FORMS and not verb.endswith("ed"):
            return None
        return f"{verb} {m.group(1)} {m.group(3)}"

    def enough_before(m: re.Match[str]) -> str | None:
        word = m.group(1)
        return f"enough {word}" if word in ORDER_ADJECTIVES else None

    options = [
        sub_one(text, _ADJ_NOUN, adjective_after, rng),
        sub_one(text, _FREQUENCY, adverb_after, rng),
        sub_one(text, _ENOUGH, enough_before, rng),
    ]
    return one_of(options, rng)


# --- missing and extra words -------------------------------------------------------------------

_INFINITIVE_TO = re.compile(
    r"(?<![\w'])(want|wants|wanted|need|needs|needed|decided|tried|hope|hoped|plan|planned|"
    r"going|have|has|had|forgot|learned|like|likes|would like) to (?=[a-z])"
)
_COPULA = re.compile(r"(?<![\w'])(he|she|it|they|we|you|I) (is|are|am|was|were) (?=[a-z]+ing\b)")
_OF = re.compile(r"(?<![\w'])(a lot|lots|most|some|all|one|many|each|none) of (?=[a-z])")
_LISTEN = re.compile(r"(?<![\w'])(listen|listens|listened|listening) to (?=[a-z])")


def missing_word(text: str, rng: random.Random, ctx: Context) -> str | None:
    """A small word left out: "want go", "she working", "a lot people", "listen music"."""
    options = [
        sub_one(text, _INFINITIVE_TO, lambda m: f"{m.group(1)} ", rng),
        sub_one(text, _COPULA, lambda m: f"{m.group(1)} ", rng),
        sub_one(text, _OF, lambda m: f"{m.group(1)} " if m.group(1) != "all" else None, rng),
        sub_one(text, _LISTEN, lambda m: f"{m.group(1)} ", rng),
    ]
    return one_of(options, rng)


COMPARATIVES = word_set(
    "bigger better easier cheaper faster larger smaller older younger happier harder longer "
    "shorter higher lower warmer colder safer healthier busier quieter newer worse"
)
_MODAL = re.compile(r"(?<![\w'])(can|could|should|must|will|might) (?=[a-z]+\b)(?!not\b|be\b)")
_COMPARATIVE = words_pattern(tuple(COMPARATIVES))
_EXTRA_PREPOSITION = {
    "discuss": "discuss about", "discussed": "discussed about", "discussing": "discussing about",
    "mention": "mention about", "mentioned": "mentioned about", "reached": "reached to",
    "entered": "entered in", "went home": "went to home", "go home": "go to home",
    "came home": "came to home", "get home": "get to home",
}  # fmt: skip
_EXTRA_TARGETS = re.compile(
    r"(?<![\w'])(?:(discuss|discussed|discussing|mention|mentioned|reached|entered)"
    r"(?= (?:the|a|an|my|our|his|her|their|this|it)\b)|(went home|go home|came home|get home)"
    r"(?![\w']))"
)
_I_AGREE = re.compile(r"(?<![\w'])I agree(?![\w'])")


def extra_word(text: str, rng: random.Random, ctx: Context) -> str | None:
    """A word that does not belong: "can to swim", "more cheaper", "discuss about the", "went
    to home", "I am agree"."""
    options = [
        sub_one(text, _MODAL, lambda m: f"{m.group(1)} to ", rng),
        sub_one(text, _COMPARATIVE, lambda m: f"more {m.group(0)}", rng),
        sub_one(text, _EXTRA_TARGETS, lambda m: _EXTRA_PREPOSITION[m.group(0)], rng),
        sub_one(text, _I_AGREE, lambda m: "I am agree", rng),
    ]
    return one_of(options, rng)


# --- prepositions and spelling, widened for learners -------------------------------------------

LEARNER_PREPOSITIONS = {
    **PREPOSITIONS,
    "at home": "in home", "by bus": "with bus", "by car": "with car", "by train": "with train",
    "in my opinion": "on my opinion", "on the internet": "in the internet",
    "at the end of": "in the end of", "on time": "on the time", "at work": "in work",
    "for example": "for an example", "pay for": "pay", "wait for": "wait",
    "look at": "look", "good for": "good to", "famous for": "famous of",
    "worried about": "worried for", "made of": "made from", "spend money on": "spend money for",
}  # fmt: skip


def learner_preposition(text: str, rng: random.Random, ctx: Context) -> str | None:
    """The wrong (or a missing) preposition in a common phrase: "on my opinion", "with bus"."""
    return table_rule(LEARNER_PREPOSITIONS)(text, rng, ctx)


LEARNER_MISSPELLINGS = {
    **V1_MISSPELLINGS,
    "people": "peaple", "really": "realy", "which": "wich", "their": "thier", "with": "whit",
    "because": "beacause", "government": "goverment", "opinion": "opinon",
    "important": "importent", "different": "diferent", "everything": "everithing",
    "money": "mony", "country": "contry", "always": "allways", "advertisement": "advertisment",
    "experience": "experiance", "successful": "succesful", "recommend": "reccomend",
    "comfortable": "confortable", "develop": "develope", "environment": "enviroment",
    "example": "exemple", "information": "infomation",
    "technology": "tecnology", "convenient": "convinient", "young": "yong",
    "beautiful": "beutiful", "tomorrow": "tomorow", "studying": "studing",
    "education": "educaton", "knowledge": "knowlegde",
}  # fmt: skip
_LONG_WORD = re.compile(r"(?<![\w'])[a-z]{6,}(?![\w'])")


def dropped_letter(text: str, rng: random.Random, ctx: Context) -> str | None:
    """One letter left out of a longer word ("diffrent", "becuse"), never making a real word."""

    def replace(m: re.Match[str]) -> str | None:
        word = m.group(0)
        i = rng.randrange(1, len(word) - 1)
        shorter = word[:i] + word[i + 1 :]
        return None if shorter in ctx.lower_words or shorter == word else shorter

    return sub_one(text, _LONG_WORD, replace, rng)


def spelling(text: str, rng: random.Random, ctx: Context) -> str | None:
    """A misspelling: a common learner spelling, swapped letters or a dropped letter."""
    options = [
        table_rule(LEARNER_MISSPELLINGS)(text, rng, ctx),
        typo(text, rng, ctx),
        dropped_letter(text, rng, ctx),
    ]
    return one_of(options, rng)


LEARNER_RULES: tuple[Rule, ...] = (
    Rule("agreement", "grammar", ("subject-verb-agreement",), agreement,
         "subject and verb disagree in the passage's own tense (she walk, they was)"),
    Rule("tense-slip", "grammar", ("tense",), tense_slip,
         "one verb out of step with the passage's tense (a present passage's verb in the past, "
         "a past passage's verb left bare)"),
    Rule("verb-form", "grammar", ("verb-form",), verb_pattern,
         "a verb in the wrong form (can swims, want to going, buyed, had went)"),
    Rule("article", "grammar", ("article",), article,
         "a/an swapped, or an article dropped before a singular count noun"),
    Rule("noun-number", "grammar", ("plural",), noun_number,
         "a plural left singular after a number or quantifier, or every students"),
    Rule("countability", "grammar", ("countable-noun",), countability,
         "an uncountable noun counted (an advice, informations)"),
    Rule("preposition", "grammar", ("preposition",), learner_preposition,
         "the wrong or a missing preposition in a common phrase (on my opinion, with bus)"),
    Rule("spelling", "grammar", ("spelling",), spelling,
         "a misspelling: a common learner spelling, swapped or dropped letters"),
    Rule("word-order", "grammar", ("word-order",), word_order,
         "words out of order (a car new, I eat always the, enough old)"),
    Rule("missing-word", "grammar", ("missing-word",), missing_word,
         "a small word left out (want go, she working, a lot people, listen music)"),
    Rule("extra-word", "grammar", ("extra-word",), extra_word,
         "a word that does not belong (can to swim, more cheaper, discuss about, I am agree)"),
    Rule("punctuation", "grammar", ("punctuation",), punctuation,
         "a missing full stop, a comma splice, or a dropped apostrophe"),
    Rule("capitalization", "grammar", ("capitalization",), capitalization,
         "a sentence start or name lowercased, or a common noun capitalised"),
    Rule("homophone", "grammar", ("homophone", "spelling"), homophone,
         "its/it's, their/there, than/then, could of and other sound-alikes"),
)  # fmt: skip
"""The families of training data v2, in the order the data card lists them."""
