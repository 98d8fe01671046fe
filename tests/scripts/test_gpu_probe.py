"""The GPU probe's CPU path, end to end: what a lent GPU machine runs (`make gpu-bundle`, then
`python3 scripts/gpu_probe.py --bundle build/gpu-bundle --out $OUT/probe.json`), here on a tiny
Llama with the tiny test tokenizer, so CI (which never has a GPU) keeps the probe working."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "scripts" / "gpu_probe.py"
TOKENS = 16


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("probe")
    out = work / "probe.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(PROBE), "--device", "cpu", "--out", str(out)]
    command += ["--tokens", str(TOKENS), "--repeats", "1", "--levels", "1:2,2:4"]
    command += ["--main-thread-requests", "2", "--work", str(work / "files")]
    completed = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def test_every_section_ran_on_the_cpu_path_without_an_error(probe: dict[str, Any]) -> None:
    assert probe["errors"] == {} and probe["failures"] == []
    assert probe["environment"]["device"] == "cpu"
    assert probe["bundle"] == {"used": False}
    assert probe["model"]["shape"] == "tiny" and probe["model"]["parameters"] > 0
    assert set(probe["section_seconds"]) == {"bundle", "model", "decode", "server", "train"}


def test_decode_runs_every_way_and_every_way_writes_the_same_text(probe: dict[str, Any]) -> None:
    decode = probe["decode"]
    rows = decode["rows"]
    assert {"main_generate", "main_engine", "new_thread_engine", "engine_thread"} <= set(rows)
    assert {"stream_own_thread", "stream_engine_threads"} <= set(rows)
    for name, row in rows.items():
        assert row["tokens"] == TOKENS, name  # the tiny Llama never ends its turn early
        assert row["tok_s"] > 0 and row["wall_s"] > 0 and 0 < row["of_fastest"] <= 1, name
        assert row["thread_cpu_ms_per_token"] > 0, name
    assert decode["texts_identical"] is True
    for name in ("stream_own_thread", "stream_engine_threads"):
        assert rows[name]["seen_by_reader_tok_s"] > 0
        wakeups = rows[name]["loop_wakeups_per_token"]
        assert 0 < wakeups <= (TOKENS + 2) / TOKENS  # at most one per event and the end
    contention = decode["contention"]
    for name in ("engine_thread", "busy_main_5ms", "busy_main_0.5ms"):
        assert contention[name]["tok_s"] > 0 and contention[name]["tokens"] > 0, name
    assert contention["busy_main_5ms"]["main_thread_spins"] > 0
    states = decode["thread_state"]
    assert states["main"]["grad_enabled"] is True
    assert states["new_thread"]["grad_enabled"] is True  # torch's grad mode is per thread
    assert states["engine_thread"]["grad_enabled"] is False  # the engine's thread set-up
    counts = decode["op_counts"]
    assert counts["main_total"] > 0 and counts["differ"] == {}  # one code path in both threads
    assert counts["main_total"] == counts["engine_thread_total"]


def test_the_server_answers_every_request_at_every_level(probe: dict[str, Any]) -> None:
    server = probe["server"]
    levels = server["engine_threads"]["levels"]
    assert [(lv["concurrency"], lv["requests"]) for lv in levels] == [(1, 2), (2, 4)]
    for level in [*levels, *server["main_thread"]["levels"]]:
        assert level["ok"] == level["requests"] and level["errors"] == []
        assert level["completion_tokens_mean"] == TOKENS
        first, total = level["first_token_s"], level["total_s"]
        assert 0 < first["p50"] <= first["p95"] and 0 < total["p50"] <= total["p95"]
        assert first["p50"] <= total["p50"] and level["aggregate_tok_s"] > 0
    summary = probe["summary"]["server"]
    assert set(summary) == {"c1", "c2"} and summary["c1"]["total_p95_s"] > 0


def test_training_passes_its_checks_and_the_run_serves_what_it_learned(
    probe: dict[str, Any],
) -> None:
    train = probe["train"]
    assert train["trainer_backend"] == "peft" and train["status"] == "complete"
    assert train["checks"] == {
        "passed": True,
        "merged_matches_adapter": True,
        "stops_at_end_of_turn": True,
    }
    assert train["generated"] == train["expected"]
    assert train["optimizer"] == "adamw_torch" and train["losses"]["steps"] == 100
    assert probe["summary"]["train"]["served_answer_ok"] is True


def load_script(name: str) -> ModuleType:
    sys.path.insert(0, str(PROBE.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, PROBE.parent / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(PROBE.parent))


def test_percentiles_are_nearest_rank() -> None:
    percentiles = load_script("gpu_probe_load").percentiles
    assert percentiles([]) == {}
    assert percentiles([3.0]) == {"p50": 3.0, "p95": 3.0, "max": 3.0, "n": 1}
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentiles(values) == {"p50": 10.0, "p95": 19.0, "max": 20.0, "n": 20}


def test_the_bundle_keeps_its_heavy_neighbours_out_and_stays_small() -> None:
    bundle = load_script("gpu_bundle")
    assert bundle.LIMIT_MIB == 60
    assert {"torch", "transformers", "peft", "accelerate", "vllm", "unsloth"} <= set(bundle.HEAVY)
    requirements = bundle.runtime_requirements()
    assert any(r.startswith("fastapi") for r in requirements)
    assert not any(r.lower().startswith(bundle.HEAVY) for r in requirements)
