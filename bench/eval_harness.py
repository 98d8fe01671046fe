"""The eval harness's own speed, measured in one run on this machine.

    python bench/eval_harness.py [--examples 175]

1. Overhead: our eval set through the runner against a mock backend with no delay, then scored
   (clarity, style, sentence GLEU, ERRANT and corpus GLEU; the MiniLM embeddings are left out,
   as they are a model's cost, not the harness's). Target: at least 200 examples a second.
2. Concurrency: a backend that takes 200 ms an answer, at concurrency 8 against 1. Target: at
   least 6 times the throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from eval.cli import DEFAULT_DATASET
from eval.data import load_dataset, write_jsonl
from eval.metrics import nlp
from eval.metrics.errant_f05 import errant_scores
from eval.metrics.nlp import prefetch
from eval.run_folder import read_predictions
from eval.runner import RunPlan, run
from eval.scoring import GleuTokens, example_metrics, grammar_corpus_gleu
from suggestions.backends.mock import MockBackend


async def run_once(dataset: Path, out: Path, backend: MockBackend, concurrency: int) -> float:
    plan = RunPlan(dataset=dataset, backends=("mock",), out=out, concurrency=concurrency)
    started = time.perf_counter()
    await run(plan, backends={"mock": backend}, progress=False)
    return time.perf_counter() - started


def score_without_embeddings(folder: Path) -> tuple[int, float]:
    rows = [row for row in read_predictions(folder) if row.get("ok")]
    started = time.perf_counter()
    prefetch(
        text for row in rows for text in (row["source"], row["prediction"], *row["references"])
    )
    for row in rows:
        example_metrics(row, GleuTokens())
    grammar = [row for row in rows if row["type"] == "grammar" and row["references"]]
    errant_scores(
        [r["source"] for r in grammar],
        [r["prediction"] for r in grammar],
        [r["references"] for r in grammar],
    )
    grammar_corpus_gleu(grammar, GleuTokens())
    return len(rows), time.perf_counter() - started


async def main(examples: int) -> None:
    rows = load_dataset(DEFAULT_DATASET)
    rows = (rows * (examples // len(rows) + 1))[:examples]
    rows = [row.model_copy(update={"id": f"{row.id}-{i}"}) for i, row in enumerate(rows)]
    with tempfile.TemporaryDirectory() as work:
        dataset = Path(work) / "set.jsonl"
        write_jsonl(rows, dataset)
        # Load the spaCy pipeline and ERRANT once, outside the timings (on other texts, so
        # that the parse cache does not flatter the measured run).
        warm_rows = rows[:5]
        write_jsonl(warm_rows, dataset)
        await run_once(dataset, Path(work) / "warm", MockBackend(), 8)
        score_without_embeddings(Path(work) / "warm")
        nlp._parsed.clear()
        write_jsonl(rows, dataset)

        run_s = await run_once(dataset, Path(work) / "fast", MockBackend(), 8)
        scored, score_s = score_without_embeddings(Path(work) / "fast")
        total = run_s + score_s
        print(f"overhead: {scored} examples, run {run_s:.2f} s + score {score_s:.2f} s")
        print(
            f"  {scored / total:.0f} examples/s end to end (target >= 200: "
            f"{'meets' if scored / total >= 200 else 'MISSES'}); runner alone "
            f"{scored / run_s:.0f}/s, scoring alone {scored / score_s:.0f}/s"
        )

        slow = rows[:48]
        write_jsonl(slow, dataset)
        timings = {}
        for concurrency in (1, 8):
            backend = MockBackend(first_token_delay_s=0.2)
            out = Path(work) / f"slow-{concurrency}"
            timings[concurrency] = await run_once(dataset, out, backend, concurrency)
        speedup = timings[1] / timings[8]
        print(
            f"concurrency: 48 answers of 200 ms: {timings[1]:.2f} s at 1, {timings[8]:.2f} s at 8"
        )
        print(f"  speed-up {speedup:.2f}x (target >= 6: {'meets' if speedup >= 6 else 'MISSES'})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=175)
    asyncio.run(main(parser.parse_args().examples))
