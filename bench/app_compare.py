"""Benchmark: three columns stream concurrently, so a comparison takes as long as its slowest.

    python bench/app_compare.py [--runs 10]

Three mock backends answer after 0.2, 0.5 and 1.0 s. Target: the wall time of the whole
three-column comparison is at most the slowest column plus 100 ms. Measured in one run:
1. the compare core alone (`app.compare.stream_columns`), which is what the app adds;
2. end to end: `gradio_client` over loopback HTTP to the real app. Any Gradio call has a fixed
   cost (queue join, event stream, client polling), measured here as the floor: the same
   comparison with instant backends. The columns' share is the wall time less that floor.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.compare import stream_columns
from app.config import AppConfig
from modal_backend.serving.local import serve_in_thread
from suggestions import LlamaRequest, MockBackend
from suggestions.config import Settings
from suggestions.service import SuggestionService

DELAYS_S = {"custom": 0.2, "baseline": 0.5, "mock": 1.0}
SLOWEST_S = max(DELAYS_S.values())
TARGET_OVERHEAD_S = 0.1


def backends(delays: dict[str, float] = DELAYS_S) -> dict[str, MockBackend]:
    return {
        name: MockBackend(name=name, first_token_delay_s=delay, label=f"mock {delay:.1f} s")
        for name, delay in delays.items()
    }


def request(run: int) -> LlamaRequest:
    # A new text each run, so no column is ever answered from the cache.
    return LlamaRequest(text=f"Run {run}: she go to school yesterday.", type="grammar")


async def core_walls(runs: int) -> list[float]:
    service = SuggestionService(backends())
    walls = []
    for run in range(runs):
        started = time.perf_counter()
        async for snapshot in stream_columns(service, tuple(DELAYS_S), request(run)):
            last = snapshot
        walls.append(time.perf_counter() - started)
        assert all(column.status == "done" for column in last)
    return walls


def gradio_walls(runs: int, delays: dict[str, float] = DELAYS_S) -> list[float]:
    from gradio_client import Client

    from app.web import create_web_app

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        config = AppConfig(
            settings=Settings(state_dir=root),
            columns=tuple(DELAYS_S),
            votes_db=root / "votes.db",
        )
        with serve_in_thread(create_web_app(config, backends=backends(delays))) as url:
            client = Client(url, verbose=False)
            client.predict(request(-1).text, "grammar", api_name="/compare")  # warm-up
            walls = []
            for run in range(runs):
                started = time.perf_counter()
                outputs = client.predict(request(run).text, "grammar", api_name="/compare")
                walls.append(time.perf_counter() - started)
                assert all('data-status="done"' in str(html) for html in outputs[:3])
            client.close()
    return walls


def report(name: str, walls: list[float], floor_s: float = 0.0) -> bool:
    walls = [wall - floor_s for wall in walls]
    median, worst = statistics.median(walls), max(walls)
    ok = worst <= SLOWEST_S + TARGET_OVERHEAD_S
    print(
        f"{name:<28} median {median * 1000:7.1f} ms  max {worst * 1000:7.1f} ms  "
        f"over slowest: median +{(median - SLOWEST_S) * 1000:5.1f} ms, "
        f"max +{(worst - SLOWEST_S) * 1000:5.1f} ms  "
        f"ratio to slowest {worst / SLOWEST_S:.3f}  {'PASS' if ok else 'MISS'}"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    delays = ", ".join(f"{name} {delay:.1f} s" for name, delay in DELAYS_S.items())
    print(f"Three columns ({delays}); target: wall <= slowest + {TARGET_OVERHEAD_S * 1000:.0f} ms")
    sequential = sum(DELAYS_S.values())
    print(f"(one after another would take {sequential * 1000:.0f} ms)")
    ok = report("compare core", asyncio.run(core_walls(args.runs)))
    instant = gradio_walls(args.runs, dict.fromkeys(DELAYS_S, 0.0))
    floor = statistics.median(instant)
    print(
        f"gradio_client floor (instant backends): median {floor * 1000:.1f} ms, "
        f"min {min(instant) * 1000:.1f}, max {max(instant) * 1000:.1f} ms"
    )
    walls = gradio_walls(args.runs)
    report("gradio_client, raw", walls)
    ok = report("gradio_client, less floor", walls, floor) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
