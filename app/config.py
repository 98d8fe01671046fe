"""The reviewer app's configuration: columns, where votes and eval runs live, who may log in.

Read from environment variables when the app starts (documented in `.env.example`); tests and the
Modal deployment build `AppConfig` directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from suggestions.backends import BACKEND_NAMES
from suggestions.config import Settings
from suggestions.errors import ConfigurationError
from suggestions.keys import read_api_key

MAX_COLUMNS = 4
DEFAULT_COLUMNS = ("custom", "baseline", "mock")
# Gradio runs one event of each kind at a time unless told otherwise; reviewers must not queue
# behind each other, and the handlers only wait on the network, so many may run at once.
DEFAULT_CONCURRENCY = 64
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EXAMPLES = REPO_ROOT / "datasets" / "eval" / "writing-eval-v1.jsonl"


@dataclass(frozen=True)
class AppConfig:
    """Everything the app needs besides the backends themselves."""

    settings: Settings = field(default_factory=Settings)
    columns: tuple[str, ...] = DEFAULT_COLUMNS
    labels: Mapping[str, str] = field(default_factory=dict)
    votes_db: Path | None = None
    eval_runs_dir: Path = Path("runs")
    examples_path: Path | None = DEFAULT_EXAMPLES
    auth: tuple[str, str] | None = None
    api_key: str | None = None
    proxy_auth: bool = False
    """Modal proxy auth stands in front of the whole app (set by the deployment)."""
    concurrency: int = DEFAULT_CONCURRENCY

    def __post_init__(self) -> None:
        if not 1 <= len(self.columns) <= MAX_COLUMNS:
            raise ConfigurationError(
                f"the app shows 1 to {MAX_COLUMNS} columns; {len(self.columns)} were configured"
            )
        if len(set(self.columns)) != len(self.columns):
            raise ConfigurationError(f"a column is listed twice in {', '.join(self.columns)}")
        if self.concurrency < 1:
            raise ConfigurationError("APP_CONCURRENCY must be at least 1")
        if self.settings.is_production and not self.api_key:
            raise ConfigurationError(
                "APP_API_KEY is not set. In production the REST API must not be open: set it to "
                "the key the editor sends as 'Authorization: Bearer <key>'."
            )
        if self.settings.is_production and not (self.auth or self.proxy_auth):
            raise ConfigurationError(
                "In production the page needs a login: without one, Gradio's own API "
                "(/gradio_api/...) gives suggestions to anyone, with no APP_API_KEY. Set "
                "APP_USERNAME and APP_PASSWORD (on Modal: the WRITING_UI_LOGIN_SECRET secret), "
                "or put Modal proxy auth in front of the app (WRITING_PROXY_AUTH=1 on Modal, "
                "which sets APP_PROXY_AUTH=1)."
            )

    @property
    def votes_path(self) -> Path:
        return self.votes_db or self.settings.state_dir / "votes.db"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> AppConfig:
        """The configuration from `APP_*` variables plus the `suggestions` settings."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {"settings": Settings()}
        if columns := env.get("APP_COLUMNS", "").strip():
            values["columns"] = parse_columns(columns, "APP_COLUMNS")
        if path := env.get("APP_VOTES_DB"):
            values["votes_db"] = Path(path)
        if path := env.get("APP_EVAL_RUNS"):
            values["eval_runs_dir"] = Path(path)
        user, password = env.get("APP_USERNAME", ""), env.get("APP_PASSWORD", "")
        if bool(user) != bool(password):
            raise ConfigurationError("set both APP_USERNAME and APP_PASSWORD to require a login")
        if user:
            values["auth"] = (user, password)
        if key := read_api_key(env.get("APP_API_KEY"), "APP_API_KEY"):
            values["api_key"] = key
        proxy = env.get("APP_PROXY_AUTH", "").strip().lower()
        if proxy not in ("", "0", "1", "true", "false"):
            raise ConfigurationError("APP_PROXY_AUTH must be 1 or 0")
        values["proxy_auth"] = proxy in ("1", "true")
        if concurrency := env.get("APP_CONCURRENCY"):
            try:
                values["concurrency"] = int(concurrency)
            except ValueError:
                raise ConfigurationError("APP_CONCURRENCY must be a whole number") from None
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def parse_columns(text: str, source: str) -> tuple[str, ...]:
    """A comma-separated list of configured backends; `source` names where it came from."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in BACKEND_NAMES]
    if unknown:
        raise ConfigurationError(
            f"{source} names unknown backends {', '.join(unknown)}: "
            f"choose from {', '.join(BACKEND_NAMES)}"
        )
    return names
