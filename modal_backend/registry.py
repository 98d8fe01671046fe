"""Versioned model runs on the weights volume, and which one is served.

Layout (the same on a Modal Volume and in a local folder):

    runs/<run_id>/manifest.json   what was trained, on what, and how it scored
    runs/<run_id>/adapter/        the LoRA adapter (PEFT format)
    runs/<run_id>/merged/         merged 16-bit weights, loadable without PEFT
    current.json                  {"run_id": ...}: the run the server loads
    promotions.jsonl              every promote and rollback, oldest first

The history is a log, not a second pointer: replaying it (promote pushes, rollback pops) gives
the stack that rollback walks back through, and `current.json` is always its top.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RUNS_DIR = "runs"
CURRENT_FILE = "current.json"
HISTORY_FILE = "promotions.jsonl"
MANIFEST_FILE = "manifest.json"
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

Clock = Callable[[], datetime]


class RegistryError(Exception):
    """A run or pointer is missing or malformed; the message says which file to look at."""


def check_run_id(run_id: str) -> str:
    """Run ids become folder names on a shared volume, so only plain names are accepted."""
    if not _RUN_ID.match(run_id) or ".." in run_id:
        raise RegistryError(
            f"run id {run_id!r} is not valid: use letters, digits, '.', '_' and '-' (max 128)"
        )
    return run_id


@dataclass(frozen=True)
class Run:
    """One trained run as found on the volume."""

    run_id: str
    path: Path
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        """The version string the server reports: the manifest's, else the run id."""
        return str(self.manifest.get("version") or self.run_id)

    @property
    def base_model(self) -> str | None:
        value = self.manifest.get("base_model")
        return str(value) if value else None

    @property
    def merged_path(self) -> Path:
        return self.path / MERGED_DIR

    @property
    def adapter_path(self) -> Path:
        return self.path / ADAPTER_DIR

    def has_merged(self) -> bool:
        return (self.merged_path / "config.json").is_file()

    def has_adapter(self) -> bool:
        return (self.adapter_path / "adapter_config.json").is_file()


class Registry:
    """Reads and moves the served-run pointer in one weights folder."""

    def __init__(self, root: Path | str, *, clock: Clock | None = None) -> None:
        self.root = Path(root)
        self._clock = clock or (lambda: datetime.now(UTC))

    def run_dir(self, run_id: str) -> Path:
        return self.root / RUNS_DIR / check_run_id(run_id)

    def run_ids(self) -> list[str]:
        """Runs that have a manifest, sorted by name (run ids start with a timestamp)."""
        runs = self.root / RUNS_DIR
        if not runs.is_dir():
            return []
        return sorted(p.parent.name for p in runs.glob(f"*/{MANIFEST_FILE}"))

    def run(self, run_id: str) -> Run:
        path = self.run_dir(run_id)
        manifest_path = path / MANIFEST_FILE
        if not manifest_path.is_file():
            raise RegistryError(f"run {run_id!r} has no {manifest_path}")
        return Run(run_id=run_id, path=path, manifest=_read_json(manifest_path))

    def write_manifest(self, run_id: str, manifest: dict[str, Any]) -> Path:
        path = self.run_dir(run_id) / MANIFEST_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(path, manifest)
        return path

    def current_id(self) -> str | None:
        pointer = self.root / CURRENT_FILE
        if not pointer.is_file():
            return None
        data = _read_json(pointer)
        run_id = data.get("run_id")
        if not isinstance(run_id, str):
            raise RegistryError(f"{pointer} has no 'run_id' string")
        return check_run_id(run_id)

    def current(self) -> Run | None:
        """The served run, or None before the first promotion."""
        run_id = self.current_id()
        return self.run(run_id) if run_id else None

    def history(self) -> list[dict[str, Any]]:
        path = self.root / HISTORY_FILE
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def promote(self, run_id: str, *, reason: str = "", forced: bool = False) -> Run:
        """Point the server at `run_id`; the promotion gate is checked by the caller."""
        run = self.run(run_id)
        if not (run.has_merged() or run.has_adapter()):
            raise RegistryError(f"run {run_id!r} has neither merged weights nor an adapter")
        self._move_pointer("promote", run_id, reason=reason, forced=forced)
        return run

    def rollback(self, *, reason: str = "") -> Run:
        """Serve the run that was current before the latest promotion still in effect."""
        stack = self._stack()
        if len(stack) < 2:
            raise RegistryError("nothing to roll back to: fewer than two promotions in the history")
        previous = stack[-2]
        run = self.run(previous)
        self._move_pointer("rollback", previous, reason=reason, forced=False)
        return run

    def _stack(self) -> list[str]:
        stack: list[str] = []
        for entry in self.history():
            if entry.get("action") == "rollback" and stack:
                stack.pop()
            elif entry.get("action") == "promote":
                stack.append(str(entry["run_id"]))
        return stack

    def _move_pointer(self, action: str, run_id: str, *, reason: str, forced: bool) -> None:
        at = self._clock().isoformat()
        previous = self.current_id()
        self.root.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(self.root / CURRENT_FILE, {"run_id": run_id, "since": at})
        entry = {
            "action": action,
            "run_id": run_id,
            "previous": previous,
            "at": at,
            "reason": reason,
            "forced": forced,
        }
        with (self.root / HISTORY_FILE).open("a") as log:
            log.write(json.dumps(entry) + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RegistryError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise RegistryError(f"{path} does not hold a JSON object")
    return data


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """A reader on another container never sees half a pointer."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
