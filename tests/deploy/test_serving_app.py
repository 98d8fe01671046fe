"""The Modal deployment, offline: its configuration as Modal holds it, the model classes run
through `.local()` on a folder laid out like the weights volume and driven over HTTP, the
served version following the pointer, and the weights loader's choices.

Nothing here talks to Modal: the only stand-ins are at the cloud edge (the autoscaler call and
a Hugging Face download)."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import modal
import pytest

from modal_backend.deploy.images import requirements
from modal_backend.deploy.settings import DeployConfigError, DeploySettings
from modal_backend.serving.engines.base import Delta, SamplingParams
from modal_backend.serving.local import ServedModel, serve_in_thread, slot_variables
from modal_backend.serving.registry import Registry
from modal_backend.serving.weights import (
    WeightsUnavailable,
    baseline_plan,
    locate_model,
    served_plan,
)
from tests.model_service_support import API_KEY, auth

REPO_ROOT = Path(__file__).resolve().parents[2]
MESSAGES = [{"role": "user", "content": "She go to school yesterday."}]


@dataclass
class Deployed:
    """`modal_backend.deploy.serving_app` evaluated under some environment, with the keyword
    arguments its decorators handed to Modal (the autoscaler settings are not readable back
    offline)."""

    module: ModuleType
    calls: list[tuple[object, dict[str, Any]]]

    def options(self, target: object) -> dict[str, Any]:
        return next(kwargs for result, kwargs in self.calls if result is target)


def deploy_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> Deployed:
    for name in [name for name in os.environ if name.startswith("WRITING_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    calls: list[tuple[object, dict[str, Any]]] = []

    def spy(original: Callable[..., Any]) -> Callable[..., Any]:
        def decorator(self: modal.App, *args: Any, **kwargs: Any) -> Any:
            wrap = original(self, *args, **kwargs)

            def apply(target: Any) -> Any:
                result = wrap(target)
                calls.append((result, kwargs))
                return result

            return apply

        return decorator

    monkeypatch.setattr(modal.App, "cls", spy(modal.App.cls))
    monkeypatch.setattr(modal.App, "function", spy(modal.App.function))
    module = importlib.reload(importlib.import_module("modal_backend.deploy.serving_app"))
    return Deployed(module, calls)


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch) -> Deployed:
    return deploy_with(monkeypatch)


# --- configuration, read from the Modal objects ---------------------------------------------


def test_the_model_class_is_a_warm_gpu_service(deployed: Deployed) -> None:
    deploy = deployed.module
    options = deployed.options(deploy.WritingModel)
    assert options["gpu"] == "A10G"
    assert options["min_containers"] == 1
    assert options["max_containers"] == 3
    assert options["scaledown_window"] == 300
    assert options["enable_memory_snapshot"] is True
    info = deploy.WritingModel().serve.info()
    assert info.gpus == [("A10G", 1)]
    assert info.timeout == 300 and info.startup_timeout == 900
    assert {path: mount.name for path, mount in info.volumes.items()} == {
        "/weights": "writing-llama-weights",
        "/hf-cache": "writing-llama-hf-cache",
    }
    assert "modal.Secret.from_name('writing-llama-api-key')" in info.secrets
    # Modal targets the engine's one generation per container and lets a few more requests in.
    assert info.concurrency_info.max_inputs == deploy.ENGINE_SLOTS + 3
    assert info.concurrency_info.target_inputs == deploy.ENGINE_SLOTS == 1
    assert info.method_details["serve"].unauthenticated  # bearer key only, by default


def test_the_baseline_runs_on_the_same_hardware(deployed: Deployed) -> None:
    deploy = deployed.module
    model, baseline = deploy.WritingModel().serve.info(), deploy.Baseline().serve.info()
    assert baseline.gpus == model.gpus and baseline.volumes == model.volumes
    assert deployed.options(deploy.Baseline)["min_containers"] == 1
    assert deployed.options(deploy.Baseline)["gpu"] == deployed.options(deploy.WritingModel)["gpu"]


def test_the_reviewer_app_is_one_cpu_container_with_many_inputs(deployed: Deployed) -> None:
    deploy = deployed.module
    options = deployed.options(deploy.reviewer_app)
    assert options["max_containers"] == 1
    assert "gpu" not in options
    info = deploy.reviewer_app.info()
    assert info.gpus == [] and info.web_info is not None
    assert info.concurrency_info.max_inputs == 100
    assert set(info.secrets) >= {
        "modal.Secret.from_name('writing-llama-api-key')",
        "modal.Secret.from_name('writing-reviewer-login')",
    }
    assert {mount.name for mount in info.volumes.values()} == {"writing-reviewer-state"}


def test_the_reviewer_app_calls_our_two_endpoints(deployed: Deployed) -> None:
    env = deployed.module.ui_environment(
        model_url="https://w--model.modal.run",
        baseline_url="https://w--base.modal.run",
        api_key="k",
    )
    # The slots are wired as for a local server: the one slot-wiring function.
    assert (
        env.items()
        >= slot_variables(
            custom=ServedModel("https://w--model.modal.run", "writing-llama", "k"),
            baseline=ServedModel("https://w--base.modal.run", env["BASELINE_MODEL"], "k"),
        ).items()
    )
    assert env["APP_ENV"] == "production"
    assert env["MODAL_LLAMA_URL"] == "https://w--model.modal.run"
    assert env["MODAL_LLAMA_MODEL"] == "writing-llama"
    assert env["BASELINE_URL"] == "https://w--base.modal.run"
    assert env["BASELINE_MODEL"] == "meta-llama/Meta-Llama-3.1-8B-Instruct"
    assert env["BASELINE_API_KEY"] == "k"
    assert env["APP_API_KEY"] == "k"  # the public URL's REST API is never open


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    deployed = deploy_with(
        monkeypatch,
        WRITING_GPU="H100",
        WRITING_MIN_CONTAINERS="2",
        WRITING_BASELINE_MIN_CONTAINERS="0",
        WRITING_MAX_CONTAINERS="4",
        WRITING_SCALEDOWN_S="900",
        WRITING_PROXY_AUTH="1",
        WRITING_HF_SECRET="hf-token",
        WRITING_UI_LOGIN_SECRET="",
        WRITING_APP_NAME="writing-staging",
    )
    deploy = deployed.module
    assert deployed.options(deploy.WritingModel)["min_containers"] == 2
    assert deployed.options(deploy.Baseline)["min_containers"] == 0
    assert deployed.options(deploy.WritingModel)["scaledown_window"] == 900
    info = deploy.WritingModel().serve.info()
    assert info.gpus == [("H100", 1)]
    assert not info.method_details["serve"].unauthenticated  # Modal proxy auth in front
    assert "modal.Secret.from_name('hf-token')" in info.secrets
    ui = deploy.reviewer_app.info()
    assert not any("login" in secret for secret in ui.secrets)
    assert "modal.Secret.from_name('writing-proxy-auth')" in ui.secrets  # its model calls
    assert deployed.options(deploy.reviewer_app)["env"]["WRITING_PROXY_AUTH"] == "1"
    assert deploy.app.name == "writing-staging"
    # The containers evaluate the file again: they get the same settings.
    assert deployed.options(deploy.WritingModel)["env"]["WRITING_GPU"] == "H100"
    assert deploy.DeploySettings.from_env(deploy.SETTINGS.as_env()) == deploy.SETTINGS


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WRITING_GPU": "T4"}, "WRITING_GPU='T4' is not a GPU that holds the 8B model"),
        ({"WRITING_MIN_CONTAINERS": "one"}, "WRITING_MIN_CONTAINERS='one' is not a whole number"),
        ({"WRITING_MIN_CONTAINERS": "5"}, "between 0 and WRITING_MAX_CONTAINERS"),
        ({"WRITING_SCALEDOWN_S": "1"}, "WRITING_SCALEDOWN_S must be between 2 and 3600"),
        ({"WRITING_PROXY_AUTH": "maybe"}, "WRITING_PROXY_AUTH='maybe': use 1 or 0"),
        ({"WRITING_WEIGHTS_VOLUME": "my volume"}, "is not a Modal name"),
        ({"WRITING_WARM_TZ": "Mars/Base"}, "unknown time zone 'Mars/Base'"),
        ({"WRITING_WARM_HOURS": "9-5"}, "warm hours"),
        ({"WRITING_UI_LOGIN_SECRET": ""}, "would be open to anyone through Gradio's API"),
    ],
)
def test_bad_settings_are_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(DeployConfigError, match=message.replace("(", r"\(")):
        DeploySettings.from_env(env)


def test_the_warm_schedule_runs_every_ten_minutes_and_scales_all_three(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy = deployed.module
    assert deploy.apply_warm_schedule.info().schedule == "Cron('*/10 * * * *', UTC)"
    targets = deploy.warm_targets(deploy.SETTINGS)
    assert {name: schedule.warm for name, schedule in targets.items()} == {
        "WritingModel": 1,
        "Baseline": 1,
        "reviewer_app": 1,
    }
    assert targets["WritingModel"].describe() == "mon,tue,wed,thu,fri 08:00-20:00 UTC: 1 warm"
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(deploy, "set_min_containers", lambda n, c: calls.append((n, c)))
    applied = deploy.apply_warm_schedule.local()
    assert [name for name, _ in calls] == ["WritingModel", "Baseline", "reviewer_app"]
    assert applied == dict(calls) and set(applied.values()) <= {0, 1}


def test_images_install_the_projects_own_pins(tmp_path: Path) -> None:
    serving = requirements("hf")
    assert "torch==2.13.0" in serving and any(r.startswith("fastapi") for r in serving)
    assert not any(r.startswith("writing-suggestions") for r in serving)
    assert "unsloth==2026.10.9" in requirements("hf", "train")
    assert "gradio==6.31.0" in requirements("app")
    with pytest.raises(DeployConfigError, match="deploy from a checkout"):
        requirements("hf", pyproject=tmp_path / "pyproject.toml")


def test_deploy_imports_without_credentials_or_network(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),  # no ~/.modal.toml
        "MODAL_SERVER_URL": "http://127.0.0.1:9",  # nothing listens there
    }
    script = "import modal_backend.deploy.serving_app as d; print(d.app.name, d.SETTINGS.gpu)"
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["writing-suggestions", "A10G"]


# --- the classes through .local(), on a folder laid out like the volume ----------------------


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`base/tiny-llama` (the stock model), `runs/run-1` (merged weights, a different model) and
    `runs/run-2` (a LoRA adapter on the base), nothing promoted yet."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from modal_backend.serving.testing import build_tiny_llama

    root = tmp_path_factory.mktemp("volume")
    registry = Registry(root)
    base = build_tiny_llama(root / "base" / "tiny-llama", seed=0)
    build_tiny_llama(registry.run_dir("run-1") / "merged", seed=1)
    registry.write_manifest("run-1", {"version": "2026.01.1", "base_model": "base/tiny-llama"})
    tuned = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]),
    )
    with torch.no_grad():
        torch.manual_seed(2)
        for name, weight in tuned.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.5)  # a fresh adapter changes nothing; this one does
    tuned.save_pretrained(registry.run_dir("run-2") / "adapter")
    registry.write_manifest("run-2", {"version": "2026.02.1", "base_model": "base/tiny-llama"})
    return root


@contextmanager
def container(cls: Any, volume: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """What a new container does: run the enter hooks, build the ASGI app; served over HTTP."""
    monkeypatch.setenv("WRITING_WEIGHTS_DIR", str(volume))
    monkeypatch.setenv("MODAL_API_KEY", API_KEY)
    with pytest.warns(UserWarning, match="executing locally"):
        asgi = cls().serve.local()
    with serve_in_thread(asgi) as url:
        yield url


def answer(url: str, model: str) -> str:
    body = {"model": model, "messages": MESSAGES, "max_tokens": 12, "stream": True}
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers=auth(), timeout=60
    ) as response:
        assert response.status_code == 200
        events = [
            line.removeprefix("data: ")
            for line in response.iter_lines()
            if line.startswith("data:")
        ]
    assert events[-1] == "[DONE]"
    return "".join(
        json.loads(event)["choices"][0]["delta"].get("content") or "" for event in events[:-1]
    )


def served(url: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    health = httpx.get(f"{url}/health", timeout=10).json()
    models = httpx.get(f"{url}/v1/models", headers=auth(), timeout=10).json()["data"]
    return health, [(item["id"], item["version"]) for item in models]


def test_promoting_a_run_changes_the_served_version(
    volume: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The baseline's stock weights from a folder on the volume instead of the Hub.
    deploy = deploy_with(monkeypatch, WRITING_BASELINE_WEIGHTS="base/tiny-llama").module
    registry = Registry(volume)
    registry.promote("run-1")
    with container(deploy.WritingModel, volume, monkeypatch) as first:
        health, models = served(first)
        assert health == {"status": "ready", "model": "writing-llama", "version": "2026.01.1"}
        assert models == [("writing-llama", "2026.01.1")]
        merged_answer = answer(first, "writing-llama")
        assert httpx.get(f"{first}/v1/models", timeout=10).status_code == 401

        registry.promote("run-2")  # base + adapter
        # A running container keeps what it loaded; the next container to start loads run-2.
        assert served(first)[0]["version"] == "2026.01.1"
        with container(deploy.WritingModel, volume, monkeypatch) as second:
            health, models = served(second)
            assert health["version"] == "2026.02.1"
            assert models == [("writing-llama", "2026.02.1")]
            tuned_answer = answer(second, "writing-llama")
    assert tuned_answer != merged_answer

    with container(deploy.Baseline, volume, monkeypatch) as baseline:
        health, models = served(baseline)
        assert models == [("meta-llama/Meta-Llama-3.1-8B-Instruct", "stock:base/tiny-llama")]
        stock_answer = answer(baseline, "meta-llama/Meta-Llama-3.1-8B-Instruct")
    # The baseline is the tuned run's base with the adapter off.
    assert stock_answer == direct_answer(volume / "base" / "tiny-llama")
    assert stock_answer != tuned_answer
    registry.rollback()
    with container(deploy.WritingModel, volume, monkeypatch) as rolled_back:
        assert served(rolled_back)[0]["version"] == "2026.01.1"


def direct_answer(model_path: Path) -> str:
    from modal_backend.serving.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine.load(model_path)

    async def run() -> str:
        stream = engine.stream(MESSAGES, SamplingParams(max_tokens=12))  # type: ignore[arg-type]
        return "".join([event.text async for event in stream if isinstance(event, Delta)])

    return asyncio.run(run())


def test_a_volume_with_nothing_promoted_fails_the_container_start_clearly(
    deployed: Deployed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRITING_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("MODAL_API_KEY", API_KEY)
    with (
        pytest.warns(UserWarning, match="executing locally"),
        pytest.raises(WeightsUnavailable, match="no run is promoted"),
    ):
        deployed.module.WritingModel().serve.local()


# --- the weights loader's choices ------------------------------------------------------------


def test_an_adapter_run_finds_its_base_on_the_volume_or_through_the_fetcher(
    volume: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "volume"
    registry = Registry(copy)
    (copy / "runs" / "run-2").mkdir(parents=True)
    (copy / "runs" / "run-2" / "adapter").symlink_to(volume / "runs" / "run-2" / "adapter")
    registry.write_manifest("run-2", {"version": "v2", "base_model": "meta-llama/Llama-3.1-8B"})
    registry.promote("run-2")

    with pytest.raises(WeightsUnavailable, match="no download is configured"):
        served_plan(copy)
    fetched: list[str] = []

    def fetch(repo_id: str) -> Path:
        fetched.append(repo_id)
        return volume / "base" / "tiny-llama"

    plan = served_plan(copy, fetch=fetch)
    assert fetched == ["meta-llama/Llama-3.1-8B"]
    assert plan.model_path == volume / "base" / "tiny-llama"
    assert plan.adapter_path == copy / "runs" / "run-2" / "adapter"
    assert (plan.version, plan.run_id) == ("v2", "run-2")

    # Without base_model in the manifest, the adapter's own record of its base is used (here
    # the folder it was made from).
    registry.write_manifest("run-2", {"version": "v2"})
    assert served_plan(copy).model_path == volume / "base" / "tiny-llama"


def test_the_baseline_source_is_named_or_the_promoted_runs_base(volume: Path) -> None:
    absolute = str(volume / "base" / "tiny-llama")
    plan = baseline_plan(volume, absolute)
    assert plan.model_path == Path(absolute) and plan.adapter_path is None
    assert plan.version == f"stock:{absolute}"
    registry = Registry(volume)
    registry.promote("run-1")
    fallback = baseline_plan(volume, None)  # run-1's manifest: base_model "base/tiny-llama"
    assert fallback.model_path == volume / "base" / "tiny-llama"
    assert fallback.version == "stock:base/tiny-llama"
    with pytest.raises(WeightsUnavailable, match="no download is configured"):
        baseline_plan(volume, "unsloth/Meta-Llama-3.1-8B-Instruct")
    with pytest.raises(WeightsUnavailable, match="not a model folder"):
        locate_model("./nowhere", volume)


def test_the_reviewer_app_function_serves_both_columns_from_our_endpoints(
    volume: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The UI function's own body, with only Modal's URL lookup replaced by our local
    containers: the reviewer app it returns answers from the tuned model and the baseline."""
    deploy = deploy_with(monkeypatch, WRITING_BASELINE_WEIGHTS="base/tiny-llama").module
    Registry(volume).promote("run-1")
    names = ("APP_ENV", "MODAL_LLAMA_URL", "MODAL_LLAMA_MODEL", "BASELINE_URL")
    for name in (*names, "BASELINE_API_KEY", "BASELINE_MODEL", "APP_EVAL_RUNS", "APP_API_KEY"):
        monkeypatch.setenv(name, "")  # restored after the test; the function sets them
    monkeypatch.setenv("SUGGESTIONS_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("APP_USERNAME", "reviewer")  # from the login secret on Modal
    monkeypatch.setenv("APP_PASSWORD", "pass-8c1e")
    with (
        container(deploy.WritingModel, volume, monkeypatch) as model_url,
        container(deploy.Baseline, volume, monkeypatch) as baseline_url,
    ):
        urls = {"WritingModel": model_url, "Baseline": baseline_url}
        monkeypatch.setattr(deploy, "endpoint_url", urls.__getitem__)
        monkeypatch.setattr(deploy, "UI_STATE_MOUNT", str(tmp_path / "state"))
        with pytest.warns(UserWarning, match="executing locally"):
            ui = deploy.reviewer_app.local()
        with serve_in_thread(ui) as app_url:
            health = httpx.get(f"{app_url}/healthz", timeout=10).json()
            assert health["backends"]["custom"]["model_id"] == "writing-llama"
            assert health["backends"]["baseline"]["model_id"] == (
                "meta-llama/Meta-Llama-3.1-8B-Instruct"
            )
            refused = httpx.post(
                f"{app_url}/api/manuscripts/m-1/suggest",
                json={"text": "She go to school yesterday.", "type": "grammar"},
            )
            assert refused.status_code == 401  # the public URL's API needs the key
            assert httpx.get(f"{app_url}/gradio_api/info").status_code == 401  # and the page's
            for backend in ("custom", "baseline"):
                reply = httpx.post(
                    f"{app_url}/api/manuscripts/m-1/suggest?backend={backend}",
                    json={"text": "She go to school yesterday.", "type": "grammar"},
                    headers=auth(),
                    timeout=120,
                )
                # The tiny models ramble to their token limit; what matters is that the call
                # went through our endpoint with the right model id and key.
                assert reply.status_code in (200, 422), reply.text
                if reply.status_code == 422:
                    assert reply.json()["error"]["kind"] == "truncated"
