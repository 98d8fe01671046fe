"""Training data v2: learner errors in our own passages of many registers, and passages that
must come back unchanged.

    python -m modal_backend.training.augment_v2            # writes the set and its data card
    python -m modal_backend.training.augment_v2 --check    # exit 1 if either has drifted

The clean passages (`datasets/train/clean-v2/*.txt`) are our own writing: essays, reviews,
emails, instructions, reports, dialogue, diaries, narrative and description, in the present and
the past, in the first, second and third person, each section headed with its register, tense
and person. Grammar rows break a passage with one to three learner errors (`learner_rules`),
each in keeping with the passage's tense, and target the passage itself, so the fix is a minimal
edit; a share of the passages is its own target, unchanged. Clarity and style rows come from the
v1 rewriting rules (`augment`), fewer than in v1, over the v1 and v2 clean text. Nothing comes
from JFLEG or the eval set; every draw is seeded by text, so the seed fixes the output.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.data import load_dataset
from suggestions.contract import SuggestionType

from .augment import (
    BASE_SET,
    CLEAN_SENTENCES,
    CleanLine,
    context,
    generate,
    is_edit,
    load_pool,
    render,
)
from .augment_rules import Context
from .config import REPO_ROOT
from .data import normalize
from .learner_rules import LEARNER_RULES, PassageContext, Tense

DEFAULT_SEED = 29
CLEAN_DIR = "datasets/train/clean-v2"
V2_SET = "datasets/train/writing-train-v2.jsonl"
V2_CARD = "datasets/train/writing-train-v2.card.md"
UNCHANGED_SHARE = 0.3
"""Of the grammar rows, the share whose source is already correct and is its own target."""
SECOND_VARIANT = 0.3
"""Chance that a passage gives a second broken version, with other errors."""
ERRORS_PER_ROW = ((1, 0.5), (2, 0.35), (3, 0.15))
"""How many errors a broken passage holds: learners' sentences often hold several."""
REWRITE_QUOTAS: dict[SuggestionType, int] = {"grammar": 0, "clarity": 130, "style": 130}
"""Clarity and style rows from the v1 rules: fewer than v1's, since the grammar prompt is what
the comparison with the stock base is judged on, and rewording rows must not teach rewording
to grammar requests."""
_UNCHANGED_CHANCE = UNCHANGED_SHARE / (1 - UNCHANGED_SHARE) * (1 + SECOND_VARIANT)
_HEADER = re.compile(r"^## register=(\w+) tense=(present|past) person=(first|second|third)$")


@dataclass(frozen=True)
class Passage:
    """A correct passage of ours with what the rules and the data card need to know."""

    text: str
    register: str
    tense: Tense
    person: str
    origin: str


def load_passages(folder: Path) -> list[Passage]:
    """Every passage of the folder's `.txt` files, in file and line order, without repeats.
    A line outside a `## register=... tense=... person=...` section is an error."""
    passages: list[Passage] = []
    seen: set[str] = set()
    for path in sorted(folder.glob("*.txt")):
        section: tuple[str, Tense, str] | None = None
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            line = raw.strip()
            if not line or (line.startswith("#") and not line.startswith("## ")):
                continue
            if line.startswith("## "):
                found = _HEADER.match(line)
                if found is None:
                    raise ValueError(f"{path.name}:{number}: bad section header {line!r}")
                tense: Tense = "present" if found.group(2) == "present" else "past"
                section = (found.group(1), tense, found.group(3))
                continue
            if section is None:
                raise ValueError(f"{path.name}:{number}: a passage before any section header")
            if normalize(line) in seen:
                continue
            seen.add(normalize(line))
            passages.append(Passage(line, *section, origin=f"{path.name}:{number}"))
    return passages


def errors_wanted(rng: random.Random) -> int:
    draw = rng.random()
    for count, chance in ERRORS_PER_ROW:
        if draw < chance:
            return count
        draw -= chance
    return ERRORS_PER_ROW[-1][0]


def break_passage(
    text: str, ctx: Context, rng: random.Random, uses: Counter[str], avoid: set[str]
) -> tuple[list[str], str] | None:
    """One to three errors of different families, the least-used applicable family first, so
    rare families are not crowded out. Returns the families and the broken text, or None."""
    names: list[str] = []
    source = text
    for _ in range(errors_wanted(rng)):
        options = []
        for rule in LEARNER_RULES:
            if rule.name in names or (not names and rule.name in avoid):
                continue
            out = rule.apply(source, rng, ctx)
            if out is not None and is_edit(out, source):
                options.append((rule, out))
        if not options:
            break
        fewest = min(uses[rule.name] for rule, _ in options)
        rule, source = rng.choice([pair for pair in options if uses[pair[0].name] == fewest])
        uses[rule.name] += 1
        names.append(rule.name)
    return (names, source) if names and is_edit(source, text) else None


def grammar_rows(
    passages: Sequence[Passage], seed: int, lower_words: frozenset[str]
) -> list[dict[str, Any]]:
    """Broken passages (one, sometimes two versions each) and unchanged ones."""
    order = list(range(len(passages)))
    random.Random(f"{seed}:v2:order").shuffle(order)
    uses: Counter[str] = Counter()
    tags = {rule.name: rule.tags for rule in LEARNER_RULES}
    rows: list[dict[str, Any]] = []
    taken: set[str] = set()
    for index in order:
        passage = passages[index]
        rng = random.Random(f"{seed}:v2:{passage.text}")
        ctx = PassageContext(lower_words, tense=passage.tense, register=passage.register)
        made: list[tuple[list[str], str]] = []
        for _ in range(2 if rng.random() < SECOND_VARIANT else 1):
            avoid = {made[0][0][0]} if made else set()
            broken = break_passage(passage.text, ctx, rng, uses, avoid)
            if broken is not None and normalize(broken[1]) not in taken:
                taken.add(normalize(broken[1]))
                made.append(broken)
        for names, source in made:
            row_tags = [*dict.fromkeys(tag for name in names for tag in tags[name])]
            rows.append(_row(passage, source, row_tags, " + ".join(names), seed))
        same = any(normalize(source) == normalize(passage.text) for _, source in made)
        if made and rng.random() < _UNCHANGED_CHANCE and not same:  # (capitals fold alike)
            rows.append(_row(passage, passage.text, ["no-error"], "unchanged", seed))
    counted: Counter[str] = Counter()
    for row in rows:
        counted[row["id"]] += 1
        row["id"] = f"{row['id']}:{counted[row['id']]:04d}"
    return sorted(rows, key=lambda row: row["id"])


def _row(passage: Passage, source: str, tags: list[str], rules: str, seed: int) -> dict[str, Any]:
    first = rules.split(" + ")[0]
    return {
        "id": f"v2:grammar:{first}",
        "type": "grammar",
        "source": source,
        "references": [passage.text],
        "tags": [passage.register, f"{passage.tense}-tense", f"{passage.person}-person", *tags],
        "notes": f"Generated by augment_v2 (seed {seed}): {rules}; target from "
        f"clean-v2/{passage.origin}.",
    }


def build_rows(
    seed: int = DEFAULT_SEED, passages: Sequence[Passage] | None = None
) -> list[dict[str, Any]]:
    """The whole v2 set: grammar rows from the v2 passages (by default `clean-v2/`), clarity
    and style rows from the v1 rewriting rules over the v1 and v2 clean text."""
    if passages is None:
        passages = load_passages(REPO_ROOT / CLEAN_DIR)
    v1_pool = load_pool(REPO_ROOT / CLEAN_SENTENCES, REPO_ROOT / BASE_SET)
    v2_pool = [CleanLine(p.text, p.register, f"clean-v2/{p.origin}") for p in passages]
    pool = [*v1_pool, *v2_pool]
    lower = context(pool).lower_words
    base_sources: set[tuple[str, str]] = {
        (row.type, normalize(row.source)) for row in load_dataset(REPO_ROOT / BASE_SET)
    }
    rewrites = generate(pool, seed, taken=base_sources, quotas=REWRITE_QUOTAS)
    for row in rewrites:
        row["id"] = "v2:" + row["id"].removeprefix("aug:")
        row["notes"] = row["notes"].replace("Generated by augment", "Generated by augment_v2")
    return [*grammar_rows(passages, seed, lower), *rewrites]


def card(rows: Sequence[dict[str, Any]], passages: Sequence[Passage], seed: int) -> str:
    """The data card: what the set holds, counted from the rows themselves."""
    grammar = [row for row in rows if row["type"] == "grammar"]
    unchanged = [row for row in grammar if row["source"] == row["references"][0]]
    families: Counter[str] = Counter()
    first: Counter[str] = Counter()
    per_row: Counter[int] = Counter()
    for row in grammar:
        names = row["notes"].split(": ", 1)[1].split(";")[0].split(" + ")
        if names != ["unchanged"]:
            families.update(names)
            first[names[0]] += 1
            per_row[len(names)] += 1
    lines = [
        "# writing-train-v2: data card",
        "",
        f"Generated by `python -m modal_backend.training.augment_v2 --seed {seed}` (seed "
        f"**{seed}**) from {len(passages)} clean passages in `clean-v2/`; regenerate or check "
        "with `--check`. Counts below are computed from the file.",
        "",
        f"**{len(rows)} rows**: " + ", ".join(f"{k} {v}" for k, v in _count(rows, "type")),
        "",
        f"Grammar: {len(grammar)} rows, of which **{len(unchanged)} are already correct** "
        f"({len(unchanged) / max(1, len(grammar)):.0%}) and must come back unchanged; the "
        "others hold "
        + ", ".join(f"{n} error{'s' if n > 1 else ''} in {per_row[n]}" for n in sorted(per_row))
        + ".",
        "",
        "## Clean passages by register, tense and person",
        "",
        "| register | present | past | first | second | third | total |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for register, total in sorted(Counter(p.register for p in passages).items()):
        mine = [p for p in passages if p.register == register]
        cells = [sum(p.tense == t for p in mine) for t in ("present", "past")]
        cells += [sum(p.person == w for p in mine) for w in ("first", "second", "third")]
        lines.append(f"| {register} | " + " | ".join(map(str, [*cells, total])) + " |")
    lines += [
        "",
        "## Grammar rows by error family",
        "",
        "| family | what it injects | rows it starts | times applied |",
        "|---|---|---:|---:|",
    ]
    lines += [
        f"| `{r.name}` | {r.summary} | {first[r.name]} | {families[r.name]} |"
        for r in LEARNER_RULES
    ]
    lines += ["", "## Grammar rows by register and tense", "", "| register | tense | rows |"]
    lines.append("|---|---|---:|")
    by_register = Counter((row["tags"][0], row["tags"][1]) for row in grammar)
    lines += [f"| {reg} | {tense} | {n} |" for (reg, tense), n in sorted(by_register.items())]
    lines += ["", "## Tags", "", "| tag | rows |", "|---|---:|"]
    tag_counts = Counter(tag for row in rows for tag in row["tags"])
    lines += [f"| {tag} | {n} |" for tag, n in sorted(tag_counts.items())]
    return "\n".join(lines) + "\n"


def _count(rows: Sequence[dict[str, Any]], key: str) -> list[tuple[str, int]]:
    return sorted(Counter(row[key] for row in rows).items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modal_backend.training.augment_v2",
        description=(__doc__ or "").split("\n")[0],
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--check", action="store_true", help="exit 1 if the files have drifted")
    options = parser.parse_args(argv)
    passages = load_passages(REPO_ROOT / CLEAN_DIR)
    rows = build_rows(options.seed, passages)
    outputs = {
        REPO_ROOT / V2_SET: render(rows),
        REPO_ROOT / V2_CARD: card(rows, passages, options.seed),
    }
    print(json.dumps({"rows": len(rows), "by_type": dict(_count(rows, "type"))}, indent=2))
    if options.check:
        stale = [p for p, text in outputs.items() if not p.is_file() or p.read_text() != text]
        for path in stale:
            print(f"{path}: differs; regenerate it", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
