"""`python -m app` on the local default, as `make demo` runs it: the custom column is our
fine-tuned run (the adapter shipped in the repository) and the baseline its stock base, both
from one vLLM engine, each labelled for what it is. (The Qwen stand-in column is left out here:
its 1.1 GB model is not part of the test install.)"""

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
