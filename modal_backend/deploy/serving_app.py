"""# Serving our writing model on Modal

    modal deploy modal_backend/deploy/serving_app.py    # deploy, or redeploy, all four parts
    modal run modal_backend/deploy/smoke_app.py         # smoke-test the deployed model

deploys the app `writing-suggestions` with four parts:

- `WritingModel`: the fine-tuned model on a GPU, kept warm, serving the model service API. At
  container start it loads the run that `current.json` on the weights volume names.
- `Baseline`: the stock base model on the same GPU type, under its own model id, so reviewers
  compare like with like and no third-party proxy is involved.
- `reviewer_app`: the Gradio reviewer app on CPU, one container (Gradio sessions are sticky),
  calling the two model endpoints above.
- `apply_warm_schedule`: every ten minutes, keeps containers warm inside the warm hours only.

Both model classes run the same server code as `make serve`, behind the same bearer key. The
settings are `WRITING_*` environment variables (`modal_backend/deploy/settings.py`), read when
Modal evaluates this file on your machine; the containers evaluate it again and get the same
values through `env`. Importing this file needs no Modal account and reaches no network.
"""

from __future__ import annotations

import importlib
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import modal

from modal_backend.deploy.images import PROJECT_ROOT, project_image
from modal_backend.deploy.settings import HF_CACHE_MOUNT, WEIGHTS_MOUNT, DeploySettings
from modal_backend.deploy.warm_hours import WarmSchedule, apply_warm_hours
from modal_backend.serving.engines.base import Engine
from modal_backend.serving.local import ServedModel, slot_variables
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

MINUTES = 60  # seconds

SETTINGS = DeploySettings.from_env()
CONTAINER_ENV: dict[str, str | None] = {**SETTINGS.as_env()}
"""Every container evaluates this file again and must see the settings that were deployed."""

app = modal.App(SETTINGS.app_name)

# ## Images
#
# One recipe for every container (`images.py`): the project's pinned dependencies, tzdata and
# the project's packages. The GPU image adds the inference libraries (Unsloth too, unless
# `WRITING_UNSLOTH=0`); the reviewer app's adds Gradio and the example passages its page offers;
# the cron needs nothing beyond the project itself.
gpu_image = project_image(
    *(("hf", "train") if SETTINGS.unsloth else ("hf",)),
    packages=("modal_backend", "suggestions"),
    env={"HF_HOME": HF_CACHE_MOUNT, "TOKENIZERS_PARALLELISM": "false"},
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

# The bearer key every client sends, in both model classes and in the reviewer app (which
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
# One engine per container. The libraries are imported before the memory snapshot, which saves
# their 10-20 s on every cold start; the weights are loaded after it, so a restored container
# reads the pointer as it is now and a snapshot never pins a version. What to load is decided
# by `modal_backend.serving.weights`; the routes are `modal_backend.serving.server`'s.
ENGINE_SLOTS = 1
"""Generations one container runs at once: the transformers engine's one-at-a-time default."""
CONTAINER_MAX_INPUTS = ENGINE_SLOTS + 3
"""Requests Modal may route to one model container. Modal's autoscaler targets ENGINE_SLOTS, so
a busy container makes it start another; the headroom lets `/health`, `/v1/models` and a request
or two that waits (up to the server's 10 s queue) reach a container that is busy generating,
instead of each of them waking a cold GPU container of its own."""


def weights_root() -> Path:
    """The weights volume as this container sees it (`WRITING_WEIGHTS_DIR` for local runs)."""
    return Path(os.environ.get("WRITING_WEIGHTS_DIR") or WEIGHTS_MOUNT)


def fetch_base_model(repo_id: str) -> Path:
    """Download a base model once into the cache volume and keep it for later containers."""
    path = hub_fetcher(token=os.environ.get("HF_TOKEN") or None)(repo_id)
    if not modal.is_local():
        hf_cache_volume.commit()
    return path


class _ModelContainer:
    """The lifecycle both model classes share; each says which weights it serves."""

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

    @modal.asgi_app(requires_proxy_auth=SETTINGS.proxy_auth)  # the bearer key is asked anyway too
    def serve(self) -> Any:
        from modal_backend.serving.server import create_app
        from suggestions.keys import read_api_key

        api_key = read_api_key(os.environ.get("MODAL_API_KEY"), "MODAL_API_KEY")
        if not api_key:
            raise RuntimeError(f"the secret {SETTINGS.api_key_secret!r} must hold MODAL_API_KEY")
        return create_app(self.engine, api_key=api_key)


# Both classes run on the same hardware with the same limits, so the comparison is fair; only
# how many of each are kept warm differs.
MODEL_CONTAINER: dict[str, Any] = {
    "image": gpu_image,
    "gpu": SETTINGS.gpu,  # which GPU? one that holds the 8B model in bf16 (WRITING_GPU)
    # what to serve (the runs and the pointer); base weights, downloaded once and kept
    "volumes": {WEIGHTS_MOUNT: weights_volume, HF_CACHE_MOUNT: hf_cache_volume},
    "secrets": model_secrets,  # the bearer key, and a Hub token where one is named
    "env": CONTAINER_ENV,  # the container evaluates this file again: the same settings
    "max_containers": SETTINGS.max_containers,  # how many at most? a ceiling on spend
    "scaledown_window": SETTINGS.scaledown_s,  # how long does an idle extra container stay up?
    "timeout": SETTINGS.request_timeout_s,  # how long may one request take?
    "startup_timeout": SETTINGS.startup_timeout_s,  # the first start downloads the baseline
    "enable_memory_snapshot": True,  # restore the imported libraries instead of importing
}


@app.cls(
    **MODEL_CONTAINER,
    min_containers=SETTINGS.min_containers,  # kept warm; `apply_warm_schedule` moves it
)
@modal.concurrent(
    max_inputs=CONTAINER_MAX_INPUTS,  # a few more than it generates: /health and a short queue
    target_inputs=ENGINE_SLOTS,  # when does Modal start another? when this one is busy
)
class WritingModel(_ModelContainer):
    """Our fine-tuned model, as `writing-llama`, at the version promoted when it started."""

    model_id = SERVED_MODEL_ID

    def weights(self, root: Path, fetch: FetchBase) -> WeightsPlan:
        return served_plan(root, fetch=fetch)


@app.cls(
    **MODEL_CONTAINER,
    min_containers=SETTINGS.baseline_min_containers,  # 0 saves its cost, at a cold start
)
@modal.concurrent(
    max_inputs=CONTAINER_MAX_INPUTS,  # as for WritingModel
    target_inputs=ENGINE_SLOTS,  # as for WritingModel
)
class Baseline(_ModelContainer):
    """The stock base model (no adapter), under the baseline's model id."""

    model_id = SETTINGS.baseline_model_id

    def weights(self, root: Path, fetch: FetchBase) -> WeightsPlan:
        return baseline_plan(root, SETTINGS.baseline_weights or None, fetch=fetch)


# ## The reviewer app
#
# The Gradio page and its REST API, on CPU. Its custom column calls `WritingModel` and its
# baseline column `Baseline`, over HTTP like any client: the container never imports an engine.
def endpoint_url(class_name: str) -> str:
    """The deployed web URL of a model class's `serve` endpoint."""
    url = modal.Cls.from_name(SETTINGS.app_name, class_name)().serve.get_web_url()
    if not url:
        raise RuntimeError(f"{class_name} in {SETTINGS.app_name!r} has no web URL: is it deployed?")
    return str(url)


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
    model_url, baseline_url = (endpoint_url(name) for name in ("WritingModel", "Baseline"))
    os.environ.update(
        ui_environment(
            model_url=model_url, baseline_url=baseline_url, api_key=os.environ["MODAL_API_KEY"]
        )
    )
    web = importlib.import_module("app.web")  # by name: only this image ships the app package
    return web.create_web_app()


# ## Warm hours
#
# A warm GPU container costs its hourly rate whether or not anyone writes, so the classes are
# kept warm only in the warm hours (`WRITING_WARM_*`, see `warm_hours.py`), through Modal's
# autoscaler API. A redeploy resets them to the static `min_containers` until the next run.
WARM_LEAD = timedelta(minutes=15)
"""Warm-up starts this early: one schedule period plus time for a GPU container to boot."""


def warm_targets(settings: DeploySettings) -> dict[str, WarmSchedule]:
    """Who is kept warm in the warm hours, and how many of each."""
    return {
        "WritingModel": settings.warm_schedule(settings.min_containers),
        "Baseline": settings.warm_schedule(settings.baseline_min_containers),
        "reviewer_app": settings.warm_schedule(1),
    }


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
    timeout=2 * MINUTES,  # three autoscaler calls
)
def apply_warm_schedule() -> dict[str, int]:
    return apply_warm_hours(
        warm_targets(SETTINGS), datetime.now(UTC), set_min_containers, lead=WARM_LEAD
    )
