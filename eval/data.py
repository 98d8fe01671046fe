"""Eval datasets: one row model, four loaders, and a content hash for the run's config.

Rows are `{id, type, source, references[], tags?, notes?}`. Loaders: our JSONL, JFLEG-style
parallel files (`x.src` plus `x.ref0..N`), CoEdIT-style JSONL (`task`, `src` with an instruction
prefix, `tgt`) and CSV. A bad row fails with the file and line number and what is wrong with it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from suggestions.contract import SuggestionType, describe_validation_error


class DatasetError(ValueError):
    """A dataset that cannot be read; the message names the file and line."""


class EvalExample(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    type: SuggestionType
    source: str = Field(min_length=1)
    references: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    notes: str = ""

    @field_validator("source")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("source is blank")
        return value


COEDIT_TASKS: dict[str, SuggestionType] = {
    "gec": "grammar",
    "clarity": "clarity",
    "coherence": "clarity",
    "neutralize": "style",
    "paraphrase": "style",
    "formality": "style",
}
"""CoEdIT's tasks mapped to our suggestion types (simplification is left out: not one of ours)."""


def load_dataset(
    path: str | Path, *, default_type: SuggestionType = "grammar"
) -> list[EvalExample]:
    """Any supported layout, chosen by what `path` is:

    - `x.jsonl` with `id`/`type`/`source` rows: ours; with `task`/`src`/`tgt`: CoEdIT-style;
    - `x.csv` with `id,type,source,reference...` columns;
    - `x.src` (or a folder holding exactly one `*.src`): JFLEG-style parallel files, of type
      `default_type`.
    """
    path = Path(path)
    if path.is_dir():
        sources = sorted(path.glob("*.src"))
        if len(sources) != 1:
            raise DatasetError(
                f"{path}: expected one *.src file in the folder, found {len(sources)}"
            )
        path = sources[0]
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file")
    if path.suffix == ".src":
        return load_parallel(path, kind=default_type)
    if path.suffix == ".csv":
        return load_csv(path)
    if path.suffix in {".jsonl", ".json"}:
        first = _first_json_row(path)
        return load_coedit(path) if first is not None and "task" in first else load_jsonl(path)
    raise DatasetError(f"{path}: unknown dataset format (use .jsonl, .csv or .src)")


def load_jsonl(path: Path) -> list[EvalExample]:
    rows = []
    for line_number, row in _json_lines(path):
        rows.append(_example(row, path, line_number))
    return _checked(rows, path)


def load_parallel(source_path: Path, *, kind: SuggestionType = "grammar") -> list[EvalExample]:
    """`name.src` and its `name.ref0`, `name.ref1`, ... line by line; ids are `name-<line>`."""
    stem = source_path.with_suffix("")
    reference_paths = sorted(
        source_path.parent.glob(f"{stem.name}.ref*"),
        key=lambda p: int(re.sub(r"\D", "", p.suffix) or 0),
    )
    sources = _lines(source_path)
    references = [_lines(p) for p in reference_paths]
    for ref_path, ref_lines in zip(reference_paths, references, strict=True):
        if len(ref_lines) != len(sources):
            raise DatasetError(
                f"{ref_path}: {len(ref_lines)} lines, but {source_path.name} has {len(sources)}"
            )
    rows = []
    for index, source in enumerate(sources):
        row = {
            "id": f"{stem.name}-{index + 1}",
            "type": kind,
            "source": source,
            "references": [lines[index] for lines in references],
        }
        rows.append(_example(row, source_path, index + 1))
    return _checked(rows, source_path)


_INSTRUCTION = re.compile(r"^[^:\n]{1,120}:\s*")


def load_coedit(path: Path) -> list[EvalExample]:
    """CoEdIT rows (`_id`, `task`, `src` = "<instruction>: <text>", `tgt`); the instruction
    prefix is dropped, since our prompt contract writes its own."""
    rows = []
    for line_number, row in _json_lines(path):
        task = row.get("task")
        if task not in COEDIT_TASKS:
            if task == "simplification":
                continue
            raise DatasetError(f"{path}:{line_number}: unknown CoEdIT task {task!r}")
        source = _INSTRUCTION.sub("", str(row.get("src", "")), count=1)
        example = {
            "id": str(row.get("_id") or f"{path.stem}-{line_number}"),
            "type": COEDIT_TASKS[task],
            "source": source,
            "references": [row["tgt"]] if row.get("tgt") else [],
            "tags": [task],
        }
        rows.append(_example(example, path, line_number))
    return _checked(rows, path)


def load_csv(path: Path) -> list[EvalExample]:
    """Columns `id`, `type`, `source`, then any `reference...` columns (empty ones skipped)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:  # Excel writes a BOM
        reader = csv.DictReader(handle)
        missing = {"id", "type", "source"} - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        ref_columns = [name for name in reader.fieldnames or () if name.startswith("reference")]
        rows = []
        for line_number, record in enumerate(reader, start=2):
            row: dict[str, Any] = {
                "id": record["id"],
                "type": record["type"],
                "source": record["source"],
                "references": [record[c] for c in ref_columns if record.get(c)],
            }
            if record.get("tags"):
                row["tags"] = [tag.strip() for tag in record["tags"].split(",") if tag.strip()]
            rows.append(_example(row, path, line_number))
    return _checked(rows, path)


def dataset_sha256(path: str | Path) -> str:
    """Hash of the dataset's bytes (all parallel files for JFLEG-style data)."""
    path = Path(path)
    files = [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
    elif path.suffix == ".src":
        files = [path, *sorted(path.parent.glob(f"{path.stem}.ref*"))]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def write_jsonl(examples: Iterable[EvalExample], path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(example.model_dump_json() + "\n")


def _example(row: Any, path: Path, line_number: int) -> EvalExample:
    if not isinstance(row, dict):
        raise DatasetError(f"{path}:{line_number}: a row must be a JSON object")
    try:
        return EvalExample.model_validate(row)
    except ValidationError as exc:
        problems = describe_validation_error(exc).replace("\n", "; ")
        raise DatasetError(f"{path}:{line_number}: {problems}") from exc


def _checked(rows: Sequence[EvalExample], path: Path) -> list[EvalExample]:
    seen: set[str] = set()
    for row in rows:
        if row.id in seen:
            raise DatasetError(f"{path}: the id {row.id!r} appears twice")
        seen.add(row.id)
    if not rows:
        raise DatasetError(f"{path}: no examples")
    return list(rows)


def _json_lines(path: Path) -> Iterable[tuple[int, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{line_number}: not valid JSON ({exc.msg})") from exc


def _first_json_row(path: Path) -> dict[str, Any] | None:
    for _, row in _json_lines(path):
        return row if isinstance(row, dict) else None
    return None


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
