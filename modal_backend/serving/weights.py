"""Which weights a container serves, found on the weights volume, and loading them into an engine.

The served model is the run that `current.json` names: its merged weights if it has them, else
its base model plus its LoRA adapter. The baseline is the stock base model with no adapter. A
base model is named in the run's manifest (`base_model`) as a folder (absolute, or relative to
the volume root) or as a Hugging Face repository id; repository ids go through `fetch`, which on
Modal downloads once into a cached volume and in tests is never reached.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .engines.base import Engine
from .registry import Registry, RegistryError, Run

logger = logging.getLogger(__name__)

SERVED_MODEL_ID = "writing-llama"
"""The id our client asks for by default (`MODAL_LLAMA_MODEL`)."""

FetchBase = Callable[[str], Path]
"""A Hugging Face repository id in, a local model folder out."""


class WeightsUnavailable(RuntimeError):
    """Nothing servable on the volume, or a base model that cannot be found; says what to do."""


@dataclass(frozen=True)
class WeightsPlan:
    """What one engine loads: a model folder, optionally an adapter on it, and its labels."""

    model_path: Path
    adapter_path: Path | None
    version: str
    run_id: str | None = None


def served_plan(root: Path, *, fetch: FetchBase | None = None) -> WeightsPlan:
    """The promoted run: merged weights if present, else base plus adapter."""
    run = _current_run(root)
    if run.has_merged():
        return WeightsPlan(run.merged_path, None, run.version, run.run_id)
    if run.has_adapter():
        base = run.base_model or _adapter_base(run)
        if not base:
            raise WeightsUnavailable(
                f"run {run.run_id!r} has an adapter but its manifest names no base_model"
            )
        model_path = locate_model(base, root, fetch=fetch)
        return WeightsPlan(model_path, run.adapter_path, run.version, run.run_id)
    raise WeightsUnavailable(f"run {run.run_id!r} has neither merged weights nor an adapter")


def baseline_plan(root: Path, source: str | None, *, fetch: FetchBase | None = None) -> WeightsPlan:
    """The stock base model: `source` if given, else the base the promoted run was tuned from,
    so the comparison is our tuning against exactly what it started from."""
    base = source
    if not base:
        run = _current_run(root)
        base = run.base_model or _adapter_base(run)
        if not base:
            raise WeightsUnavailable(
                f"run {run.run_id!r} names no base_model: set the baseline weights explicitly"
            )
    return WeightsPlan(locate_model(base, root, fetch=fetch), None, version=f"stock:{base}")


def locate_model(name: str, root: Path, *, fetch: FetchBase | None = None) -> Path:
    """A model folder for a manifest's `base_model`: a folder on this machine or on the volume,
    or a repository id handed to `fetch`."""
    candidate = Path(name) if Path(name).is_absolute() else root / name
    if (candidate / "config.json").is_file():
        return candidate
    if _looks_like_repo_id(name):
        if fetch is None:
            raise WeightsUnavailable(
                f"base model {name!r} is a repository id and no download is configured here; "
                "put the model folder on the weights volume and name that folder instead"
            )
        return fetch(name)
    raise WeightsUnavailable(f"base model {name!r} is not a model folder (no config.json)")


def load_engine(
    plan: WeightsPlan, *, model_id: str, max_concurrency: int, device: str | None = None
) -> Engine:
    from .engines.transformers_engine import TransformersEngine

    logger.info(
        "loading %s version %s from %s%s",
        model_id,
        plan.version,
        plan.model_path,
        f" with adapter {plan.adapter_path}" if plan.adapter_path else "",
    )
    return TransformersEngine.load(
        plan.model_path,
        adapter_path=plan.adapter_path,
        model_id=model_id,
        version=plan.version,
        device=device,
        max_concurrency=max_concurrency,
    )


def import_inference_libraries() -> None:
    """Import torch, transformers and peft without touching a GPU: the slow part of a cold start
    that a CPU memory snapshot can capture."""
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from .engines import transformers_engine  # noqa: F401


def hub_fetcher(token: str | None = None, cache_dir: Path | None = None) -> FetchBase:
    """Download a repository's weights into the Hugging Face cache (`HF_HOME`); later calls find
    them there. Only the safetensors, configs and tokenizer files are fetched."""

    def fetch(repo_id: str) -> Path:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        patterns = ["original/*", "*.pth", "*.pt", "*.bin", "*.gguf"]
        try:  # a warm cache needs no Hub: a cold start must not fail on a Hub outage
            cached = snapshot_download(
                repo_id,
                token=token,
                ignore_patterns=patterns,
                cache_dir=cache_dir,
                local_files_only=True,
            )
            return Path(cached)
        except LocalEntryNotFoundError:
            pass
        logger.info("fetching base model %s into the Hugging Face cache", repo_id)
        return Path(
            snapshot_download(repo_id, token=token, ignore_patterns=patterns, cache_dir=cache_dir)
        )

    return fetch


def _current_run(root: Path) -> Run:
    try:
        run = Registry(root).current()
    except RegistryError as exc:
        raise WeightsUnavailable(str(exc)) from exc
    if run is None:
        raise WeightsUnavailable(
            f"no run is promoted in {root} (it has no current.json): train a run and promote it"
        )
    return run


def _adapter_base(run: Run) -> str | None:
    """The base an adapter was trained on, as PEFT recorded it."""
    config = run.adapter_path / "adapter_config.json"
    if not config.is_file():
        return None
    value = json.loads(config.read_text()).get("base_model_name_or_path")
    return str(value) if value else None


def _looks_like_repo_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))
