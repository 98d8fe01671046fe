"""The deployment's settings: every `WRITING_*` variable, its default and its bounds, in one class.

Modal evaluates an app file on this machine (`modal deploy`, `modal run`), which reads these
settings from the environment; each container evaluates the same file again, so the apps hand
the settings on as variables (`as_env`) and the container reads back exactly what was deployed.
Both apps take their volume names from here, so `WRITING_WEIGHTS_VOLUME` moves the trainer and
the server together.

A value that cannot be used stops the deploy with a `DeployConfigError` whose message names the
variable: rules of ours word their own message; pydantic's checks (numbers, bounds, names) are
put into the same words by `_explain`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal, Self, get_args

import annotated_types
from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from modal_backend.deploy.warm_hours import ScheduleError, WarmSchedule
from modal_backend.serving.engines.vllm_engine import VLLMSettings

ENV_PREFIX = "WRITING_"

WEIGHTS_MOUNT = "/weights"
"""Where both apps mount the weights volume: `runs/`, `current.json`, `promotions.jsonl`."""
HF_CACHE_MOUNT = "/hf-cache"
"""Where both apps mount the Hugging Face download cache (`HF_HOME`)."""
JFLEG_MOUNT = "/jfleg"
"""Where training mounts the JFLEG volume (`dev/`, `test/`): the comparison with the stock
base that the promotion gate asks for. JFLEG's licence keeps it out of the image and the repo;
the operator fills the volume once (`modal volume put writing-jfleg <jfleg>/dev /dev`)."""

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

MODEL_CLASS = "WritingModel"
"""The GPU class: with vLLM it answers as our model and as the baseline, on one GPU."""
FALLBACK_BASELINE_CLASS = "Baseline"
"""The baseline's own GPU class, deployed only with the transformers fallback (one model id per
engine there)."""

EngineChoice = Literal["vllm", "transformers"]
SpeculationChoice = Literal["off", "ngram"]
CHOICES = {
    "engine": "vllm (both model ids on one GPU, batched) or transformers (the fallback)",
    "speculative": "off or ngram (vLLM's prompt-lookup drafts)",
}
"""What each choice-valued setting takes, as the refusal of any other value says it."""

_NAME = "[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
ModalName = Annotated[str, Field(pattern=f"^{_NAME}$")]
"""A volume, secret or app name as Modal accepts it."""
OptionalModalName = Annotated[str, Field(pattern=f"^(|{_NAME})$")]
"""A Modal name, or empty for "not used"."""


class DeployConfigError(ValueError):
    """A `WRITING_*` setting that cannot be used; the message names the variable."""


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def _flag(value: object, info: ValidationInfo) -> object:
    """The words the deploy has always taken for on and off; an empty variable is off."""
    if not isinstance(value, str):
        return value
    word = value.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off", ""):
        return False
    raise DeployConfigError(f"{env_name(str(info.field_name))}={value!r}: use 1 or 0")


Flag = Annotated[bool, BeforeValidator(_flag)]


class DeploySettings(BaseSettings):
    """Everything the Modal apps need to know, with the defaults a first deployment wants."""

    # Case-insensitive like every pydantic setting; empty variables are kept, because an empty
    # secret or baseline means "none" here. Values are stripped, as the deploy always did.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
        use_attribute_docstrings=True,
    )

    app_name: ModalName = "writing-suggestions"
    """The Modal app: a second name (`writing-staging`) deploys an independent copy."""
    engine: EngineChoice = "vllm"
    """`vllm`: both model ids on one GPU, batched; `transformers`: the fallback, one request at
    a time per container and the baseline in a class of its own."""
    gpu: str = "H100"
    """One of `GPU_MEMORY_GB` (the GPU table in docs/operators/gpus-and-cost.md says why H100)."""
    speculative: SpeculationChoice = VLLMSettings.speculative
    """`ngram`: vLLM's prompt-lookup speculation (the engine's default, off: measured on a CPU,
    it costs at batch 8); refused with the transformers engine, which has none."""
    num_speculative_tokens: int = Field(VLLMSettings.num_speculative_tokens, ge=1, le=64)
    """With `ngram`: tokens drafted per request per step at most (`bench/speculation.py`)."""
    prompt_lookup_min: int = Field(VLLMSettings.prompt_lookup_min, ge=1, le=16)
    prompt_lookup_max: int = Field(VLLMSettings.prompt_lookup_max, ge=1, le=16)
    """With `ngram`: the shortest and longest run of recent tokens looked up in the request."""
    speculative_max_batch: int = Field(VLLMSettings.speculative_max_batch, ge=0, le=256)
    """With `ngram`: drafts only while at most this many requests share a step; 0: any."""
    min_containers: int = Field(1, ge=0)
    """`WritingModel` containers kept warm during the warm hours (at most max_containers)."""
    baseline_min_containers: int = Field(1, ge=0)
    """The same for `Baseline`, which only the transformers fallback deploys."""
    max_containers: int = Field(3, ge=1)
    """The most GPU containers per class: a ceiling on spend."""
    scaledown_s: int = Field(300, ge=2, le=3600)
    """How long an idle container above the warm count stays up."""
    request_timeout_s: int = Field(300, ge=10, le=86_400)
    startup_timeout_s: int = Field(900, ge=10, le=86_400)
    """A first start downloads the baseline's weights."""
    weights_volume: ModalName = "writing-llama-weights"
    """Training writes runs here; the model service reads them."""
    hf_cache_volume: ModalName = "writing-llama-hf-cache"
    jfleg_volume: ModalName = "writing-jfleg"
    """JFLEG dev and test, filled by the operator; training compares each run with its base on
    dev there (an empty volume leaves the run uncompared, and the promotion gate says so)."""
    ui_state_volume: ModalName = "writing-reviewer-state"
    api_key_secret: ModalName = "writing-llama-api-key"
    hf_secret: OptionalModalName = ""
    """A secret holding HF_TOKEN, for gated repositories; empty: none."""
    ui_login_secret: OptionalModalName = "writing-reviewer-login"
    """A secret holding APP_USERNAME and APP_PASSWORD; empty only behind proxy auth."""
    proxy_auth: Flag = False
    proxy_auth_secret: OptionalModalName = "writing-proxy-auth"
    """With proxy auth: the reviewer app's token for the model endpoints (MODAL_PROXY_KEY and
    MODAL_PROXY_SECRET)."""
    unsloth: Flag = True
    """Install Unsloth in the transformers fallback's GPU image, for its faster inference
    kernels (vLLM has its own)."""
    baseline_model_id: str = Field("meta-llama/Meta-Llama-3.1-8B-Instruct", min_length=1)
    baseline_weights: str = "unsloth/Meta-Llama-3.1-8B-Instruct"
    """The stock 16-bit instruct model (an ungated copy of Meta's weights); a folder on the
    volume works too, and empty means the promoted run's own base model. With vLLM it is also
    the base the adapter runs on, loaded before the snapshot (a change needs a redeploy)."""
    warm_days: str = "mon-fri"
    warm_hours: str = "08:00-20:00"
    warm_tz: str = "UTC"

    @field_validator("engine", "speculative", mode="before")
    @classmethod
    def _one_of(cls, value: object, info: ValidationInfo) -> object:
        """One of the choices, in any case; anything else refused in words that say what each
        choice does."""
        field = str(info.field_name)
        word = value.strip().lower() if isinstance(value, str) else value
        if word in get_args(cls.model_fields[field].annotation):
            return word
        raise DeployConfigError(f"{env_name(field)}={value!r}: use {CHOICES[field]}")

    @field_validator("gpu")
    @classmethod
    def _holds_the_model(cls, gpu: str) -> str:
        if gpu not in GPU_MEMORY_GB:
            raise DeployConfigError(
                f"WRITING_GPU={gpu!r} is not a GPU that holds the 8B model in bf16: "
                f"choose one of {', '.join(GPU_MEMORY_GB)}"
            )
        return gpu

    @model_validator(mode="after")
    def _fits_together(self) -> Self:
        """The rules that span fields, after each field passed its own check."""
        for field in ("min_containers", "baseline_min_containers"):
            if getattr(self, field) > self.max_containers:
                raise DeployConfigError(
                    f"{env_name(field)} must be between 0 and WRITING_MAX_CONTAINERS "
                    f"({self.max_containers})"
                )
        if self.prompt_lookup_min > self.prompt_lookup_max:
            raise DeployConfigError(
                f"WRITING_PROMPT_LOOKUP_MIN ({self.prompt_lookup_min}) must not exceed "
                f"WRITING_PROMPT_LOOKUP_MAX ({self.prompt_lookup_max})"
            )
        if self.speculative != "off" and self.engine != "vllm":
            raise DeployConfigError(
                f"WRITING_SPECULATIVE={self.speculative} needs WRITING_ENGINE=vllm: the "
                "transformers fallback has no speculative decoding"
            )
        if self.proxy_auth and not self.proxy_auth_secret:
            raise DeployConfigError(
                "WRITING_PROXY_AUTH=1 needs WRITING_PROXY_AUTH_SECRET: the reviewer app's own "
                "calls to the model endpoints must pass Modal's proxy too"
            )
        if not (self.ui_login_secret or self.proxy_auth):
            raise DeployConfigError(
                "WRITING_UI_LOGIN_SECRET is empty and WRITING_PROXY_AUTH is off: the reviewer "
                "app would be open to anyone through Gradio's API. Name a login secret "
                "(APP_USERNAME, APP_PASSWORD) or set WRITING_PROXY_AUTH=1"
            )
        self.warm_schedule(1)
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DeploySettings:
        """The settings from `env` (by default this process's environment); unset variables
        keep their default, and a bad one raises `DeployConfigError` naming it."""
        try:
            if env is None:
                return cls()
            given = {
                name: env[env_name(name)] for name in cls.model_fields if env_name(name) in env
            }
            return cls.model_validate(given)
        except ValidationError as exc:
            raise DeployConfigError("\n".join(map(_explain, exc.errors()))) from None

    def as_env(self) -> dict[str, str]:
        """The settings as variables, for the containers (which evaluate the app file again)."""
        return {
            env_name(name): ("1" if value else "0") if isinstance(value, bool) else str(value)
            for name, value in self.model_dump().items()
        }

    def vllm_settings(self, max_num_seqs: int) -> VLLMSettings:
        """The engine's settings for `max_num_seqs` requests at once, with these drafts."""
        return VLLMSettings(
            max_num_seqs=max_num_seqs,
            speculative=self.speculative,
            num_speculative_tokens=self.num_speculative_tokens,
            prompt_lookup_min=self.prompt_lookup_min,
            prompt_lookup_max=self.prompt_lookup_max,
            speculative_max_batch=self.speculative_max_batch,
        )

    @property
    def baseline_class(self) -> str:
        """The class whose endpoint answers as the baseline: the one GPU class with vLLM."""
        return MODEL_CLASS if self.engine == "vllm" else FALLBACK_BASELINE_CLASS

    def warm_schedule(self, warm: int) -> WarmSchedule:
        """The warm hours, keeping `warm` containers."""
        try:
            return WarmSchedule.parse(
                days=self.warm_days, hours=self.warm_hours, zone=self.warm_tz, warm=warm
            )
        except ScheduleError as exc:
            raise DeployConfigError(f"warm hours (WRITING_WARM_*): {exc}") from exc


def _explain(error: ErrorDetails) -> str:
    """One validation error as a sentence that names the variable."""
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, DeployConfigError):
        return str(cause)
    field = str(error["loc"][0]) if error["loc"] else ""
    name, raw = env_name(field), error["input"]
    match error["type"]:
        case "int_parsing" | "int_from_float" | "int_type":
            return f"{name}={raw!r} is not a whole number"
        case "greater_than_equal" | "less_than_equal":
            return f"{name} must be {_bounds(field)}, not {raw}"
        case "string_pattern_mismatch":
            return (
                f"{name}={raw!r} is not a Modal name: use letters, digits, '.', '_' and '-' "
                "(at most 63)"
            )
        case "string_too_short":
            return f"{name} must not be empty"
        case _:
            return f"{name}={raw!r}: {error['msg']}"


def _bounds(field: str) -> str:
    """`between 2 and 3600 seconds` or `at least 1`, from the field's own `Field(ge=, le=)`."""
    metadata = DeploySettings.model_fields[field].metadata
    low = next((m.ge for m in metadata if isinstance(m, annotated_types.Ge)), None)
    high = next((m.le for m in metadata if isinstance(m, annotated_types.Le)), None)
    unit = " seconds" if field.endswith("_s") else ""
    if high is None:
        return f"at least {low}{unit}"
    return f"between {low} and {high}{unit}"
