"""Seeded training-data augmentation: our own clean sentences, broken on purpose, as examples.

Each generated example pairs a corrupted source with a clean target that we wrote ourselves:
the lines of `datasets/train/clean-sentences-v1.txt` and the targets of
`writing-train-v1.jsonl`. Grammar rules inject errors (`augment_rules`), clarity rules wordiness,
redundancy, nominalisations and passives, style rules fillers, intensifiers and clichés
(`augment_rewrites`); the target is never touched, so each example is a real edit back to
correct, tight text. Nothing comes from JFLEG or the eval set, and the committed output is
exactly what this module writes for the documented seed (the tests regenerate and compare):

    python -m modal_backend.training.augment --seed 13
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

from .augment_rewrites import CLARITY_RULES, STYLE_RULES
from .augment_rules import GRAMMAR_RULES, Context, Rule
from .config import REPO_ROOT
from .data import normalize

DEFAULT_SEED = 13
CLEAN_SENTENCES = "datasets/train/clean-sentences-v1.txt"
BASE_SET = "datasets/train/writing-train-v1.jsonl"
AUGMENTED_SET = "datasets/train/writing-train-augmented-v1.jsonl"
RULES: dict[SuggestionType, tuple[Rule, ...]] = {
    "grammar": GRAMMAR_RULES,
    "clarity": CLARITY_RULES,
    "style": STYLE_RULES,
}
QUOTAS: dict[SuggestionType, int] = {"grammar": 800, "clarity": 560, "style": 560}
"""Examples generated per type: with the 360 hand-written ones, about 2,240 in all, grammar the
largest (the one type with many distinct error kinds)."""
SECOND_RULE = 0.3
"""Chance that an example gets a second, different problem, as real drafts mix them."""


@dataclass(frozen=True)
class CleanLine:
    """A correct sentence or passage of ours: the target of the examples made from it."""

    text: str
    genre: str
    origin: str
    """Where it came from: `clean-sentences-v1.txt:LINE` or `writing-train-v1:ROW_ID`."""


def load_pool(clean: Path, base: Path) -> list[CleanLine]:
    """The clean sentences file, then the targets of the hand-written set, without repeats."""
    pool: list[CleanLine] = []
    genre = ""
    for number, raw in enumerate(clean.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if line.startswith("## "):
            genre = line[3:].strip()
        elif line and not line.startswith("#"):
            pool.append(CleanLine(line, genre, f"{clean.name}:{number}"))
    for row in load_dataset(base):
        genre = row.tags[0] if row.tags else ""
        pool.append(CleanLine(row.references[0].strip(), genre, f"{base.stem}:{row.id}"))
    seen: set[str] = set()
    unique = []
    for clean_line in pool:
        if normalize(clean_line.text) not in seen:
            seen.add(normalize(clean_line.text))
            unique.append(clean_line)
    return unique


def context(pool: Sequence[CleanLine]) -> Context:
    """The words the pool writes in lower case somewhere: safe to lowercase, and real words."""
    words = {w for line in pool for w in re.findall(r"(?<![\w'])[a-z][\w']*", line.text)}
    return Context(lower_words=frozenset(words))


def generate(
    pool: Sequence[CleanLine],
    seed: int = DEFAULT_SEED,
    *,
    taken: set[tuple[str, str]] | None = None,
    quotas: dict[SuggestionType, int] | None = None,
) -> list[dict[str, Any]]:
    """The augmented rows, in the eval/training JSONL format. `taken` holds (type, normalised
    source) pairs already in use (the hand-written set), so the build drops no duplicates.

    Every draw comes from a `random.Random` seeded by text (seed, type, line, rule), never from
    hash order, so the output depends on the seed and the pool alone, and an edit to one clean
    line changes only that line's examples (and where the quotas cut off)."""
    ctx = context(pool)
    used_sources = set(taken or ())
    rows: list[dict[str, Any]] = []
    for kind, rules in RULES.items():
        quota = (quotas or QUOTAS)[kind]
        order = list(range(len(pool)))
        random.Random(f"{seed}:{kind}:order").shuffle(order)
        first_uses: Counter[str] = Counter()
        made: list[tuple[list[str], CleanLine, str]] = []
        for index in order:
            if len(made) >= quota:
                break
            line = pool[index]
            rng = random.Random(f"{seed}:{kind}:{line.text}")
            result = corrupt(line.text, rules, rng, ctx, first_uses, quota)
            if result is None:
                continue
            names, source = result
            key = (kind, normalize(source))
            if key in used_sources:
                continue
            used_sources.add(key)
            first_uses[names[0]] += 1
            made.append((names, line, source))
        rows.extend(_rows(kind, rules, made, seed))
    return rows


def corrupt(
    text: str,
    rules: Sequence[Rule],
    rng: random.Random,
    ctx: Context,
    uses: Counter[str],
    quota: int,
) -> tuple[list[str], str] | None:
    """One or two rules applied to `text`: the least-used rule that applies first, so rare
    rules are not crowded out. Returns the rule names and the source, or None."""
    applicable = _applicable(text, rules, rng, ctx)
    if not applicable:
        return None
    applicable = [(rule, out) for rule, out in applicable if uses[rule.name] < rule.share * quota]
    if not applicable:
        return None
    fewest = min(uses[rule.name] for rule, _ in applicable)
    choices = [pair for pair in applicable if uses[pair[0].name] == fewest]
    rule, source = choices[rng.randrange(len(choices))]
    names = [rule.name]
    if rng.random() < SECOND_RULE:
        others = [r for r in rules if r.name != rule.name]
        more = _applicable(source, others, rng, ctx)
        if more:
            second, twice = more[rng.randrange(len(more))]
            if twice != text:
                names.append(second.name)
                source = twice
    return (names, source) if is_edit(source, text) else None


def is_edit(source: str, target: str) -> bool:
    """A usable pair: the source differs from the target and is tidy text (no stray spaces)."""
    return source != target and source == source.strip() and "  " not in source and bool(source)


def _applicable(
    text: str, rules: Sequence[Rule], rng: random.Random, ctx: Context
) -> list[tuple[Rule, str]]:
    found = []
    for rule in rules:
        out = rule.apply(text, rng, ctx)
        if out is not None and is_edit(out, text):
            found.append((rule, out))
    return found


def _rows(
    kind: SuggestionType,
    rules: Sequence[Rule],
    made: Sequence[tuple[list[str], CleanLine, str]],
    seed: int,
) -> list[dict[str, Any]]:
    tags = {rule.name: rule.tags for rule in rules}
    rank = {rule.name: i for i, rule in enumerate(rules)}
    numbered: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []
    for names, line, source in made:
        numbered[names[0]] += 1
        row_tags = [line.genre, *dict.fromkeys(tag for name in names for tag in tags[name])]
        rows.append(
            {
                "id": f"aug:{kind}:{names[0]}:{numbered[names[0]]:04d}",
                "type": kind,
                "source": source,
                "references": [line.text],
                "tags": row_tags,
                "notes": f"Generated by augment (seed {seed}): {' + '.join(names)}; "
                f"target from {line.origin}.",
            }
        )
    rows.sort(key=lambda row: (rank[row["id"].split(":")[2]], row["id"]))
    return rows


def render(rows: Sequence[dict[str, Any]]) -> str:
    """The JSONL text, one row a line, UTF-8 as written (no escapes)."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def build(seed: int = DEFAULT_SEED, clean: str = CLEAN_SENTENCES, base: str = BASE_SET) -> str:
    """The augmented file's text for a seed, from the committed clean sentences and base set."""
    base_path = REPO_ROOT / base
    pool = load_pool(REPO_ROOT / clean, base_path)
    taken: set[tuple[str, str]] = {
        (row.type, normalize(row.source)) for row in load_dataset(base_path)
    }
    return render(generate(pool, seed, taken=taken))


def counts(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rows per type, per type and first rule, and how often each rule was applied at all."""
    by_rule: Counter[str] = Counter()
    applied: Counter[str] = Counter()
    for row in rows:
        by_rule[f"{row['type']}:{row['id'].split(':')[2]}"] += 1
        names = row["notes"].split(": ", 1)[1].split(";")[0].split(" + ")
        applied.update(f"{row['type']}:{name}" for name in names)
    return {
        "by_type": dict(Counter(row["type"] for row in rows)),
        "by_first_rule": dict(by_rule),
        "rule_applied": dict(applied),
        "two_rules": sum(1 for row in rows if " + " in row["notes"]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modal_backend.training.augment", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", default=AUGMENTED_SET, help=f"default {AUGMENTED_SET}")
    parser.add_argument("--clean", default=CLEAN_SENTENCES, help="the clean sentences file")
    parser.add_argument("--base", default=BASE_SET, help="the hand-written training set")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if --out differs from what would be written"
    )
    options = parser.parse_args(argv)
    text = build(options.seed, options.clean, options.base)
    out = Path(options.out) if Path(options.out).is_absolute() else REPO_ROOT / options.out
    rows = [json.loads(line) for line in text.splitlines()]
    print(json.dumps({"rows": len(rows), **counts(rows)}, indent=2))
    if options.check:
        same = out.is_file() and out.read_text(encoding="utf-8") == text
        print(f"{out}: {'up to date' if same else 'differs; regenerate it'}", file=sys.stderr)
        return 0 if same else 1
    out.write_text(text, encoding="utf-8")
    print(f"wrote {len(rows)} rows to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
