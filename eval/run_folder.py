"""A run folder's files, read and written here only.

`python -m eval run` writes `config.json` (what was run: dataset and its SHA-256, backends and
model ids, code version) and appends one line per finished (example, backend) pair to
`predictions.jsonl`; scoring writes `metrics.csv` and `metrics.parquet` (one row per pair) and
`summary.json` (corpus scores, per-example means, latency percentiles, error rates), then the
reports. The comparison, the gates, the app's dashboard and training's promotion gate read them
back through the functions below, so a file's name and shape have one owner.

Light on purpose: the reviewer app imports this module, so only the standard library loads at
import time (pandas inside the functions that need it).
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import pandas as pd

CONFIG: Final = "config.json"
PREDICTIONS: Final = "predictions.jsonl"
METRICS_CSV: Final = "metrics.csv"
METRICS_PARQUET: Final = "metrics.parquet"
SUMMARY: Final = "summary.json"
REPORT_MD: Final = "report.md"
REPORT_HTML: Final = "report.html"
PLOTS: Final = "plots"

UNEDITED: Final = "unedited source"
"""The do-nothing line's name, and what the summary's `failed_rows_scored_as` says: a failed
row is scored as its unedited source. A folder scored before that left them empty, and pairing
it would compare other rows."""

KEY_COLUMNS: Final = ("example_id", "backend", "type", "ok", "error_kind")
"""The columns of metrics.csv that say which row it is, not how it scored."""


class RunFolderError(ValueError):
    """A run folder is missing or its files cannot be used (the CLI exits 2 on it)."""


# --- config.json ----------------------------------------------------------------------------


def has_run(folder: Path) -> bool:
    """Whether a run was started in `folder` (its config is written first)."""
    return (folder / CONFIG).exists()


def write_config(folder: Path, config: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def read_config(folder: Path) -> dict[str, Any]:
    """The run's config; OSError or a JSON ValueError as reading it raises them."""
    config: dict[str, Any] = json.loads((folder / CONFIG).read_text())
    return config


def find_config(folder: Path) -> dict[str, Any] | None:
    """The run's config, or None when it is missing or unreadable (a check that reports it)."""
    document = _json_or_none(folder / CONFIG)
    return document if isinstance(document, dict) else None


def code_version() -> str:
    """The git commit (with `-dirty` for local changes), or the package version outside git:
    what a run's config (and a training manifest) records as the code that made it."""
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
        return result.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        from importlib.metadata import version

        return version("writing-suggestions")


# --- predictions.jsonl ----------------------------------------------------------------------


class PredictionWriter:
    """Appends one JSON line per finished pair and flushes it, so a kill loses nothing that
    was written (the OS holds it) and at most the line being written. Never rewrites."""

    def __init__(self, folder: Path) -> None:
        self.handle = (folder / PREDICTIONS).open("a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def read_predictions(folder: Path) -> list[dict[str, Any]]:
    """The latest row of each (example, backend) pair, in dataset order (they are written as
    they finish), skipping a torn last line (a run killed mid-write). Corpus GLEU and ERRANT
    depend on the order. Each row gets `attempts`: how many lines its pair has, that is, how
    many times the runner asked (a retry on `--resume` appends a line; nothing is rewritten)."""
    path = folder / PREDICTIONS
    if not path.exists():
        return []
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    attempts: dict[tuple[str, str], int] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        key = (str(row["example_id"]), str(row["backend"]))
        attempts[key] = attempts.get(key, 0) + 1
        latest[key] = row
    rows = [row | {"attempts": attempts[key]} for key, row in latest.items()]
    return sorted(rows, key=lambda row: (row.get("index", 0), row["backend"]))


def drop_torn_line(folder: Path) -> None:
    """Cut a last line left half-written by a kill, so appending starts on a fresh line."""
    path = folder / PREDICTIONS
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])


# --- metrics.csv / metrics.parquet ----------------------------------------------------------

_CSV_NA: Final = ["", "nan", "NaN", "NAN", "NA", "N/A", "<NA>", "null", "None"]
"""What counts as an empty cell in a metric column of metrics.csv."""
_TRUE_STRINGS: Final = frozenset({"true", "1", "yes", "1.0"})
_FALSE_STRINGS: Final = frozenset({"false", "0", "no", "0.0"})
_TEXT_COLUMNS: Final = {"example_id": str, "backend": str, "type": str}


def has_metrics(folder: Path) -> bool:
    """Whether the folder was scored (per-example metrics in either format)."""
    return (folder / METRICS_PARQUET).is_file() or (folder / METRICS_CSV).is_file()


def write_metrics(folder: Path, frame: pd.DataFrame) -> None:
    """Both formats: CSV for people and spreadsheets, parquet for exact types."""
    frame.to_csv(folder / METRICS_CSV, index=False)
    frame.to_parquet(folder / METRICS_PARQUET, index=False)


def read_metrics(run: Path) -> pd.DataFrame:
    """metrics.parquet when present (exact types), else metrics.csv, checked and normalised:
    ids as text, `ok` as booleans, one row per (example_id, backend)."""
    import pandas as pd

    _require_folder(run)
    parquet, csv = run / METRICS_PARQUET, run / METRICS_CSV
    try:
        if parquet.is_file():
            source = parquet
            frame = pd.read_parquet(parquet)
        elif csv.is_file():
            source = csv
            # Ids stay text: "007" must not become 7, nor an id "NA" a missing value.
            header = pd.read_csv(csv, nrows=0).columns
            frame = pd.read_csv(
                csv,
                dtype=_TEXT_COLUMNS,
                keep_default_na=False,
                na_values={name: _CSV_NA for name in header if name not in _TEXT_COLUMNS},
            )
        else:
            raise RunFolderError(f"no {METRICS_CSV} or {METRICS_PARQUET} in run folder {run}")
    except RunFolderError:
        raise
    except Exception as error:  # pandas/pyarrow raise many types for a damaged file
        raise RunFolderError(f"cannot read metrics in {run}: {error}") from error
    missing = [name for name in ("example_id", "backend", "ok") if name not in frame.columns]
    if missing:
        raise RunFolderError(f"{source}: missing column(s) {', '.join(missing)}")
    frame = frame.copy()
    frame["example_id"] = frame["example_id"].astype(str)
    frame["backend"] = frame["backend"].astype(str)
    frame["ok"] = _ok_column(frame["ok"], source)
    duplicated = frame.duplicated(["example_id", "backend"])
    if duplicated.any():
        first = frame.loc[duplicated].iloc[0]
        raise RunFolderError(
            f"{source}: more than one row for example {first['example_id']!r} "
            f"on backend {first['backend']!r}"
        )
    return frame


def _ok_column(values: Any, source: Path) -> Any:
    """`ok` as booleans whether it came from parquet (bool) or CSV (bool or text)."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(values):
        return values.astype(bool)

    def parse(value: Any) -> bool:
        text = str(value).strip().lower()
        if text in _TRUE_STRINGS:
            return True
        if text in _FALSE_STRINGS:
            return False
        raise RunFolderError(f"{source}: column 'ok' has a value that is not a boolean: {value!r}")

    return values.map(parse).astype(bool)


def require_scored_failures(run: Path, frame: pd.DataFrame) -> None:
    """A run with failed rows must say its failures were scored as the unedited source; one
    scored before that left them empty, and its scores cannot be paired over the dataset."""
    if bool(frame["ok"].all()):
        return
    document = _json_or_none(run / SUMMARY)
    scored_as = document.get("failed_rows_scored_as") if isinstance(document, dict) else None
    if scored_as != UNEDITED:
        raise RunFolderError(
            f"{run}: its failed rows carry no scores (scored before failures counted as the "
            "unedited source), so its scores cannot be paired over the whole dataset; score it "
            f"again with: python -m eval score {run}"
        )


# --- summary.json ---------------------------------------------------------------------------


def summary_path(folder: Path) -> Path:
    return folder / SUMMARY


def has_summary(folder: Path) -> bool:
    """Whether the folder holds a scored run's summary."""
    return (folder / SUMMARY).is_file()


def write_summary(folder: Path, summary: dict[str, Any]) -> None:
    """Indented, strict JSON: a NaN or infinite score (no value to average) is written as null,
    since `NaN` is not JSON and a browser or `jq` refuses the whole file; any other value JSON
    cannot hold (a numpy integer, say) is a TypeError."""
    text = json.dumps(_finite(summary), indent=2, allow_nan=False)
    (folder / SUMMARY).write_text(text + "\n")


def read_summary(run: Path) -> dict[str, Any]:
    """The run's summary, checked to be an object with a `backends` object; every problem is
    a RunFolderError naming the file."""
    path = run / SUMMARY
    if not run.is_dir():
        raise RunFolderError(f"cannot read {path}: run folder not found")
    if not path.is_file():
        raise RunFolderError(f"no {SUMMARY} in run folder {run}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise RunFolderError(f"cannot read {path}: {error.strerror or error}") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunFolderError(f"{path}: the run summary is not valid JSON ({error})") from error
    if not isinstance(document, dict):
        raise RunFolderError(f"{path}: the run summary is not a JSON object")
    if not isinstance(document.get("backends"), dict):
        raise RunFolderError(f"{path}: 'backends' must map each backend name to an object")
    return document


def scored_folders(folders: Iterable[Path]) -> list[Path]:
    """Those of `folders` that hold a summary, newest summary first (the name breaks ties, so
    the order is stable)."""
    found = sorted((folder for folder in folders if has_summary(folder)), key=lambda f: f.name)
    found.sort(key=lambda folder: summary_path(folder).stat().st_mtime, reverse=True)
    return found


# --- helpers --------------------------------------------------------------------------------


def _require_folder(run: Path) -> None:
    if not run.is_dir():
        raise RunFolderError(f"run folder not found: {run}")


def _json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
