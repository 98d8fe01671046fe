"""Settings, read from environment variables (documented in `.env.example`).

Nothing reads the environment at import time: callers build `Settings()` when they start, and
tests pass values directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .contract import DEFAULT_MAX_TEXT_CHARS

AppEnv = Literal["production", "development", "test"]
HOME_ENV_VAR = "SUGGESTIONS_HOME"


@dataclass(frozen=True)
class ModelSlot:
    """Where one model slot's server, key and model id are set: `Settings` fields, each read
    from the variable `Settings.variable` names."""

    url: str
    api_key: str
    model: str


MODEL_SLOTS: Mapping[str, ModelSlot] = {
    "custom": ModelSlot("modal_llama_url", "modal_api_key", "modal_llama_model"),
    "baseline": ModelSlot("baseline_url", "baseline_api_key", "baseline_model"),
    "standin": ModelSlot("standin_url", "standin_api_key", "standin_model"),
}
"""The slots that call a model server (the mock calls none): the one table the backends, the
eval runner and the launchers that point slots at servers all read."""


def default_home() -> Path:
    """Where local state (the usage database) lives unless SUGGESTIONS_HOME says otherwise."""
    return Path(platformdirs.user_data_dir("writing-suggestions", appauthor=False))


class Settings(BaseSettings):
    """Everything configurable, with the environment variable each comes from."""

    # populate_by_name lets code and tests pass `Settings(modal_llama_url=...)`; field names are
    # chosen so that none of them is also a common environment variable (HOME, PATH...).
    # Empty variables count as unset, so a copied `.env.example` with blanks just works.
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, env_ignore_empty=True)

    app_env: AppEnv = Field(default="development", validation_alias="APP_ENV")

    modal_llama_url: str | None = Field(default=None, validation_alias="MODAL_LLAMA_URL")
    modal_api_key: SecretStr | None = Field(default=None, validation_alias="MODAL_API_KEY")
    modal_llama_model: str = Field(default="writing-llama", validation_alias="MODAL_LLAMA_MODEL")

    # A Modal proxy auth token, sent only to Modal endpoints (`*.modal.run`) that require it.
    modal_proxy_key: SecretStr | None = Field(default=None, validation_alias="MODAL_PROXY_KEY")
    modal_proxy_secret: SecretStr | None = Field(
        default=None, validation_alias="MODAL_PROXY_SECRET"
    )

    baseline_url: str | None = Field(default=None, validation_alias="BASELINE_URL")
    baseline_api_key: SecretStr | None = Field(default=None, validation_alias="BASELINE_API_KEY")
    baseline_model: str = Field(
        default="meta-llama/Meta-Llama-3.1-8B-Instruct",
        validation_alias="BASELINE_MODEL",
    )

    # Another model shown for scale beside ours (locally: the Qwen2.5-Coder-1.5B stand-in, with
    # our task prompt).
    standin_url: str | None = Field(default=None, validation_alias="STANDIN_URL")
    standin_api_key: SecretStr | None = Field(default=None, validation_alias="STANDIN_API_KEY")
    standin_model: str = Field(
        default="qwen2.5-coder-1.5b-instruct", validation_alias="STANDIN_MODEL"
    )

    connect_timeout_s: float = Field(
        default=5.0, gt=0, validation_alias="SUGGESTIONS_CONNECT_TIMEOUT_S"
    )
    read_timeout_s: float = Field(default=30.0, gt=0, validation_alias="SUGGESTIONS_READ_TIMEOUT_S")
    total_timeout_s: float = Field(
        default=120.0, gt=0, validation_alias="SUGGESTIONS_TOTAL_TIMEOUT_S"
    )
    max_retries: int = Field(default=2, ge=0, le=10, validation_alias="SUGGESTIONS_MAX_RETRIES")

    cache_ttl_s: float = Field(default=300.0, ge=0, validation_alias="SUGGESTIONS_CACHE_TTL_S")
    cache_max_entries: int = Field(
        default=1024, ge=1, validation_alias="SUGGESTIONS_CACHE_MAX_ENTRIES"
    )
    max_text_chars: int = Field(
        default=DEFAULT_MAX_TEXT_CHARS,
        ge=1,
        validation_alias="SUGGESTIONS_MAX_TEXT_CHARS",
    )

    state_dir: Path = Field(default_factory=default_home, validation_alias=HOME_ENV_VAR)
    usage_db: Path | None = Field(default=None, validation_alias="SUGGESTIONS_USAGE_DB")

    def with_variables(self, variables: Mapping[str, str]) -> Settings:
        """These settings with some environment variables set anew (checked like the rest):
        how a launcher points the slots at a server it started."""
        fields = {
            str(info.validation_alias): name
            for name, info in type(self).model_fields.items()
            if info.validation_alias
        }
        unknown = sorted(set(variables) - set(fields))
        if unknown:
            raise ValueError(f"not a suggestions setting: {', '.join(unknown)}")
        values = self.model_dump() | {fields[key]: value for key, value in variables.items()}
        return type(self).model_validate(values)

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable a field is read from (`baseline_url` -> `BASELINE_URL`)."""
        return str(cls.model_fields[field].validation_alias)

    @property
    def usage_db_path(self) -> Path:
        return self.usage_db or self.state_dir / "usage.db"

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"
