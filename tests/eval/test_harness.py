"""The eval harness: GLEU against hand-computed statistics and JFLEG's published source scores,
ERRANT on known edits, the dataset loaders, the runner (resume after a kill, end to end against
the model service), the reports, and the latency check."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from eval.cli import main as eval_main
from eval.data import DatasetError, load_dataset
from eval.metrics.errant_f05 import edits, errant_scores, f_beta
from eval.metrics.gleu import corpus_gleu, gleu_from_stats, sentence_gleu, sentence_stats
from eval.metrics.latency import percentile, percentiles

JFLEG = next(
    (
        path
        for path in (
            Path(os.environ.get("JFLEG_DIR", "/nonexistent")),
            Path(__file__).resolve().parents[3] / "shared" / "data" / "jfleg",
            Path("/work/shared/data/jfleg"),
        )
        if path.is_dir()
    ),
    Path("/nonexistent"),
)
"""JFLEG is read where it lies (its licence keeps it out of this repository): $JFLEG_DIR, or
the shared data folder beside the checkout."""
OUR_DATASET = Path(__file__).resolve().parents[2] / "datasets" / "eval" / "writing-eval-v1.jsonl"


# --- GLEU ------------------------------------------------------------------------------------


def test_gleu_statistics_of_a_short_example_by_hand() -> None:
    source, hypothesis, reference = ["a", "b", "c", "d"], ["a", "b", "e", "d"], ["a", "x", "e", "d"]
    # n=1: h∩r = {a, e, d} = 3; source n-grams the reference lacks: {b, c}; h keeps b: 3-1 = 2
    # n=2: h = {ab, be, ed}; h∩r = {ed} = 1; source-only {ab, bc, cd}; h keeps ab: 1-1 = 0
    # n=3: h = {abe, bed}, r = {axe, xed}: 0 matches;  n=4: 0 matches
    assert sentence_stats(source, hypothesis, reference) == [4, 4, 2, 4, 0, 3, 0, 2, 0, 1]
    stats = sentence_stats(source, hypothesis, reference)
    assert gleu_from_stats(stats) == 0.0  # a zero count and no smoothing
    smoothed = math.exp((math.log(2 / 4) + math.log(1 / 3) + math.log(1 / 2) + math.log(1)) / 4)
    assert gleu_from_stats(stats, smooth=True) == pytest.approx(smoothed)
    assert sentence_gleu("a b c d", "a b e d", ["a x e d"]) == pytest.approx(smoothed)


def test_gleu_brevity_penalty_and_perfect_match() -> None:
    # hypothesis 3 tokens, reference 4: penalty exp(1 - 4/3)
    stats = [3, 4, 3, 3, 2, 2, 1, 1, 1, 1]
    assert gleu_from_stats(stats) == pytest.approx(math.exp(1 - 4 / 3))
    result = corpus_gleu(["x y z w"], ["a b c d"], [["a b c d"]])
    assert result.mean == 1.0 and result.iterations == 1


def test_gleu_samples_one_reference_per_sentence_with_the_scripts_seeds() -> None:
    sources = ["the cat sit on mat", "he go to school", "i has a apple"]
    hypotheses = ["the cat sat on the mat", "he goes to school", "i have an apple"]
    references = [
        ["the cat sat on the mat", "the cat sits on the mat"],
        ["he goes to school", "he went to school"],
        ["i have an apple", "i had an apple"],
    ]
    result = corpus_gleu(sources, hypotheses, references, iterations=3)
    expected = []
    for j in range(3):
        rng = random.Random(j * 101)  # the script: random.seed(j * 101), then Python 2's
        picks = [int(rng.random() * 2) for _ in hypotheses]  # randint(0, 1), int(random() * 2)
        totals = [0] * 10
        for s, h, refs, r in zip(sources, hypotheses, references, picks, strict=True):
            stats = sentence_stats(s.split(), h.split(), refs[r].split())
            totals = [a + b for a, b in zip(totals, stats, strict=True)]
        expected.append(gleu_from_stats(totals))
    assert result.mean == pytest.approx(sum(expected) / 3)
    assert result.iterations == 3


@pytest.mark.skipif(not JFLEG.exists(), reason="JFLEG is not beside this checkout")
@pytest.mark.parametrize(("split", "published"), [("dev", 0.3821), ("test", 0.4054)])
def test_the_unedited_jfleg_source_scores_as_published(split: str, published: float) -> None:
    examples = load_dataset(JFLEG / split / f"{split}.src")
    result = corpus_gleu(
        [e.source for e in examples], [e.source for e in examples], [e.references for e in examples]
    )
    assert result.mean == pytest.approx(published, abs=5e-5)  # JFLEG's README: 38.21, 40.54


def test_the_gleu_cli_reads_jfleg_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.src").write_text("he go home .\nshe are here .\n")
    (tmp_path / "x.ref0").write_text("he goes home .\nshe is here .\n")
    (tmp_path / "x.ref1").write_text("he went home .\nshe is here .\n")
    (tmp_path / "hyp").write_text("he goes home .\nshe is here .\n")
    args = ["gleu", "--source", str(tmp_path / "x.src"), "--hypothesis", str(tmp_path / "hyp")]
    refs = ["--references", str(tmp_path / "x.ref0"), str(tmp_path / "x.ref1")]
    assert eval_main([*args, *refs]) == 0
    printed = capsys.readouterr().out
    expected = corpus_gleu(
        ["he go home .", "she are here ."],
        ["he goes home .", "she is here ."],
        [["he goes home .", "he went home ."], ["she is here .", "she is here ."]],
    )
    assert printed.startswith(f"{expected.mean:.6f}")


# --- ERRANT -----------------------------------------------------------------------------------


def test_errant_finds_and_types_known_edits() -> None:
    found = edits(
        "She go to school yesterday and buyed a books.",
        "She went to school yesterday and bought a book.",
    )
    assert found == {
        (1, 2, "went"): "R:VERB:TENSE",
        (6, 7, "bought"): "R:VERB:INFL",
        (8, 9, "book"): "R:NOUN:NUM",
    }


def test_errant_scores_against_the_best_reference() -> None:
    source = "She go to school yesterday and buyed a books."
    hypothesis = "She went to school yesterday and buy a book."  # 2 right, 1 wrong edit
    references = [
        "She went to school yesterday and bought a book.",
        "She goes to school and buys books.",
    ]
    corpus, per_sentence = errant_scores([source], [hypothesis], [references])
    assert (corpus.tp, corpus.fp, corpus.fn) == (2, 1, 1)  # the first reference fits better
    precision, recall, f05 = corpus.scores()
    assert (precision, recall) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert f05 == pytest.approx(2 / 3)
    assert corpus.type_table()["R:VERB:INFL"]["fp"] == 1
    assert per_sentence[0].tp == 2


def test_f_beta_by_hand() -> None:
    precision, recall, f = f_beta(1, 1, 2)
    assert (precision, recall) == (0.5, pytest.approx(1 / 3))
    assert f == pytest.approx(1.25 * 0.5 * (1 / 3) / (0.25 * 0.5 + 1 / 3))
    assert f_beta(0, 0, 0) == (1.0, 1.0, 1.0)  # nothing to do, nothing done


# --- Datasets ---------------------------------------------------------------------------------


def test_our_eval_set_meets_its_data_card() -> None:
    examples = load_dataset(OUR_DATASET)
    assert len(examples) >= 150
    for kind in ("grammar", "clarity", "style"):
        assert sum(e.type == kind for e in examples) >= 50
    assert all(1 <= len(e.references) <= 3 for e in examples)


def test_loaders_for_each_layout(tmp_path: Path) -> None:
    coedit = tmp_path / "coedit.jsonl"
    rows = [
        {"_id": "1", "task": "gec", "src": "Fix grammar: He go home.", "tgt": "He goes home."},
        {"_id": "2", "task": "coherence", "src": "Make it coherent: A. B.", "tgt": "A, so B."},
        {"_id": "3", "task": "simplification", "src": "Simplify: X.", "tgt": "Y."},
        {"_id": "4", "task": "formality", "src": "Write formally: hey there", "tgt": "Hello."},
    ]
    coedit.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    loaded = load_dataset(coedit)
    assert [(e.id, e.type, e.source) for e in loaded] == [
        ("1", "grammar", "He go home."),
        ("2", "clarity", "A. B."),
        ("4", "style", "hey there"),
    ]
    table = tmp_path / "rows.csv"
    table.write_text("id,type,source,reference_1,reference_2\na,clarity,Long text.,Short.,\n")
    assert load_dataset(table)[0].references == ("Short.",)
    (tmp_path / "p.src").write_text("one\ntwo\n")
    (tmp_path / "p.ref0").write_text("One\nTwo\n")
    (tmp_path / "p.ref1").write_text("One.\nTwo.\n")
    parallel = load_dataset(tmp_path / "p.src")
    assert [(e.id, e.references) for e in parallel] == [
        ("p-1", ("One", "One.")),
        ("p-2", ("Two", "Two.")),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"id": "a", "type": "grammar", "source": "x"}\n{"id": "b", "type": "poetry", '
            '"source": "y"}\n',
            ":2: type",
        ),
        ('{"id": "a", "type": "grammar", "source": "x"}\nnot json\n', ":2: not valid JSON"),
        ('{"id": "a", "type": "grammar", "source": "  "}\n', ":1: source"),
        ('{"id": "a", "type": "grammar", "source": "x"}\n' * 2, "appears twice"),
    ],
)
def test_invalid_rows_are_reported_with_their_line(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


# --- Runner, resume, reports, gate -----------------------------------------------------------


def _small_dataset(path: Path, count: int) -> Path:
    rows = [
        {
            "id": f"g{i}",
            "type": "grammar",
            "source": f"She go to school {i} times.",
            "references": [f"She goes to school {i} times.", f"She went to school {i} times."],
        }
        for i in range(count)
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


KILLABLE_RUN = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from eval.runner import RunPlan, run
    from suggestions.backends.mock import MockBackend

    plan = RunPlan(dataset=Path(sys.argv[1]), backends=("mock",), out=Path(sys.argv[2]),
                   concurrency=2, resume=len(sys.argv) > 3)
    slow = {"mock": MockBackend(delay_s=0.02)}
    asyncio.run(run(plan, backends=slow, progress=False))
    """
)


def test_a_killed_run_resumes_without_redoing_or_duplicating(tmp_path: Path) -> None:
    dataset = _small_dataset(tmp_path / "d.jsonl", 40)
    out = tmp_path / "run"
    script = tmp_path / "run.py"
    script.write_text(KILLABLE_RUN)
    process = subprocess.Popen([sys.executable, str(script), str(dataset), str(out)])
    predictions = out / "predictions.jsonl"
    deadline = time.monotonic() + 60
    while not (predictions.exists() and len(predictions.read_text().splitlines()) >= 8):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    process.kill()
    process.wait()
    before = len(predictions.read_text().splitlines())
    assert 8 <= before < 40
    with open(predictions, "a") as torn:  # a line cut off by the kill
        torn.write('{"example_id": "g39", "backend": "mo')
    subprocess.run([sys.executable, str(script), str(dataset), str(out), "resume"], check=True)
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert sorted(row["example_id"] for row in rows) == sorted(f"g{i}" for i in range(40))
    assert all(row["ok"] for row in rows)


def test_a_run_folder_is_not_overwritten_without_resume(tmp_path: Path) -> None:
    dataset = _small_dataset(tmp_path / "d.jsonl", 2)
    out = tmp_path / "run"
    args = ["run", "--dataset", str(dataset), "--backends", "mock", "--out", str(out)]
    assert eval_main([*args, "--no-progress"]) == 0
    assert eval_main([*args, "--no-progress"]) == 2


@pytest.fixture(scope="module")
def served_tiny_model(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from modal_backend.serving.engines.transformers_engine import TransformersEngine
    from tests.model_service_support import running_service, tiny_model_dir

    folder = tiny_model_dir(tmp_path_factory.mktemp("models"), "taught")
    with running_service(TransformersEngine.load(folder, model_id="tiny-taught")) as url:
        yield url


def test_the_runner_end_to_end_against_the_model_service(
    served_tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.model_service_support import API_KEY

    monkeypatch.setenv("MODAL_LLAMA_URL", served_tiny_model)
    monkeypatch.setenv("MODAL_API_KEY", API_KEY)
    monkeypatch.setenv("MODAL_LLAMA_MODEL", "tiny-taught")
    dataset = tmp_path / "d.jsonl"
    dataset.write_text(
        json.dumps(
            {
                "id": "t1",
                "type": "grammar",
                "source": "She go to school yesterday.",
                "references": ["She went to school yesterday."],
            }
        )
        + "\n"
    )
    out = tmp_path / "runs" / "tiny"
    argv = ["run", "--dataset", str(dataset), "--backends", "custom,mock", "--out", str(out)]
    assert eval_main([*argv, "--no-progress"]) == 0
    predictions = [
        json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()
    ]
    custom = next(row for row in predictions if row["backend"] == "custom")
    assert custom["prediction"] == "She went to school yesterday."
    assert custom["model_id"] == "tiny-taught" and custom["ttft_ms"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backends"]["custom"]["metrics"]["gleu"] == pytest.approx(1.0)
    assert summary["backends"]["custom"]["metrics"]["errant_f05"] == pytest.approx(1.0)
    config = json.loads((out / "config.json").read_text())
    assert config["backends"]["custom"]["model_id"] == "tiny-taught"
    assert len(config["dataset_sha256"]) == 64 and config["code_version"]
    for name in ("metrics.csv", "metrics.parquet", "report.md", "report.html"):
        assert (out / name).stat().st_size > 0
    import matplotlib.image

    for plot in ("scores.png", "latency_cdf.png", "errant_types.png"):
        image = matplotlib.image.imread(out / "plots" / plot)
        assert image.shape[0] > 100 and image.shape[1] > 100
    assert "plots/latency_cdf.png" in (out / "report.md").read_text()
    assert "data:image/png;base64," in (out / "report.html").read_text()

    from eval.gates import EXAMPLE_GATES

    gates = tmp_path / "gates.toml"
    gates.write_text(EXAMPLE_GATES)
    assert eval_main(["gate", str(out), "--config", str(gates)]) == 0
    gates.write_text('[[check]]\nbackend = "custom"\nmetric = "gleu"\nmin = 1.5\n')
    assert eval_main(["gate", str(out), "--config", str(gates)]) == 1


# --- Latency ----------------------------------------------------------------------------------


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentiles(values) == {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}
    assert percentile([5.0], 99) == 5.0


def test_latency_cli_checks_the_p95_target(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["latency", "--backend", "mock", "--requests", "12", "--warmup", "2"]
    assert eval_main([*base, "--target-ms", "60000"]) == 0
    printed = capsys.readouterr().out
    assert "cold" in printed and "warm" in printed and "meets the target" in printed
    assert eval_main([*base, "--target-ms", "0.0001"]) == 1
    assert "BREACHES" in capsys.readouterr().out


def test_measure_tells_cold_from_warm() -> None:
    from eval.latency import measure
    from suggestions import LlamaRequest
    from suggestions.backends.mock import MockBackend

    texts = [LlamaRequest(text="She go home.", type="grammar")]
    samples = asyncio.run(
        measure(MockBackend(delay_s=0.001), texts, requests=6, concurrency=3, warmup=2)
    )
    assert [s.cold for s in samples].count(True) == 2
    assert len(samples) == 8 and all(s.ok for s in samples)


def test_no_test_here_needs_the_network() -> None:
    assert os.environ.get("HF_HUB_OFFLINE") in (None, "1")


def test_metrics_load_as_local_evaluate_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    modules = Path(__file__).resolve().parents[2] / "eval" / "evaluate_modules"
    sources = ["he go home .", "she are here ."]
    predictions = ["he goes home .", "she is here ."]
    references = [["he goes home .", "he went home ."], ["she is here .", "she was here ."]]
    gleu = evaluate.load(str(modules / "jfleg_gleu"))
    result = gleu.compute(sources=sources, predictions=predictions, references=references)
    assert result["gleu"] == pytest.approx(corpus_gleu(sources, predictions, references).mean)
    errant = evaluate.load(str(modules / "errant_f05"))
    scored = errant.compute(sources=sources, predictions=predictions, references=references)
    assert scored["f0.5"] == pytest.approx(1.0)
    clarity = evaluate.load(str(modules / "clarity"))
    wordy = clarity.compute(
        sources=["Due to the fact that it rained, we left in order to stay dry."],
        predictions=["It rained, so we left to stay dry."],
    )
    assert wordy["wordiness_delta"] == -2
    style = evaluate.load(str(modules / "style"))
    kept = style.compute(sources=["He left."], predictions=["He left."], references=[["He left."]])
    assert kept["meaning_similarity"] > 0.999 and kept["edit_rate_source"] == 0


def test_the_shipped_gate_file_is_the_documented_example() -> None:
    from eval.gates import EXAMPLE_GATES, load_gates

    shipped = Path(__file__).resolve().parents[2] / "eval" / "gates.toml"
    assert shipped.read_text() == EXAMPLE_GATES
    assert {check.metric for check in load_gates(shipped).checks} >= {"latency.total_ms.p95"}


def test_predictions_are_scored_in_dataset_order_whatever_order_they_finished(
    tmp_path: Path,
) -> None:
    from eval.run_folder import read_predictions

    rows = [{"index": i, "example_id": f"e{i}", "backend": b} for i in (2, 0, 1) for b in "ba"]
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ordered = [(row["index"], row["backend"]) for row in read_predictions(tmp_path)]
    assert ordered == [(0, "a"), (0, "b"), (1, "a"), (1, "b"), (2, "a"), (2, "b")]


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--backends", "mock", "--concurrency", "0", "--out", "x"],
        ["run", "--backends", "mock"],
        ["latency", "--requests", "0"],
        ["run", "--dataset", "missing.jsonl", "--backends", "mock", "--out", "x"],
        ["run", "--backends", "mock", "--out", "x", "--keep-failures"],  # without --resume
    ],
)
def test_bad_command_lines_exit_2(argv: list[str]) -> None:
    assert eval_main(argv) == 2


def test_failed_requests_count_in_the_latency_check() -> None:
    from eval.latency import Sample, warm_p95_total

    samples = [Sample(False, True, 10.0, 100.0)] * 10 + [Sample(False, False, None, 30_000.0)]
    assert warm_p95_total(samples) == 30_000.0
