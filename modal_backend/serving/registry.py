"""Versioned model runs on the weights volume, and which one is served.

Layout (the same on a Modal Volume and in a local folder):

    runs/<run_id>/manifest.json   what was trained, on what, and how it scored
    runs/<run_id>/adapter/        the LoRA adapter (PEFT format)
    runs/<run_id>/merged/         merged 16-bit weights, loadable without PEFT
    current.json                  {"run_id": ...}: the run the server loads
    promotions.jsonl              every promote and rollback, oldest first

The history is a log, not a second pointer: replaying it (promote pushes, rollback pops) gives
the stack that rollback walks back through, and `current.json` is always its top. The log line is
written before the pointer moves, so an interrupted write can leave the log one step ahead of
the pointer, never the pointer ahead of the log; promoting the run the log already has on top
only moves the pointer, so retrying the interrupted command repairs it without a second entry.
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

HISTORY_KEYS = frozenset({"action", "run_id", "previous", "at", "reason", "forced"})
"""What every history entry has; `details` passed to `promote` may not replace them."""

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
        """A loadable merged folder: its config and every weight file. A folder whose save was
        interrupted has config.json (written first) but not all of its shards."""
        return (self.merged_path / "config.json").is_file() and _weights_complete(
            self.merged_path, "model"
        )

    def has_adapter(self) -> bool:
        """A loadable adapter: its config and its weights."""
        return (self.adapter_path / "adapter_config.json").is_file() and _weights_complete(
            self.adapter_path, "adapter_model"
        )

    def has_weights(self) -> bool:
        """What the model service would load is all there (see `weights_loader`)."""
        return self.has_merged() or self.has_adapter()


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

    def promote(
        self,
        run_id: str,
        *,
        reason: str = "",
        forced: bool = False,
        details: dict[str, Any] | None = None,
    ) -> Run:
        """Point the server at `run_id`; the promotion gate is checked by the caller.

        `details` (e.g. the gate that was applied) are stored in the history entry beside the
        standard keys. Promoting the run already on top of the history logs nothing: a second
        entry would make the next rollback "return" to the same run.
        """
        run = self.run(run_id)
        if not run.has_weights():
            raise RegistryError(
                f"run {run_id!r} has neither complete merged weights nor a complete adapter"
            )
        clash = HISTORY_KEYS & set(details or {})
        if clash:
            raise RegistryError(f"promotion details may not set {', '.join(sorted(clash))}")
        stack = self._stack()
        if stack and stack[-1] == run_id:
            self._write_pointer(run_id)  # repairs a pointer left behind by an interrupted write
            return run
        self._record("promote", run_id, reason=reason, forced=forced, details=details)
        return run

    def rollback(self, *, reason: str = "") -> Run:
        """Serve the run that was current before the latest promotion still in effect, provided
        its weights are still there (runs can be deleted from the volume)."""
        stack = self._stack()
        if len(stack) < 2:
            raise RegistryError("nothing to roll back to: fewer than two promotions in the history")
        previous = stack[-2]
        run = self.run(previous)
        if not run.has_weights():
            raise RegistryError(
                f"cannot roll back to {previous!r}: it no longer has complete weights "
                f"({run.merged_path} or {run.adapter_path}); promote another run instead"
            )
        self._record("rollback", previous, reason=reason, forced=False)
        return run

    def _stack(self) -> list[str]:
        stack: list[str] = []
        for entry in self.history():
            if entry.get("action") == "rollback" and stack:
                stack.pop()
            elif entry.get("action") == "promote":
                stack.append(str(entry["run_id"]))
        return stack

    def _record(
        self,
        action: str,
        run_id: str,
        *,
        reason: str,
        forced: bool,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Log the move, then make it: see the module docstring for why in that order."""
        at = self._clock().isoformat()
        entry: dict[str, Any] = {
            **(details or {}),
            "action": action,
            "run_id": run_id,
            "previous": self.current_id(),
            "at": at,
            "reason": reason,
            "forced": forced,
        }
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / HISTORY_FILE).open("a") as log:
            log.write(json.dumps(entry) + "\n")
            log.flush()
            os.fsync(log.fileno())
        self._write_pointer(run_id, since=at)

    def _write_pointer(self, run_id: str, *, since: str | None = None) -> None:
        """Point `current.json` at `run_id`; a repair of a pointer that is already right is a
        no-op, so its `since` keeps saying when the run really became current."""
        if since is None and self.current_id() == run_id:
            return
        at = since or self._clock().isoformat()
        self.root.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(self.root / CURRENT_FILE, {"run_id": run_id, "since": at})


def _weights_complete(folder: Path, stem: str) -> bool:
    """`<stem>.safetensors`, or a `<stem>.safetensors.index.json` whose shards are all there
    (or the `.bin` forms older savers write)."""
    for suffix in (".safetensors", ".bin"):
        if (folder / f"{stem}{suffix}").is_file():
            return True
        index = folder / f"{stem}{suffix}.index.json"
        if index.is_file():
            try:
                shards = set(json.loads(index.read_text())["weight_map"].values())
            except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
                return False
            return bool(shards) and all((folder / str(shard)).is_file() for shard in shards)
    return False


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
