"""`python -m app` with our run beside its stock base, each column labelled for what it is: by
default our SmolLM2 run and its base on one vLLM engine, and with `--local-model qwen` a run on
the Qwen stand-in beside the stock stand-in, on one llama.cpp server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from modal_backend.serving.local import free_port
from modal_backend.serving.shipped_adapter import verified_adapter
from tests.app.test_launch import wait_for

pytest.importorskip("vllm", reason="vLLM is installed by `make test` on Linux x86-64 only")
pytestmark = pytest.mark.timeout(600)
LONG_PASSAGE = (
    "She go to school yesterday. Her brother have a new bike and he ride it every days. "
    "They was happy about the weather."
)


def test_the_demo_serves_our_run_beside_its_stock_base(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SUGGESTIONS_HOME": str(tmp_path / "state")}
    command = [sys.executable, "-m", "app", "--port", str(port), "--columns", "custom,baseline"]
    process = subprocess.Popen(
        command,
        env=env,
        cwd=Path(__file__).parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        health = wait_for(f"{base}/healthz", process, timeout_s=300).json()
        custom, baseline = health["backends"]["custom"], health["backends"]["baseline"]
        assert custom["model_id"] == "writing-llama"
        assert custom["label"].startswith(f"our fine-tuned run {verified_adapter().version}")
        assert baseline["model_id"] == "smollm2-135m-instruct"
        assert "stock base" in baseline["label"] and "old generic prompt" in baseline["label"]
        answers = {
            name: httpx.post(
                f"{base}/api/manuscripts/m-1/suggest",
                params={"backend": name},
                json={"text": "She go to school yesterday.", "type": "grammar"},
                timeout=120,
            )
            for name in ("custom", "baseline")
        }
        tuned = answers["custom"]
        assert tuned.status_code == 200, tuned.text
        assert tuned.json()["model_id"] == "writing-llama"
        assert tuned.json()["suggestions"], "our run corrects the verb"
        stock = answers["baseline"]  # the stock base often talks to its token limit: a 422
        assert stock.status_code in (200, 422), stock.text
        if stock.status_code == 200:
            assert stock.json()["model_id"] == "smollm2-135m-instruct"
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output[-3000:]
    assert "Qwen stand-in instead" not in output


def test_the_qwen_pair_is_the_run_beside_its_stock_self_on_one_llamacpp_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--local-model qwen`: custom = the run (task prompt), standin = the stock model
    with the task prompt, baseline = the stock model with the old generic prompt, all streaming
    at once from one llama.cpp server. The shipped Qwen adapter needs the 1.1 GB stand-in, which
    the test install does not fetch, so SmolLM2's GGUF and its shipped adapter stand in for them
    here: the wiring is the same."""
    import asyncio
    from contextlib import ExitStack

    from app import __main__ as launcher
    from app.compare import stream_columns
    from app.config import AppConfig
    from app.runtime import Runtime
    from modal_backend.serving.local_bases import SMOLLM2
    from modal_backend.serving.model_parts import ensure_model
    from suggestions import LlamaRequest

    monkeypatch.setenv("SUGGESTIONS_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(launcher, "_standin_gguf", lambda: ensure_model(SMOLLM2.gguf))
    monkeypatch.setattr(launcher, "_qwen_adapter", verified_adapter)
    columns = ("custom", "standin", "baseline")
    with ExitStack() as stack:
        config = launcher._with_local_model(AppConfig.from_env(columns=columns), "qwen", stack)
        labels = config.labels
        assert labels["custom"].startswith(f"our fine-tuned run {verified_adapter().version}")
        assert "task prompt" in labels["standin"] and "no tuning" in labels["standin"]
        assert "old generic prompt" in labels["baseline"]
        service = Runtime.build(config).service
        request = LlamaRequest(text=LONG_PASSAGE, type="grammar")  # columns that stream a while

        async def last_snapshot() -> tuple[object, ...]:
            final: tuple[object, ...] = ()
            async for snapshot in stream_columns(service, columns, request):
                final = snapshot
            return final

        custom, standin, baseline = asyncio.run(last_snapshot())
    assert custom.status == "done" and custom.model_id == "writing-llama", custom  # type: ignore[attr-defined]
    assert custom.text.startswith("She went to school yesterday."), custom  # type: ignore[attr-defined]
    for column in (standin, baseline):
        assert column.ttft_ms is not None, column  # type: ignore[attr-defined]
    firsts = [c.ttft_ms for c in (custom, standin)]  # type: ignore[attr-defined]
    ends = [c.elapsed_ms for c in (custom, standin)]  # type: ignore[attr-defined]
    assert max(firsts) < min(ends), f"first tokens {firsts} ms, ends {ends} ms: one waited"
