"""`modal deploy modal_backend/deploy/serving_app.py`: the model service, its baseline and the
reviewer app.

- `WritingModel`: the fine-tuned model on a GPU, kept warm, serving the model service API. At
  container start it loads the run that `current.json` on the weights volume names.
- `Baseline`: the stock base model on the same GPU type, under its own model id, so reviewers
  compare like with like and no third-party proxy is involved.
- `reviewer_app`: the Gradio reviewer app on CPU, one container (Gradio sessions are sticky),
  calling the two model endpoints above.
- `apply_warm_schedule`: every ten minutes, keeps containers warm inside the warm hours only.

Settings are `WRITING_*` environment variables read when `modal deploy` evaluates this file (see
`DeployConfig`); they are passed on to the containers, which evaluate this file again and must
see the same values. Importing it needs no Modal account and reaches no network.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import modal

from modal_backend.deploy.warm_hours import ScheduleError, WarmSchedule, apply_warm_hours
from modal_backend.serving.engines.base import Engine
from modal_backend.serving.weights import (
    SERVED_MODEL_ID,
    FetchBase,
    WeightsPlan,
    baseline_plan,
    hub_fetcher,
    import_inference_libraries,
    load_engine,
    served_plan,
)

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = PROJECT_ROOT / "pyproject.toml"

WEIGHTS_MOUNT = "/weights"
HF_CACHE_MOUNT = "/hf-cache"
UI_STATE_MOUNT = "/reviewer-state"

ENGINE_SLOTS = 1
"""Generations one container runs at once: the transformers engine's one-at-a-time default."""
CONTAINER_MAX_INPUTS = ENGINE_SLOTS + 3
"""Requests Modal may route to one model container. Modal's autoscaler targets ENGINE_SLOTS, so
a busy container makes it start another; the headroom lets `/health`, `/v1/models` and a request
or two that waits (up to the server's 10 s queue) reach a container that is busy generating,
instead of each of them waking a cold GPU container of its own."""

UI_MAX_INPUTS = 100
UI_SCALEDOWN_S = 1200
UI_TIMEOUT_S = 600

WARM_CRON = "*/10 * * * *"
WARM_LEAD = timedelta(minutes=15)
"""Warm-up starts this early: one schedule period plus time for a GPU container to boot."""

GPU_MEMORY_GB = {
    "L4": 24,
    "A10G": 24,
    "L40S": 48,
    "A100": 40,
    "A100-40GB": 40,
    "A100-80GB": 80,
    "H100": 80,
    "H200": 141,
    "B200": 180,
}
"""GPUs that hold Llama 3.1 8B in bf16 (16 GB of weights plus the KV cache). T4 (16 GB, no
bf16) does not."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class DeployConfigError(ValueError):
    """A `WRITING_*` setting that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class DeployConfig:
    """Everything `modal deploy` needs to know, with the defaults a first deployment wants."""

    app_name: str = "writing-suggestions"
    gpu: str = "A10G"
    min_containers: int = 1
    baseline_min_containers: int = 1
    max_containers: int = 3
    scaledown_s: int = 300
    request_timeout_s: int = 300
    startup_timeout_s: int = 900
    weights_volume: str = "writing-llama-weights"
    hf_cache_volume: str = "writing-llama-hf-cache"
    ui_state_volume: str = "writing-reviewer-state"
    api_key_secret: str = "writing-llama-api-key"
    hf_secret: str = ""
    ui_login_secret: str = "writing-reviewer-login"
    proxy_auth: bool = False
    proxy_auth_secret: str = "writing-proxy-auth"
    """With proxy auth: the reviewer app's token for the model endpoints (MODAL_PROXY_KEY and
    MODAL_PROXY_SECRET)."""
    unsloth: bool = True
    baseline_model_id: str = "meta-llama/Meta-Llama-3.1-8B-Instruct"
    baseline_weights: str = "unsloth/Meta-Llama-3.1-8B-Instruct"
    """The stock 16-bit instruct model (an ungated copy of Meta's weights); a folder on the
    volume works too, and empty means the promoted run's own base model."""
    warm_days: str = "mon-fri"
    warm_hours: str = "08:00-20:00"
    warm_tz: str = "UTC"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DeployConfig:
        """Read `WRITING_<FIELD>` variables (e.g. `WRITING_GPU`); unset ones keep the default."""
        values: dict[str, Any] = {}
        for name, default in asdict(cls()).items():
            raw = env.get(_env_name(name))
            if raw is None:
                continue
            if isinstance(default, bool):
                values[name] = _flag(name, raw)
            elif isinstance(default, int):
                values[name] = _whole_number(name, raw)
            else:
                values[name] = raw.strip()
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if self.gpu not in GPU_MEMORY_GB:
            raise DeployConfigError(
                f"WRITING_GPU={self.gpu!r} is not a GPU that holds the 8B model in bf16: "
                f"choose one of {', '.join(GPU_MEMORY_GB)}"
            )
        for name in ("min_containers", "baseline_min_containers"):
            if not 0 <= getattr(self, name) <= self.max_containers:
                raise DeployConfigError(
                    f"{_env_name(name)} must be between 0 and WRITING_MAX_CONTAINERS "
                    f"({self.max_containers})"
                )
        if self.max_containers < 1:
            raise DeployConfigError("WRITING_MAX_CONTAINERS must be at least 1")
        if not 2 <= self.scaledown_s <= 3600:
            raise DeployConfigError("WRITING_SCALEDOWN_S must be between 2 and 3600 (seconds)")
        for name in ("request_timeout_s", "startup_timeout_s"):
            if not 10 <= getattr(self, name) <= 86_400:
                raise DeployConfigError(f"{_env_name(name)} must be between 10 and 86400")
        required: tuple[str, ...] = (
            "app_name",
            "weights_volume",
            "hf_cache_volume",
            "ui_state_volume",
        )
        optional = ("hf_secret", "ui_login_secret")  # empty: not used
        if self.proxy_auth:
            required = (*required, "proxy_auth_secret")
        for name in (*required, "api_key_secret", *optional):
            value = getattr(self, name)
            if (value or name not in optional) and not _NAME.match(value):
                raise DeployConfigError(
                    f"{_env_name(name)}={value!r} is not a Modal name: use letters, digits, "
                    "'.', '_' and '-' (at most 63)"
                )
        if not self.baseline_model_id:
            raise DeployConfigError("WRITING_BASELINE_MODEL_ID must not be empty")
        if not (self.ui_login_secret or self.proxy_auth):
            raise DeployConfigError(
                "WRITING_UI_LOGIN_SECRET is empty and WRITING_PROXY_AUTH is off: the reviewer "
                "app would be open to anyone through Gradio's API. Name a login secret "
                "(APP_USERNAME, APP_PASSWORD) or set WRITING_PROXY_AUTH=1"
            )
        self.warm_schedule(1)

    def warm_schedule(self, warm: int) -> WarmSchedule:
        try:
            return WarmSchedule.parse(
                days=self.warm_days, hours=self.warm_hours, zone=self.warm_tz, warm=warm
            )
        except ScheduleError as exc:
            raise DeployConfigError(f"warm hours (WRITING_WARM_*): {exc}") from exc

    def as_env(self) -> dict[str, str]:
        """The settings as variables, for the containers (which re-read this file)."""
        return {
            _env_name(name): ("1" if value else "0") if isinstance(value, bool) else str(value)
            for name, value in asdict(self).items()
        }


def _env_name(field: str) -> str:
    return f"WRITING_{field.upper()}"


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise DeployConfigError(f"{_env_name(name)}={raw!r}: use 1 or 0")


def _whole_number(name: str, raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise DeployConfigError(f"{_env_name(name)}={raw!r} is not a whole number") from None


def requirements(*extras: str, pyproject: Path = PYPROJECT) -> list[str]:
    """The project's dependencies plus `extras`, pinned as in pyproject.toml, so the images and
    the tests install the same versions."""
    if not pyproject.is_file():
        raise DeployConfigError(f"{pyproject} not found: deploy from a checkout of the repository")
    project = tomllib.loads(pyproject.read_text())["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    self_reference = re.compile(rf"^{re.escape(project['name'])}\[(.+)\]$")
    found: list[str] = []
    expanded: set[str] = set()

    def add(requirements: list[str]) -> None:
        for requirement in requirements:
            match = self_reference.match(requirement.replace(" ", ""))
            if match is None:
                if requirement not in found:
                    found.append(requirement)
                continue
            for extra in match[1].split(","):
                if extra not in expanded:
                    expanded.add(extra)
                    add(optional[extra])

    add(project["dependencies"])
    add([f"{project['name']}[{','.join(extras)}]"] if extras else [])
    return found


def image_requirements(*extras: str) -> list[str]:
    """Inside a container the image is already built, and pyproject.toml is not shipped."""
    return requirements(*extras) if modal.is_local() else []


CONFIG = DeployConfig.from_env(os.environ)
CONTAINER_ENV: dict[str, str | None] = {**CONFIG.as_env()}

app = modal.App(CONFIG.app_name)

weights_volume = modal.Volume.from_name(CONFIG.weights_volume)
hf_cache_volume = modal.Volume.from_name(CONFIG.hf_cache_volume, create_if_missing=True)
ui_state_volume = modal.Volume.from_name(CONFIG.ui_state_volume, create_if_missing=True)
api_key_secret = modal.Secret.from_name(CONFIG.api_key_secret, required_keys=["MODAL_API_KEY"])
model_secrets = [api_key_secret]
if CONFIG.hf_secret:
    model_secrets.append(modal.Secret.from_name(CONFIG.hf_secret, required_keys=["HF_TOKEN"]))
ui_secrets = [api_key_secret]
if CONFIG.proxy_auth:  # the app's own calls to the model endpoints must pass Modal's proxy too
    ui_secrets.append(
        modal.Secret.from_name(
            CONFIG.proxy_auth_secret, required_keys=["MODAL_PROXY_KEY", "MODAL_PROXY_SECRET"]
        )
    )
if CONFIG.ui_login_secret:
    ui_secrets.append(
        modal.Secret.from_name(
            CONFIG.ui_login_secret, required_keys=["APP_USERNAME", "APP_PASSWORD"]
        )
    )

# Every image gets tzdata: this file checks the warm-hours time zone on import, and zoneinfo
# needs the IANA database, which slim images may lack.
gpu_image = (
    modal.Image.debian_slim(python_version="3.11")
    .pip_install(*image_requirements(*(("hf", "train") if CONFIG.unsloth else ("hf",))), "tzdata")
    .env({"HF_HOME": HF_CACHE_MOUNT, "TOKENIZERS_PARALLELISM": "false"})
    .add_local_python_source("modal_backend", "suggestions")
)
ui_image = (
    modal.Image.debian_slim(python_version="3.11")
    .pip_install(*image_requirements("app"), "tzdata")
    .env({"GRADIO_ANALYTICS_ENABLED": "False"})
    .add_local_dir(PROJECT_ROOT / "datasets" / "eval", "/root/datasets/eval")
    .add_local_python_source("app", "suggestions", "modal_backend")
)
control_image = (
    modal.Image.debian_slim(python_version="3.11")
    .pip_install("tzdata")
    .add_local_python_source("modal_backend")
)


def model_class_options(min_containers: int) -> dict[str, Any]:
    """What both GPU classes share; only their warm count differs."""
    return {
        "image": gpu_image,
        "gpu": CONFIG.gpu,
        "volumes": {WEIGHTS_MOUNT: weights_volume, HF_CACHE_MOUNT: hf_cache_volume},
        "secrets": model_secrets,
        "env": CONTAINER_ENV,
        "min_containers": min_containers,
        "max_containers": CONFIG.max_containers,
        "scaledown_window": CONFIG.scaledown_s,
        "timeout": CONFIG.request_timeout_s,
        "startup_timeout": CONFIG.startup_timeout_s,
        "enable_memory_snapshot": True,
    }


def weights_root() -> Path:
    """The weights volume as this container sees it (`WRITING_WEIGHTS_DIR` for local runs)."""
    return Path(os.environ.get("WRITING_WEIGHTS_DIR") or WEIGHTS_MOUNT)


def fetch_base_model(repo_id: str) -> Path:
    """Download a base model once into the cache volume and keep it for later containers."""
    path = hub_fetcher(token=os.environ.get("HF_TOKEN") or None)(repo_id)
    if not modal.is_local():
        hf_cache_volume.commit()
    return path


def service_app(engine: Engine) -> Any:
    from modal_backend.serving.server import create_app
    from suggestions.keys import read_api_key

    api_key = read_api_key(os.environ.get("MODAL_API_KEY"), "MODAL_API_KEY")
    if not api_key:
        raise RuntimeError(f"the secret {CONFIG.api_key_secret!r} must hold MODAL_API_KEY")
    return create_app(engine, api_key=api_key)


class _ModelContainer:
    """One engine per container: libraries imported before the memory snapshot, weights loaded
    after it, so a restored container always reads the pointer as it is now."""

    engine: Engine
    model_id: str

    def weights(self, root: Path, fetch: FetchBase) -> WeightsPlan:
        raise NotImplementedError

    @modal.enter(snap=True)
    def import_libraries(self) -> None:
        import_inference_libraries()

    @modal.enter(snap=False)
    def load(self) -> None:
        if not modal.is_local():
            try:  # the latest committed pointer, also after a restore from a memory snapshot
                weights_volume.reload()
            except RuntimeError as exc:
                logger.warning("could not reload the weights volume: %s", exc)
        plan = self.weights(weights_root(), fetch_base_model)
        self.engine = load_engine(plan, model_id=self.model_id, max_concurrency=ENGINE_SLOTS)

    @modal.exit()
    def close(self) -> None:
        engine = getattr(self, "engine", None)  # absent when loading failed: keep that error
        if engine is not None:
            engine.close()

    @modal.asgi_app(requires_proxy_auth=CONFIG.proxy_auth)
    def serve(self) -> Any:
        return service_app(self.engine)


@app.cls(**model_class_options(CONFIG.min_containers))
@modal.concurrent(max_inputs=CONTAINER_MAX_INPUTS, target_inputs=ENGINE_SLOTS)
class WritingModel(_ModelContainer):
    """Our fine-tuned model, as `writing-llama`, at the version promoted when it started."""

    model_id = SERVED_MODEL_ID

    def weights(self, root: Path, fetch: FetchBase) -> WeightsPlan:
        return served_plan(root, fetch=fetch)


@app.cls(**model_class_options(CONFIG.baseline_min_containers))
@modal.concurrent(max_inputs=CONTAINER_MAX_INPUTS, target_inputs=ENGINE_SLOTS)
class Baseline(_ModelContainer):
    """The stock base model (no adapter), under the baseline's model id."""

    model_id = CONFIG.baseline_model_id

    def weights(self, root: Path, fetch: FetchBase) -> WeightsPlan:
        return baseline_plan(root, CONFIG.baseline_weights or None, fetch=fetch)


def ui_environment(*, model_url: str, baseline_url: str, api_key: str) -> dict[str, str]:
    """The reviewer app's settings on Modal: both columns on our own endpoints, state on the
    state volume."""
    return {
        "APP_ENV": "production",
        "APP_API_KEY": api_key,  # the REST API takes the same bearer key as the model service
        "MODAL_LLAMA_URL": model_url,
        "MODAL_LLAMA_MODEL": SERVED_MODEL_ID,
        "BASELINE_URL": baseline_url,
        "BASELINE_API_KEY": api_key,
        "BASELINE_MODEL": CONFIG.baseline_model_id,
        "SUGGESTIONS_HOME": UI_STATE_MOUNT,
        "APP_EVAL_RUNS": f"{UI_STATE_MOUNT}/eval-runs",
        "APP_PROXY_AUTH": "1" if CONFIG.proxy_auth else "0",
    }


def endpoint_url(class_name: str) -> str:
    """The deployed web URL of a model class's `serve` endpoint."""
    url = modal.Cls.from_name(CONFIG.app_name, class_name)().serve.get_web_url()
    if not url:
        raise RuntimeError(f"{class_name} in {CONFIG.app_name!r} has no web URL: is it deployed?")
    return str(url)


@app.function(
    image=ui_image,
    secrets=ui_secrets,
    env=CONTAINER_ENV,
    volumes={UI_STATE_MOUNT: ui_state_volume},
    max_containers=1,
    scaledown_window=UI_SCALEDOWN_S,
    timeout=UI_TIMEOUT_S,
)
@modal.concurrent(max_inputs=UI_MAX_INPUTS)
@modal.asgi_app(requires_proxy_auth=CONFIG.proxy_auth)  # else the page login guards it
def reviewer_app() -> Any:
    """Gradio keeps each session in one process, hence one container with many inputs."""
    model_url, baseline_url = (endpoint_url(name) for name in ("WritingModel", "Baseline"))
    os.environ.update(
        ui_environment(
            model_url=model_url, baseline_url=baseline_url, api_key=os.environ["MODAL_API_KEY"]
        )
    )
    web = importlib.import_module("app.web")  # by name: only this image ships the app package
    return web.create_web_app()


def warm_targets(config: DeployConfig) -> dict[str, WarmSchedule]:
    """Who is kept warm in the warm hours, and how many of each."""
    return {
        "WritingModel": config.warm_schedule(config.min_containers),
        "Baseline": config.warm_schedule(config.baseline_min_containers),
        "reviewer_app": config.warm_schedule(1),
    }


def set_min_containers(name: str, count: int) -> None:
    """Modal's autoscaler API, on the deployed app (a redeploy resets it to the static value)."""
    if name == "reviewer_app":
        modal.Function.from_name(CONFIG.app_name, name).update_autoscaler(min_containers=count)
    else:
        modal.Cls.from_name(CONFIG.app_name, name)().update_autoscaler(min_containers=count)


@app.function(image=control_image, env=CONTAINER_ENV, schedule=modal.Cron(WARM_CRON), timeout=120)
def apply_warm_schedule() -> dict[str, int]:
    return apply_warm_hours(
        warm_targets(CONFIG), datetime.now(UTC), set_min_containers, lead=WARM_LEAD
    )
