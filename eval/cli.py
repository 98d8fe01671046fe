"""`python -m eval run|score|latency|compare|gate|gleu`: the harness from a terminal.

Exit status: 0 success, 1 a failed check (a gate, the latency target), 2 bad input.
"""

# The one dispatcher: every subcommand is a thin handler here over the library (`runner`,
# `scoring`, `latency`, `compare`, `gates`, `metrics.gleu`), each imported when its command
# runs, so `--help` and a bad command line answer without loading spaCy or pandas.

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from suggestions import LlamaRequest, Settings
from suggestions.backends import BACKEND_NAMES
from suggestions.errors import ConfigurationError

from .data import DatasetError, load_dataset
from .metrics.registry import LATENCY_TARGET_MS
from .pacing import MAX_PACED_TRIES
from .run_folder import REPORT_HTML, REPORT_MD, RunFolderError

DEFAULT_DATASET = Path(__file__).resolve().parent.parent / "datasets/eval/writing-eval-v1.jsonl"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        options = parser.parse_args(args)
    except SystemExit as exit_:  # argparse: 2 for bad arguments, 0 for --help
        return int(exit_.code or 0)
    try:
        return int(options.handler(options))
    except (DatasetError, ConfigurationError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="command")

    run = commands.add_parser("run", help="run backends over a dataset and score them")
    run.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    run.add_argument("--backends", default="custom,baseline,mock", help="comma-separated")
    run.add_argument(
        "--concurrency",
        type=_positive,
        default=4,
        help="requests in flight at most; halved while the server says it is overloaded",
    )
    run.add_argument(
        "--overload-tries",
        type=_positive,
        default=MAX_PACED_TRIES,
        help="asks per row while the server answers 503/429 or times out, each after a "
        f"pause (default {MAX_PACED_TRIES}; 1: record the first failure)",
    )
    run.add_argument("--limit", type=_positive, default=None, help="only the first K examples")
    run.add_argument("--out", type=Path, required=True, help="the run folder, e.g. runs/NAME")
    run.add_argument(
        "--resume",
        action="store_true",
        help="finish a killed run, asking again for rows that failed transiently "
        "(unavailable, rate_limited, timeout, interrupted)",
    )
    run.add_argument(
        "--keep-failures",
        action="store_true",
        help="with --resume: keep the rows that failed, ask only for those never asked",
    )
    run.add_argument("--no-progress", action="store_true")
    run.set_defaults(handler=_run)

    score = commands.add_parser("score", help="(re)compute metrics and reports of a run folder")
    score.add_argument("run", type=Path)
    score.set_defaults(handler=_score)

    latency = commands.add_parser("latency", help="latency percentiles and the P95 target")
    latency.add_argument("--backend", default="custom", choices=BACKEND_NAMES)
    latency.add_argument("--requests", type=_positive, default=200)
    latency.add_argument("--concurrency", type=_positive, default=4)
    latency.add_argument("--warmup", type=int, default=5)
    latency.add_argument(
        "--target-ms", type=float, default=LATENCY_TARGET_MS, help="P95 total, warm"
    )
    latency.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    latency.set_defaults(handler=_latency)

    gleu = commands.add_parser("gleu", help="corpus GLEU of files in JFLEG's layout")
    gleu.add_argument("--source", type=Path, required=True)
    gleu.add_argument("--references", type=Path, nargs="+", required=True)
    gleu.add_argument("--hypothesis", type=Path, required=True)
    gleu.add_argument("--iterations", type=_positive, default=500)
    gleu.add_argument("--sentences", action="store_true", help="also print sentence GLEU")
    gleu.set_defaults(handler=_gleu)

    compare = commands.add_parser(
        "compare",
        help="RUN_A RUN_B: metric deltas with bootstrap CIs",
        description="Paired bootstrap comparison of two eval runs (B against A).",
    )
    compare.add_argument("run_a", type=Path, metavar="RUN_A", help="the reference run folder")
    compare.add_argument("run_b", type=Path, metavar="RUN_B", help="the run compared with it")
    compare.add_argument("--iterations", type=_positive, default=2000, help="bootstrap resamples")
    compare.add_argument("--seed", type=int, default=0, help="bootstrap random seed")
    compare.set_defaults(handler=_compare)

    gate = commands.add_parser(
        "gate",
        help="RUN --config gates.toml: exit 1 on a regression",
        description="Check an eval run against the bounds of a gates TOML file.",
    )
    gate.add_argument("run", type=Path, metavar="RUN", help="the run folder to check")
    gate.add_argument("--config", type=Path, required=True, help="the gates TOML file")
    gate.set_defaults(handler=_gate)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _run(options: argparse.Namespace) -> int:
    from .runner import RunError, RunPlan, run
    from .scoring import score_run

    if options.keep_failures and not options.resume:
        print("error: --keep-failures applies to --resume only", file=sys.stderr)
        return 2
    names = tuple(dict.fromkeys(n.strip() for n in options.backends.split(",") if n.strip()))
    plan = RunPlan(
        dataset=options.dataset,
        backends=names,
        out=options.out,
        concurrency=options.concurrency,
        overload_tries=options.overload_tries,
        limit=options.limit,
        resume=options.resume,
        retry_failed=not options.keep_failures,
    )
    try:
        asyncio.run(run(plan, progress=not options.no_progress))
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = score_run(options.out)
    _print_summary(summary)
    print(f"\nreport: {options.out / REPORT_MD} and {REPORT_HTML}")
    return 0


def _score(options: argparse.Namespace) -> int:
    from .scoring import score_run

    _print_summary(score_run(options.run))
    return 0


def _print_summary(summary: dict[str, object]) -> None:
    """One line per backend, its error rate and attempts before its scores, and the do-nothing
    line last (failed rows are scored as the unedited source, so compare with it)."""
    backends = summary["backends"]
    assert isinstance(backends, dict)
    for name, data in backends.items():
        total = data["latency"]["total_ms"]
        p95 = total.get("p95")
        retried = f" ({data['retried']} retried)" if data.get("retried") else ""
        print(
            f"{name:15} {data['model_id']:32} errors {data['error_rate']:6.1%}  "
            f"attempts {data.get('attempts', data['examples'])}{retried}  "
            f"{_scores(data['metrics'])}  total P95 {'-' if p95 is None else f'{p95:.0f} ms'}"
        )
    unedited = summary.get("unedited_source")
    if isinstance(unedited, dict):
        print(f"{'unedited source':15} {'(do nothing)':32} {'':30}{_scores(unedited['metrics'])}")


def _scores(metrics: dict[str, float | None]) -> str:
    return ", ".join(
        f"{key} {value:.3f}"
        for key in ("gleu", "errant_f05", "meaning_similarity")
        if (value := metrics.get(key)) is not None
    )


def _latency(options: argparse.Namespace) -> int:
    from .latency import measure, table, warm_p95_total
    from .runner import build_eval_backends

    backend = build_eval_backends((options.backend,), Settings())[options.backend]
    examples = load_dataset(options.dataset)
    texts = [LlamaRequest(text=e.source, type=e.type) for e in examples]
    samples = asyncio.run(
        measure(
            backend,
            texts,
            requests=options.requests,
            concurrency=options.concurrency,
            warmup=options.warmup,
        )
    )
    print(f"{options.backend}: {backend.label} ({backend.model_id})")
    print(table(samples))
    p95 = warm_p95_total(samples)
    if p95 is None:
        print("no warm request succeeded", file=sys.stderr)
        return 1
    verdict = "meets" if p95 < options.target_ms else "BREACHES"
    print(f"\nwarm P95 total {p95:.0f} ms {verdict} the target of {options.target_ms:.0f} ms")
    return 0 if p95 < options.target_ms else 1


def _compare(options: argparse.Namespace) -> int:
    """The table, exit 0: a comparison is information, not a pass/fail (that is `gate`)."""
    from .compare import compare_runs, error_type_report, format_comparison

    try:
        deltas = compare_runs(
            options.run_a, options.run_b, iterations=options.iterations, seed=options.seed
        )
        types = error_type_report(options.run_a, options.run_b)
    except RunFolderError as error:
        print(f"compare: {error}", file=sys.stderr)
        return 2
    print(format_comparison(deltas))
    if types:
        print(f"\n{types}")
    return 0


def _gate(options: argparse.Namespace) -> int:
    """Exit 0 when every check passes, 1 when one fails, 2 for a bad gates file or run."""
    from .gates import GateConfigError, format_gates, load_gates, run_gates

    try:
        results = run_gates(options.run, load_gates(options.config))
    except (GateConfigError, RunFolderError) as error:
        print(f"gate: {error}", file=sys.stderr)
        return 2
    print(format_gates(results))
    return 0 if all(r.passed for r in results) else 1


def _gleu(options: argparse.Namespace) -> int:
    from .metrics.gleu import corpus_gleu, sentence_gleu

    sources = options.source.read_text(encoding="utf-8").splitlines()
    hypotheses = options.hypothesis.read_text(encoding="utf-8").splitlines()
    references = [path.read_text(encoding="utf-8").splitlines() for path in options.references]
    per_sentence = [list(refs) for refs in zip(*references, strict=True)]
    if not (len(sources) == len(hypotheses) == len(per_sentence)):
        raise ValueError(
            f"line counts differ: source {len(sources)}, hypothesis {len(hypotheses)}, "
            f"references {len(per_sentence)}"
        )
    if options.sentences:
        for index, (s, h, refs) in enumerate(zip(sources, hypotheses, per_sentence, strict=True)):
            print(f"{index}\t{sentence_gleu(s, h, refs):.6f}")
    result = corpus_gleu(sources, hypotheses, per_sentence, iterations=options.iterations)
    print(f"{result.mean:.6f}\t(std {result.std:.6f} over {result.iterations} iterations)")
    return 0
