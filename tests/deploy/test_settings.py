"""The deployment's settings: the documented variables and defaults, one reading whether they
come from the environment or a mapping, and the round trip to the containers."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from modal_backend.deploy.settings import DeployConfigError, DeploySettings

DEPLOY_PAGE = Path(__file__).resolve().parents[2] / "docs" / "operators" / "deploy.md"


def documented_defaults() -> dict[str, str]:
    """The Settings table of docs/operators/deploy.md as variables: a row names one or more
    variables and as many defaults, each in backticks or `none` (empty)."""
    defaults: dict[str, str] = {}
    for line in DEPLOY_PAGE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `WRITING_"):
            continue
        names_cell, values_cell = (cell.strip() for cell in line.strip("|").split("|")[:2])
        names = re.findall(r"`(WRITING_\w+)`", names_cell)
        values = [value.strip().strip("`") for value in values_cell.split(", ")]
        values = ["" if value == "none" else value for value in values]
        assert len(names) == len(values), line
        defaults.update(zip(names, values, strict=True))
    return defaults


CHANGED = {
    "WRITING_ENGINE": "TRANSFORMERS",
    "WRITING_GPU": "L40S",
    "WRITING_MAX_CONTAINERS": "5",
    "WRITING_MIN_CONTAINERS": "4",
    "WRITING_SCALEDOWN_S": " 600 ",
    "WRITING_PROXY_AUTH": "yes",
    "WRITING_UI_LOGIN_SECRET": "",
    "WRITING_UNSLOTH": "off",
    "WRITING_BASELINE_WEIGHTS": "",
    "WRITING_WARM_TZ": "Europe/London",
    "WRITING_WEIGHTS_VOLUME": "weights-staging",
}


def test_every_variable_is_documented_with_its_default() -> None:
    assert DeploySettings.from_env({}).as_env() == documented_defaults()


def test_the_environment_and_a_mapping_read_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("WRITING_")]:
        monkeypatch.delenv(name)
    for name, value in CHANGED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WRITING_WEIGHTS_DIR", "/tmp/volume")  # a local-run variable, not a setting
    from_environment = DeploySettings.from_env()
    assert from_environment == DeploySettings.from_env(CHANGED) == DeploySettings()
    assert from_environment.scaledown_s == 600 and from_environment.proxy_auth is True
    assert from_environment.unsloth is False and from_environment.baseline_weights == ""
    assert from_environment.engine == "transformers"
    assert from_environment.speculative == "off"  # the fallback has none
    # What the containers are handed reads back as what was deployed.
    assert DeploySettings.from_env(from_environment.as_env()) == from_environment


def test_every_bad_value_is_named_at_once() -> None:
    with pytest.raises(DeployConfigError) as refused:
        DeploySettings.from_env({"WRITING_GPU": "T4", "WRITING_STARTUP_TIMEOUT_S": "5"})
    lines = str(refused.value).splitlines()
    assert lines == [
        "WRITING_GPU='T4' is not a GPU that holds the 8B model in bf16: choose one of L4, "
        "A10G, L40S, A100, A100-40GB, A100-80GB, H100, H200, B200",
        "WRITING_STARTUP_TIMEOUT_S must be between 10 and 86400 seconds, not 5",
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WRITING_MAX_CONTAINERS": "0"}, "WRITING_MAX_CONTAINERS must be at least 1"),
        ({"WRITING_BASELINE_MODEL_ID": " "}, "WRITING_BASELINE_MODEL_ID must not be empty"),
        ({"WRITING_HF_SECRET": "hf token"}, "WRITING_HF_SECRET='hf token' is not a Modal name"),
        (
            {"WRITING_PROXY_AUTH": "1", "WRITING_PROXY_AUTH_SECRET": ""},
            "WRITING_PROXY_AUTH=1 needs WRITING_PROXY_AUTH_SECRET",
        ),
    ],
)
def test_more_refusals_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(DeployConfigError, match=message):
        DeploySettings.from_env(env)


def test_proxy_auth_stands_in_for_the_login() -> None:
    settings = DeploySettings.from_env({"WRITING_UI_LOGIN_SECRET": "", "WRITING_PROXY_AUTH": "1"})
    assert settings.ui_login_secret == "" and settings.proxy_auth
