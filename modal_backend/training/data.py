"""Training data: our JSONL files and CoEdIT in; deduplicated, leak-checked examples out.

Rows are read by the eval harness's loaders (`eval.data`), so our training files use the eval
format (`{id, type, source, references: [target]}`) and CoEdIT goes through the one task mapping
(`COEDIT_TASKS`: gec -> grammar; clarity, coherence -> clarity; neutralize, paraphrase,
formality -> style). CoEdIT comes from the Hugging Face Hub where it is reachable (Modal), or from
a JSONL or parquet export of it anywhere else; the Hub copy is written to the run's folder as
JSONL, so every run keeps, and hashes, exactly the rows it trained on.

The leakage check is what makes eval scores mean something: no training text may equal, nearly
equal, contain or be contained in any eval text. It fails the build, naming the offending rows.
A build with no eval set to check against is refused unless the check is switched off on purpose
(`leak_check=False`, `--no-leak-check`), which the manifest records.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eval.data import EvalExample, dataset_sha256, load_dataset
from suggestions.contract import SuggestionType

from .config import COEDIT, TrainConfig, resolve_path

COEDIT_HUB_ID = "grammarly/coedit"
COEDIT_FIELDS = ("_id", "task", "src", "tgt")


class DataError(ValueError):
    """Training data that cannot be used; the message names the file, row or dataset."""


@dataclass(frozen=True)
class TrainingExample:
    """One source passage and the target our model should write for it."""

    id: str
    """`<dataset>:<row id>`, unique across the datasets of a run."""
    type: SuggestionType
    source: str
    target: str


@dataclass(frozen=True)
class DatasetRecord:
    """What the manifest says about one input dataset."""

    name: str
    path: str
    sha256: str
    rows: int
    used: int
    by_type: dict[str, int]
    revision: str | None = None
    converted_sha256: str | None = None
    """For a parquet export: the hash of the JSONL it was converted to (`sha256` is the
    parquet file's own, as given, so it matches the file a person has)."""


CONTAINMENT_MIN_CHARS = 40
"""Containment is only tested when the shorter text has at least this many characters (after
normalisation): a short phrase ("at the end of the day") is found inside many unrelated
passages, while 40 characters is already most of a sentence."""
NGRAM_WORDS = 8
"""Word n-gram length of the shared-run test: 8 words in a row is a copied clause, while
6-grams still match stock phrases ("due to the fact that the")."""


@dataclass(frozen=True)
class Leak:
    """A training text that equals, nearly equals, contains or shares a run of words with an
    eval text."""

    train_id: str
    eval_id: str
    score: float
    train_text: str
    eval_text: str
    method: str = "ratio"
    """`ratio` (whole-text similarity), `containment` (`fuzz.partial_ratio`: one text inside
    the other) or `ngram` (a shared run of `NGRAM_WORDS` words; the score is the share of the
    shorter text's n-grams that are shared)."""


class LeakageError(DataError):
    """Eval examples found in the training data."""

    def __init__(self, leaks: Sequence[Leak], threshold: float) -> None:
        self.leaks = list(leaks)
        shown = "\n".join(
            f"  {leak.train_id} ~ eval {leak.eval_id} ({leak.method} {leak.score:.0f}): "
            f"{leak.train_text[:80]!r}"
            for leak in self.leaks[:20]
        )
        more = f"\n  ... and {len(self.leaks) - 20} more" if len(self.leaks) > 20 else ""
        super().__init__(
            f"{len(self.leaks)} training text(s) equal, nearly equal or contain (similarity >= "
            f"{threshold:g}), or share {NGRAM_WORDS} words in a row with, an eval text; remove "
            f"them from the training data:\n{shown}{more}"
        )


@dataclass(frozen=True)
class TrainingData:
    """The built training set and what the manifest records about it."""

    train: list[TrainingExample]
    held_out: list[TrainingExample]
    """Not trained on: the SFT evaluation split (eval loss)."""
    records: list[DatasetRecord]
    duplicates_dropped: int
    eval_sets: list[dict[str, Any]]
    leakage: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        return {
            "train": _by_type(self.train),
            "held_out": _by_type(self.held_out),
            "duplicates_dropped": self.duplicates_dropped,
        }

    def dataset_records(self) -> list[dict[str, Any]]:
        return [asdict(record) for record in self.records]


def build_training_data(config: TrainConfig, work_dir: Path) -> TrainingData:
    """Load every dataset, drop duplicates, check for eval leakage (raising LeakageError), and
    hold out the evaluation split. `work_dir` receives the Hub and parquet copies as JSONL."""
    examples: list[TrainingExample] = []
    records: list[DatasetRecord] = []
    for spec in config.datasets:
        loaded, record = load_training_dataset(
            spec,
            work_dir=work_dir,
            coedit_revision=config.coedit_revision,
            coedit_per_type=config.coedit_per_type,
            seed=config.seed,
        )
        examples.extend(loaded)
        records.append(record)
    _check_unique_ids(examples)
    kept, dropped = deduplicate(examples)
    eval_examples: list[EvalExample] = []
    eval_sets: list[dict[str, Any]] = []
    for spec in config.eval_datasets:
        path = resolve_path(spec)
        rows = load_dataset(path)
        eval_examples.extend(rows)
        eval_sets.append({"path": spec, "sha256": dataset_sha256(path), "examples": len(rows)})
    if config.leak_check:
        if not eval_examples:
            raise DataError(
                "no eval examples to check the training data against (--eval-dataset): without "
                "them a leak cannot be ruled out. Pass an eval set, or --no-leak-check to train "
                "unchecked (recorded in the manifest; such a run cannot pass the promotion gate)"
            )
        check_leakage(kept, eval_examples, threshold=config.leakage_threshold)
        leakage: dict[str, Any] = {
            "checked": True,
            "threshold": config.leakage_threshold,
            "scorers": {
                "ratio": "rapidfuzz.fuzz.ratio on normalised text",
                "containment": "rapidfuzz.fuzz.partial_ratio on normalised text, when the "
                f"shorter text has at least {CONTAINMENT_MIN_CHARS} characters",
                "ngram": f"any shared run of {NGRAM_WORDS} normalised words",
            },
            "checked_eval_sets": [
                {"path": entry["path"], "sha256": entry["sha256"]} for entry in eval_sets
            ],
            "training_texts": 2 * len(kept),
            "eval_texts": sum(1 + len(e.references) for e in eval_examples),
            "leaks": 0,
        }
    else:
        leakage = {"checked": False, "reason": "--no-leak-check", "checked_eval_sets": []}
    train, held_out = split(kept, config.eval_fraction, seed=config.seed)
    return TrainingData(train, held_out, records, dropped, eval_sets, leakage)


def load_training_dataset(
    spec: str,
    *,
    work_dir: Path,
    coedit_revision: str | None = None,
    coedit_per_type: int | None = None,
    seed: int = 0,
) -> tuple[list[TrainingExample], DatasetRecord]:
    """One dataset by name (`coedit`) or path (our JSONL, a CoEdIT JSONL or parquet export)."""
    revision = None
    given_sha256 = None
    if spec == COEDIT:
        path, revision = fetch_coedit(work_dir, revision=coedit_revision)
    else:
        path = resolve_path(spec)
        if not path.is_file():
            raise DataError(f"{spec}: no such dataset file")
        if path.suffix == ".parquet":
            given_sha256 = dataset_sha256(path)
            path = parquet_to_jsonl(path, work_dir / f"{path.stem}.jsonl")
    rows = load_dataset(path)
    name = COEDIT if spec == COEDIT else path.stem
    if _is_coedit(path) and coedit_per_type is not None:
        rows = sample_per_type(rows, coedit_per_type, seed=seed)
    examples = [_training_example(row, name, path) for row in rows]
    rows_sha256 = dataset_sha256(path)
    record = DatasetRecord(
        name=name,
        path=spec,
        sha256=given_sha256 or rows_sha256,
        rows=_count_rows(path),
        used=len(examples),
        by_type=_by_type(examples),
        revision=revision,
        converted_sha256=rows_sha256 if given_sha256 else None,
    )
    return examples, record


def fetch_coedit(work_dir: Path, *, revision: str | None = None) -> tuple[Path, str | None]:
    """CoEdIT's train split from the Hub, written as CoEdIT-style JSONL; returns the file and the
    Hub commit it came from. Fails at once, with what to do instead, where the Hub is off."""
    offline = [name for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if _truthy(name)]
    if offline:
        raise DataError(
            f"cannot fetch {COEDIT_HUB_ID} from the Hugging Face Hub: {offline[0]} is set. "
            "Export it where the Hub is reachable (`datasets.load_dataset('grammarly/coedit', "
            "split='train').to_parquet('coedit-train.parquet')`) and pass that file instead: "
            "--dataset coedit-train.parquet"
        )
    try:
        # By name at run time: type checkers run from the repository root resolve `datasets` to
        # our data folder of that name.
        hub = importlib.import_module("datasets")
        hub_rows = hub.load_dataset(COEDIT_HUB_ID, split="train", revision=revision)
    except Exception as exc:  # connection, auth and missing-revision errors all land here
        raise DataError(
            f"cannot fetch {COEDIT_HUB_ID} from the Hugging Face Hub ({type(exc).__name__}: "
            f"{exc}). Where the Hub is unreachable, pass an export of it (JSONL or parquet) "
            "with --dataset PATH"
        ) from exc
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "coedit-train.jsonl"
    _write_coedit_jsonl(hub_rows, path)
    return path, _hub_commit(revision)


def parquet_to_jsonl(path: Path, out: Path) -> Path:
    """A CoEdIT parquet export as CoEdIT-style JSONL, so it goes through the same loader."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    missing = [name for name in ("task", "src", "tgt") if name not in table.column_names]
    if missing:
        raise DataError(f"{path}: not a CoEdIT export (missing column(s) {', '.join(missing)})")
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_coedit_jsonl(table.to_pylist(), out)
    return out


def sample_per_type(rows: Sequence[EvalExample], per_type: int, *, seed: int) -> list[EvalExample]:
    """At most `per_type` rows of each suggestion type, drawn with a fixed seed, in file order."""
    rng = random.Random(seed)
    keep: set[int] = set()
    for kind in sorted({row.type for row in rows}):
        indices = [i for i, row in enumerate(rows) if row.type == kind]
        keep.update(indices if len(indices) <= per_type else rng.sample(indices, per_type))
    return [row for i, row in enumerate(rows) if i in keep]


def normalize(text: str) -> str:
    """Compatibility-folded, case-folded, single-spaced: what counts as 'the same text'."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = folded.translate(_QUOTES)
    return re.sub(r"\s+", " ", folded).strip()


_QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "—": "-", "–": "-"})


def deduplicate(examples: Sequence[TrainingExample]) -> tuple[list[TrainingExample], int]:
    """Keep the first example of each (type, normalised source); earlier datasets win, so list
    our own data before CoEdIT. Returns the kept examples and how many were dropped."""
    seen: set[tuple[str, str]] = set()
    kept: list[TrainingExample] = []
    for example in examples:
        key = (example.type, normalize(example.source))
        if key not in seen:
            seen.add(key)
            kept.append(example)
    return kept, len(examples) - len(kept)


def find_leaks(
    train: Sequence[TrainingExample],
    evals: Sequence[EvalExample],
    *,
    threshold: float = 90.0,
    chunk: int = 20_000,
) -> list[Leak]:
    """Every (training example, eval example) pair with a leak, the strongest evidence first.

    Sources and targets on both sides are compared, after `normalize`, three ways:

    - `fuzz.ratio` (Indel similarity, 0 to 100) at least `threshold`: equal or nearly equal;
    - `fuzz.partial_ratio` at least `threshold`, when the shorter text has at least
      `CONTAINMENT_MIN_CHARS` characters: one text (nearly) inside the other, as when an eval
      passage is embedded in a longer training passage, or split across training rows (each
      part is then inside the eval passage);
    - a shared run of `NGRAM_WORDS` words, which catches a copied clause inside otherwise
      different passages, whatever their lengths.

    `process.cdist` compares a chunk of training texts against all eval texts at once, in C++
    on every core, and skips pairs below the cutoff early.
    """
    import numpy as np
    from rapidfuzz import fuzz, process

    train_texts = [(ex.id, text) for ex in train for text in (ex.source, ex.target)]
    eval_texts = [(ex.id, text) for ex in evals for text in (ex.source, *ex.references)]
    if not train_texts or not eval_texts:
        return []
    eval_norm = [normalize(text) for _, text in eval_texts]
    eval_long = np.array([len(text) >= CONTAINMENT_MIN_CHARS for text in eval_norm])
    leaks: dict[tuple[str, str], Leak] = {}

    def add(row: tuple[str, str], column: int, score: float, method: str) -> None:
        train_id, train_text = row
        eval_id, eval_text = eval_texts[column]
        previous = leaks.get((train_id, eval_id))
        if previous is None or score > previous.score:
            leak = Leak(train_id, eval_id, score, train_text, eval_text, method)
            leaks[(train_id, eval_id)] = leak

    for start in range(0, len(train_texts), chunk):
        block = train_texts[start : start + chunk]
        block_norm = [normalize(text) for _, text in block]
        for method, scorer in (("ratio", fuzz.ratio), ("containment", fuzz.partial_ratio)):
            scores = process.cdist(
                block_norm,
                eval_norm,
                scorer=scorer,
                score_cutoff=threshold,
                dtype=np.uint8,
                workers=-1,
            )
            if method == "containment":
                block_long = np.array([len(text) >= CONTAINMENT_MIN_CHARS for text in block_norm])
                scores[~np.outer(block_long, eval_long)] = 0
            for row, column in zip(*np.nonzero(scores), strict=True):
                add(block[row], int(column), float(scores[row, column]), method)

    eval_grams: dict[tuple[str, ...], set[int]] = {}
    eval_gram_counts = []
    for column, text in enumerate(eval_norm):
        grams = word_ngrams(text)
        eval_gram_counts.append(len(grams))
        for gram in grams:
            eval_grams.setdefault(gram, set()).add(column)
    for row in train_texts:
        grams = word_ngrams(normalize(row[1]))
        shared: Counter[int] = Counter()
        for gram in grams:
            shared.update(eval_grams.get(gram, ()))
        for column, count in shared.items():
            share = 100.0 * count / min(len(grams), eval_gram_counts[column])
            add(row, column, round(share, 1), "ngram")
    return sorted(leaks.values(), key=lambda leak: (-leak.score, leak.train_id, leak.eval_id))


def word_ngrams(text: str, n: int = NGRAM_WORDS) -> set[tuple[str, ...]]:
    """The runs of `n` consecutive words (letters, digits and inner apostrophes) of `text`."""
    words = re.findall(r"\w+(?:'\w+)*", text)
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def check_leakage(
    train: Sequence[TrainingExample], evals: Sequence[EvalExample], *, threshold: float
) -> None:
    """Raise LeakageError listing every leak; return quietly when there is none."""
    leaks = find_leaks(train, evals, threshold=threshold)
    if leaks:
        raise LeakageError(leaks, threshold)


def split(
    examples: Sequence[TrainingExample], fraction: float, *, seed: int
) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """A seeded random hold-out of `fraction` of the examples (at least one when the fraction is
    above zero and there are two or more); the rest keep their order."""
    if fraction <= 0 or len(examples) < 2:
        return list(examples), []
    count = min(len(examples) - 1, max(1, round(len(examples) * fraction)))
    held = set(random.Random(seed).sample(range(len(examples)), count))
    train = [ex for i, ex in enumerate(examples) if i not in held]
    held_out = [ex for i, ex in enumerate(examples) if i in held]
    return train, held_out


def _training_example(row: EvalExample, dataset: str, path: Path) -> TrainingExample:
    if len(row.references) != 1:
        raise DataError(
            f"{path}: row {row.id!r} has {len(row.references)} references; a training row "
            "needs exactly one, its target"
        )
    return TrainingExample(
        id=f"{dataset}:{row.id}",
        type=row.type,
        source=row.source.strip(),
        target=row.references[0].strip(),
    )


def _check_unique_ids(examples: Iterable[TrainingExample]) -> None:
    counts = Counter(example.id for example in examples)
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        raise DataError(
            f"example id(s) {', '.join(repeated[:5])} appear more than once: a dataset is "
            "listed twice, or two files share a name"
        )


def _by_type(examples: Iterable[TrainingExample]) -> dict[str, int]:
    return dict(sorted(Counter(example.type for example in examples).items()))


def _is_coedit(path: Path) -> bool:
    if path.suffix not in {".jsonl", ".json"}:
        return False
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                return isinstance(row, dict) and "task" in row
    return False


def _count_rows(path: Path) -> int:
    with path.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def _write_coedit_jsonl(rows: Iterable[dict[str, Any]], path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            record = {name: row.get(name) for name in COEDIT_FIELDS if name in row}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def _hub_commit(revision: str | None) -> str | None:
    """The dataset's Hub commit, so the manifest pins what 'main' meant on the day."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(COEDIT_HUB_ID, revision=revision).sha
    except Exception:  # the rows are hashed anyway; the commit is a convenience
        return revision


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
