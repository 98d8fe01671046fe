"""The reviewer app's configuration: columns, where votes and eval runs live, who may log in.

`AppSettings` reads the `APP_*` variables (documented in `.env.example`) when the app starts;
`AppConfig` is what the app runs with, built from them (`from_env`) or directly by tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from suggestions.backends import BACKEND_NAMES
from suggestions.config import Settings
from suggestions.contract import describe_validation_error
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
    serves_page: bool = True
    """False for the suggestion API alone (`app.api`): no page, so no page login to ask for."""

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
        if self.settings.is_production and self.serves_page and not (self.auth or self.proxy_auth):
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
        """The configuration from `APP_*` variables (`environ`, when given, wins over the
        process environment) plus the `suggestions` settings."""
        given = {key: value for key, value in (environ or {}).items() if key.startswith("APP_")}
        try:
            env = AppSettings.model_validate(given)
        except ValidationError as exc:
            raise ConfigurationError(describe_validation_error(exc)) from None
        values: dict[str, object] = {"settings": Settings(), "proxy_auth": env.proxy_auth}
        if env.columns and env.columns.strip():
            values["columns"] = parse_columns(env.columns, "APP_COLUMNS")
        if env.votes_db:
            values["votes_db"] = env.votes_db
        if env.eval_runs:
            values["eval_runs_dir"] = env.eval_runs
        user = env.username.get_secret_value() if env.username else ""
        password = env.password.get_secret_value() if env.password else ""
        if bool(user) != bool(password):
            raise ConfigurationError("set both APP_USERNAME and APP_PASSWORD to require a login")
        if user:
            values["auth"] = (user, password)
        api_key = env.api_key.get_secret_value() if env.api_key else None
        if key := read_api_key(api_key, "APP_API_KEY"):
            values["api_key"] = key
        if env.concurrency is not None:
            values["concurrency"] = env.concurrency
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


class AppSettings(BaseSettings):
    """The `APP_*` variables, read the way every setting of this project is read."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, env_ignore_empty=True)

    columns: str | None = Field(default=None, validation_alias="APP_COLUMNS")
    votes_db: Path | None = Field(default=None, validation_alias="APP_VOTES_DB")
    eval_runs: Path | None = Field(default=None, validation_alias="APP_EVAL_RUNS")
    username: SecretStr | None = Field(default=None, validation_alias="APP_USERNAME")
    password: SecretStr | None = Field(default=None, validation_alias="APP_PASSWORD")
    api_key: SecretStr | None = Field(default=None, validation_alias="APP_API_KEY")
    proxy_auth: bool = Field(default=False, validation_alias="APP_PROXY_AUTH")
    concurrency: int | None = Field(default=None, ge=1, validation_alias="APP_CONCURRENCY")


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
