"""The GPU probe: what a lent GPU machine can tell about this project, in one command, as JSON.

On the device (CUDA torch, transformers and peft there; the rest comes from `make gpu-bundle`,
carried along as `build/gpu-bundle`):

    PYTHONUNBUFFERED=1 python3 scripts/gpu_probe.py --bundle build/gpu-bundle --out $OUT/probe.json

`--levels`, `--repeats`, `--tokens` and `--skip decode,server,train` make it shorter.

On a CPU, with a tiny model (what the tests run):

    python scripts/gpu_probe.py --device cpu --out /tmp/probe.json

Sections, each written to the JSON as soon as it is done (a failing one is recorded under
`errors` and the others still run):

- `bundle`: the bundle's wheels installed with `pip --no-index` into this environment (torch,
  transformers, peft and accelerate are held at their installed versions), or into a
  `--target` folder when the environment refuses.
- `model`: a Llama-3.1-8B-shaped model built from a config in bf16 with random weights (no
  download) and the real Llama-3 tokenizer from the bundle with our chat template; on a CPU,
  the tiny test Llama.
- `decode`: the same greedy generation (a 60-word paragraph through our prompt contract,
  `--tokens` new tokens) run every way that could explain why the engine is slower in a worker
  thread than in the main thread: plain `model.generate`, with our streamer and stopping
  criteria, under `inference_mode`, `_generate` itself, in a new thread (once, twice, with the
  engine's thread set-up), through `ThreadedStream` with a thread of its own (the old engine
  path) and through the engine's long-lived threads (the engine's path now); `contention` adds
  the main thread busy in Python at two GIL switch intervals. Each row has tokens/s and, for
  the thread that generated, CPU seconds, context switches and page faults per token, so a
  slow row shows whether that thread computed more or waited more. `op_counts` compares the
  torch operators a short generation dispatches in the main thread and in the engine's
  thread. Every row must produce the same text.
- `server`: our server (FastAPI, admission, SSE) with the transformers engine, on loopback,
  driven by a client in another process: first-token and total time P50/P95 at concurrency
  1, 4 and 16; then concurrency 1 again with generation in this process's main thread
  (`GenerationThreads.work_here`) while the server runs in its thread.
- `train`: the training pipeline on this device with the PEFT backend, end to end on a small
  Llama (data, LoRA SFT, adapter + merged weights, the merge and end-of-turn checks), then the
  merged weights served by the engine must give the answer they were taught.

Exit status 0 when every section ran and every check held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parents[1]
for folder in (Path(__file__).resolve().parent, SOURCE):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import gpu_probe_decode as decode  # noqa: E402  (stdlib only at import: safe before the bundle)
import gpu_probe_load as load  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PARAGRAPH = (
    "Last summer me and my brother goes to the coast for a week. The weather were warm, and "
    "we spends most days walking on the beach and reading books that we have bring from home. "
    "One evening a storm come in very sudden, so we runs back to the cabin, but our clothes "
    "was already wet. Still, it were the best holiday we has ever had together."
)
"""Sixty words with errors to correct: the probe's request (a paragraph, as authors send)."""

HELD = ("torch", "transformers", "peft", "accelerate", "tokenizers", "safetensors", "numpy")
"""Distributions the bundle's install must leave as they are."""

LLAMA31_8B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_parameters": {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "tie_word_embeddings": False,
}
TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": False,
}
SHAPES = {"llama3-8b": LLAMA31_8B, "tiny": TINY}


# -- the command line --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="the folder `make gpu-bundle` wrote")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON goes")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="default: llama3-8b on CUDA")
    parser.add_argument("--tokenizer", type=Path, help="a tokenizer folder (default: bundle's)")
    parser.add_argument("--tokens", type=int, default=100, help="new tokens per request")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per decode row")
    parser.add_argument(
        "--levels",
        default="1:4,4:8,16:16",
        help="server load as CONCURRENCY:REQUESTS pairs (default 1:4,4:8,16:16)",
    )
    parser.add_argument("--main-thread-requests", type=int, default=3)
    parser.add_argument("--train-steps", type=int, help="default: 80 on CUDA, 100 on CPU")
    parser.add_argument(
        "--skip", default="", help="sections to leave out, comma-separated: decode,server,train"
    )
    parser.add_argument("--work", type=Path, help="keep the probe's files here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--model-id", help=argparse.SUPPRESS)
    parser.add_argument("--messages", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.client:
        return load.client_main(options)
    return Probe(options).run()


class Probe:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.skip = {part.strip() for part in options.skip.split(",") if part.strip()}
        self.results: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.errors: dict[str, str] = {}
        self.failures: list[str] = []
        self.work = options.work or Path(tempfile.mkdtemp(prefix="gpu-probe-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.pythonpath = [str(SOURCE)]

    def save(self) -> None:
        self.results["errors"] = self.errors
        self.results["failures"] = self.failures
        out = self.options.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.results, indent=2, default=str) + "\n")

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        print(f"[probe] {name} ...", flush=True)
        try:
            yield
        except Exception:
            self.errors[name] = traceback.format_exc(limit=12)
            print(self.errors[name], file=sys.stderr, flush=True)
        finally:
            took = round(time.perf_counter() - started, 2)
            self.results.setdefault("section_seconds", {})[name] = took
            print(f"[probe] {name} done in {took} s", flush=True)
            self.save()

    def run(self) -> int:
        options = self.options
        with self.section("bundle"):
            self.results["bundle"] = (
                install_bundle(options.bundle, self.work) if options.bundle else {"used": False}
            )
            target = self.results["bundle"].get("target")
            if target:
                self.pythonpath.insert(0, target)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [*self.pythonpath, *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        import torch

        cuda = torch.cuda.is_available() and options.device != "cpu"
        if options.device == "cuda" and not cuda:
            self.errors["device"] = "--device cuda, but torch sees no CUDA device"
            self.save()
            return 1
        self.device = "cuda" if cuda else "cpu"
        if not cuda:
            torch.set_num_threads(1)  # a shared CPU: one thread is faster (see DESIGN.md)
        self.results["environment"] = environment(self.device)
        self.save()

        engine = None
        with self.section("model"):
            engine, self.results["model"] = build_engine(
                options.shape or ("llama3-8b" if cuda else "tiny"),
                self.tokenizer_folder(),
                self.device,
                self.work,
                options.seed,
            )
        messages = probe_messages()
        if engine is not None and "decode" not in self.skip:
            with self.section("decode"):
                self.results["decode"] = decode.decode_section(
                    engine, messages, options.tokens, options.repeats, self.failures
                )
        if engine is not None and "server" not in self.skip:
            with self.section("server"):
                self.results["server"] = self.server_section(engine, messages)
        if engine is not None:
            engine.close()
            del engine
            release_memory()
        if "train" not in self.skip:
            with self.section("train"):
                self.results["train"] = load.train_section(
                    self.work / "train", self.device, options.train_steps, self.failures
                )
        self.results["summary"] = summary(self.results)
        self.results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.save()
        print(json.dumps(self.results["summary"], indent=2), flush=True)
        ok = not self.errors and not self.failures
        print("gpu probe:", "passed" if ok else "FAILED", flush=True)
        return 0 if ok else 1

    def tokenizer_folder(self) -> Path | None:
        if self.options.tokenizer:
            return Path(self.options.tokenizer)
        if self.options.bundle and (self.options.bundle / "tokenizer").is_dir():
            return Path(self.options.bundle) / "tokenizer"
        return None

    def server_section(self, engine: Any, messages: list[dict[str, str]]) -> dict[str, Any]:
        levels = [tuple(int(x) for x in pair.split(":")) for pair in self.options.levels.split(",")]
        return load.server_section(
            engine,
            messages,
            work=self.work,
            tokens=self.options.tokens,
            levels=levels,  # type: ignore[arg-type]
            main_thread_requests=self.options.main_thread_requests,
            failures=self.failures,
        )


# -- the bundle --------------------------------------------------------------------------------


def install_bundle(bundle: Path, work: Path) -> dict[str, Any]:
    """Install the bundle's wheels without an index; torch and friends stay as they are."""
    from importlib import metadata

    bundle = bundle.resolve()
    wheels = bundle / "wheels"
    requirements = bundle / "requirements.txt"
    if not wheels.is_dir() or not requirements.is_file():
        raise FileNotFoundError(f"{bundle} is not a gpu bundle (no wheels/ or requirements.txt)")
    held = {}
    for name in HELD:
        with contextlib.suppress(metadata.PackageNotFoundError):
            held[name] = metadata.version(name)
    work.mkdir(parents=True, exist_ok=True)
    constraints = work / "constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in held.items()))
    base = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels)]
    base += ["--disable-pip-version-check", "--no-input", "-c", str(constraints)]
    base += ["-r", str(requirements)]
    started = time.perf_counter()
    attempt = subprocess.run(base, capture_output=True, text=True)
    result: dict[str, Any] = {"used": True, "bundle": str(bundle), "held": held}
    if attempt.returncode == 0:
        result["method"] = "pip install --no-index into this environment"
    else:
        target = work / "site"
        retry = subprocess.run([*base, "--target", str(target)], capture_output=True, text=True)
        if retry.returncode != 0:
            raise RuntimeError(
                "the bundle's wheels did not install:\n"
                + attempt.stderr[-2000:]
                + "\n--- with --target ---\n"
                + retry.stderr[-2000:]
            )
        sys.path.insert(0, str(target))
        result["method"] = "pip install --no-index --target (this environment refused)"
        result["target"] = str(target)
        result["refused_because"] = attempt.stderr[-600:]
    import importlib

    importlib.invalidate_caches()
    result["seconds"] = round(time.perf_counter() - started, 2)
    after = {}
    for name in HELD:
        with contextlib.suppress(metadata.PackageNotFoundError):
            after[name] = metadata.version(name)
    result["held_unchanged"] = after == held
    if after != held:
        raise RuntimeError(f"the install changed held packages: {held} -> {after}")
    manifest = bundle / "MANIFEST.json"
    if manifest.is_file():
        result["manifest"] = json.loads(manifest.read_text())
    return result


# -- the environment and the model ------------------------------------------------------------


def environment(device: str) -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "kernel": platform.release(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
        "cpu_count": os.cpu_count(),
        "affinity_main_thread": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "torch_threads": torch.get_num_threads(),
        "switch_interval_s": sys.getswitchinterval(),
        "env": {
            key: os.environ.get(key)
            for key in ("OMP_NUM_THREADS", "CUDA_MODULE_LOADING", "PYTORCH_CUDA_ALLOC_CONF")
        },
    }
    for name in ("peft", "accelerate", "fastapi", "pydantic", "uvicorn"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except ImportError:
            info[name] = None
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=".".join(map(str, torch.cuda.get_device_capability(0))),
            cuda=torch.version.cuda,
        )
    return info


def probe_messages() -> list[dict[str, str]]:
    from suggestions import LlamaRequest
    from suggestions.prompts import build_messages

    request = LlamaRequest(text=PARAGRAPH, type="grammar")
    return [{"role": m["role"], "content": str(m["content"])} for m in build_messages(request)]


def build_engine(
    shape: str, tokenizer_folder: Path | None, device: str, work: Path, seed: int
) -> tuple[Any, dict[str, Any]]:
    """The engine on a model built from a config (random weights, nothing downloaded)."""
    import torch

    from modal_backend.serving.engines.transformers_engine import TransformersEngine

    started = time.perf_counter()
    if tokenizer_folder is None:
        if shape != "tiny":
            raise FileNotFoundError(
                f"the {shape} shape needs the real Llama-3 tokenizer: pass --bundle (from "
                "`make gpu-bundle`) or --tokenizer"
            )
        from modal_backend.serving.testing import build_tiny_llama

        folder = build_tiny_llama(work / "tiny-llama", seed=seed)  # rambles to max_tokens
        engine = TransformersEngine.load(folder, model_id="probe-tiny", version="random")
        info: dict[str, Any] = {"tokenizer": "the tiny test tokenizer (serving.testing)"}
    else:
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tokenizer: Any = AutoTokenizer.from_pretrained(tokenizer_folder, local_files_only=True)
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"the tokenizer in {tokenizer_folder} has no chat template")

        def ids(token: str) -> int:
            return int(tokenizer.convert_tokens_to_ids(token))

        config = LlamaConfig(
            vocab_size=len(tokenizer),
            bos_token_id=ids("<|begin_of_text|>"),
            eos_token_id=[ids("<|end_of_text|>"), ids("<|eom_id|>"), ids("<|eot_id|>")],
            **SHAPES[shape],  # type: ignore[arg-type]
        )
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        torch.manual_seed(seed)
        with torch.device(device):
            model = LlamaForCausalLM._from_config(config, dtype=dtype)  # type: ignore[no-untyped-call]
        model.eval()
        model.generation_config.eos_token_id = config.eos_token_id
        engine = TransformersEngine(model, tokenizer, model_id=f"probe-{shape}", version="random")
        info = {"tokenizer": str(tokenizer_folder), "vocab": len(tokenizer)}
    model = engine.model
    info.update(
        shape=shape,
        parameters=sum(p.numel() for p in model.parameters()),
        dtype=str(next(model.parameters()).dtype),
        device=str(model.device),
        stop_token_ids=list(engine.stop_token_ids),
        build_s=round(time.perf_counter() - started, 2),
    )
    if device == "cuda":
        info["gpu_allocated_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
    return engine, info


def release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- the summary ---------------------------------------------------------------------------------


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The numbers the README and the issue need, read from the sections."""
    out: dict[str, Any] = {"device": results.get("environment", {}).get("gpu", "cpu")}
    rows = results.get("decode", {}).get("rows", {})
    if rows:
        main = rows["main_generate"]["tok_s"]
        out["decode_tok_s"] = {name: row["tok_s"] for name, row in rows.items()}
        out["engine_path_over_generate"] = round(rows["stream_engine_threads"]["tok_s"] / main, 3)
        out["old_path_over_generate"] = round(rows["stream_own_thread"]["tok_s"] / main, 3)
        out["texts_identical"] = results["decode"]["texts_identical"]
        out["new_thread_first_call_extra_s"] = results["decode"]["new_thread_first_call_extra_s"]
        contention = results["decode"]["contention"]
        out["contention_tok_s"] = {
            name: contention[name]["tok_s"]
            for name in ("engine_thread", "busy_main_5ms", "busy_main_0.5ms")
        }
    server = results.get("server", {})
    levels = server.get("engine_threads", {}).get("levels", [])
    if levels:
        out["server"] = {
            f"c{level['concurrency']}": {
                "first_token_p50_s": level["first_token_s"].get("p50"),
                "first_token_p95_s": level["first_token_s"].get("p95"),
                "total_p50_s": level["total_s"].get("p50"),
                "total_p95_s": level["total_s"].get("p95"),
                "aggregate_tok_s": level["aggregate_tok_s"],
            }
            for level in levels
        }
        one = next((level for level in levels if level["concurrency"] == 1), None)
        if one and one["total_s"]:
            out["c1_total_p95_s"] = one["total_s"]["p95"]
            out["meets_2s_target_at_c1"] = one["total_s"]["p95"] <= 2.0
    main_thread = server.get("main_thread", {}).get("levels", [])
    if main_thread:
        out["server_main_thread_c1_total_p50_s"] = main_thread[0]["total_s"].get("p50")
    train = results.get("train")
    if train:
        out["train"] = {
            "status": train.get("status"),
            "checks_passed": train.get("checks", {}).get("passed"),
            "served_answer_ok": train.get("generated") == train.get("expected"),
            "optimizer": train.get("optimizer"),
        }
    return out


if __name__ == "__main__":
    sys.exit(main())
