"""The run folder's one reader and writer: light enough for the app, and its files round-trip."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from eval import run_folder
from eval.run_folder import RunFolderError

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "numpy", "spacy", "torch", "pydantic", "matplotlib", "sentence_transformers")


def test_importing_it_and_the_registry_loads_nothing_heavy() -> None:
    """The reviewer app imports both; its image has neither spaCy nor torch."""
    script = (
        "import sys; import eval.run_folder, eval.metrics.registry; "
        f"print(sorted(set({HEAVY!r}) & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_predictions_append_and_the_latest_line_of_a_pair_counts(tmp_path: Path) -> None:
    writer = run_folder.PredictionWriter(tmp_path)
    writer.write({"index": 1, "example_id": "b", "backend": "m", "ok": True})
    writer.write({"index": 0, "example_id": "a", "backend": "m", "ok": False})
    writer.write({"index": 0, "example_id": "a", "backend": "m", "ok": True})
    writer.close()
    path = tmp_path / run_folder.PREDICTIONS
    with path.open("a") as torn:  # a kill mid-write
        torn.write('{"example_id": "c", "back')
    rows = run_folder.read_predictions(tmp_path)
    assert [(r["example_id"], r["ok"], r["attempts"]) for r in rows] == [
        ("a", True, 2),
        ("b", True, 1),
    ]
    run_folder.drop_torn_line(tmp_path)
    assert path.read_text().endswith("}\n") and len(path.read_text().splitlines()) == 3


def test_config_and_summary_round_trip(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    assert not run_folder.has_run(folder) and run_folder.find_config(folder) is None
    run_folder.write_config(folder, {"dataset": "d.jsonl", "limit": None})
    assert run_folder.has_run(folder)
    assert run_folder.read_config(folder) == run_folder.find_config(folder)
    run_folder.write_summary(folder, {"backends": {"m": {"metrics": {"gleu": 0.5}}}})
    assert run_folder.has_summary(folder)
    assert run_folder.read_summary(folder)["backends"]["m"]["metrics"]["gleu"] == 0.5
    assert run_folder.scored_folders([tmp_path, folder]) == [folder]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no summary.json in run folder"),
        ("{not json", "not valid JSON"),
        ("[1]", "not a JSON object"),
        (json.dumps({"backends": []}), "'backends' must map"),
    ],
)
def test_a_bad_summary_is_a_run_folder_error_naming_it(
    tmp_path: Path, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / run_folder.SUMMARY).write_text(content)
    with pytest.raises(RunFolderError, match=message):
        run_folder.read_summary(tmp_path)
    with pytest.raises(RunFolderError, match="run folder not found"):
        run_folder.read_summary(tmp_path / "missing")


def test_only_run_folder_spells_the_file_names() -> None:
    """Every other reader goes through eval.run_folder (its names and functions)."""
    names = {
        run_folder.CONFIG,
        run_folder.PREDICTIONS,
        run_folder.METRICS_CSV,
        run_folder.METRICS_PARQUET,
        run_folder.SUMMARY,
    }
    sources = [
        *(ROOT / "eval").rglob("*.py"),
        *(ROOT / "app").rglob("*.py"),
        ROOT / "modal_backend" / "training" / "gate.py",
        ROOT / "modal_backend" / "training" / "evaluation.py",
    ]
    spelled = {
        f"{path.relative_to(ROOT)}: {node.value}"
        for path in sources
        if path.name != "run_folder.py" and "evaluate_modules" not in path.parts
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in names
    }
    assert not spelled


def test_a_nan_score_is_written_as_null_so_the_summary_stays_json(tmp_path: Path) -> None:
    from eval.run_folder import SUMMARY, write_summary

    def strict(token: str) -> None:
        raise ValueError(f"{token} is not JSON")

    write_summary(tmp_path, {"backends": {"mock": {"metrics": {"gleu": float("nan")}}}})
    text = (tmp_path / SUMMARY).read_text()
    parsed = json.loads(text, parse_constant=strict)
    assert parsed["backends"]["mock"]["metrics"]["gleu"] is None
