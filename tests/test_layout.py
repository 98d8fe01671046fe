"""The layout DESIGN.md draws, kept true by reading every module's imports: imports run only
downward, only `deploy` knows Modal, nothing imports `deploy`, and no source file grows past
500 lines."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("suggestions", "modal_backend", "app", "eval")
MAX_LINES = 500

ALLOWED: dict[str, set[str]] = {
    "suggestions": set(),
    "eval": {"suggestions"},
    "app": {"suggestions", "eval"},
    "modal_backend.serving": {"suggestions"},
    "modal_backend.training": {"suggestions", "eval", "modal_backend.serving"},
    "modal_backend.deploy": {
        "suggestions",
        "eval",
        "app",
        "modal_backend.serving",
        "modal_backend.training",
    },
    "modal_backend": set(),
}
"""Which of our packages each may import (besides itself). `deploy` is the top floor."""

LAUNCHER_EXCEPTIONS = {"app.__main__": {"modal_backend.serving"}}
"""The local launcher may start a model server (through `serving`); the rest of `app` never."""


def room(module: str) -> str:
    parts = module.split(".")
    if (
        parts[0] == "modal_backend"
        and len(parts) > 1
        and parts[1]
        in {
            "serving",
            "training",
            "deploy",
        }
    ):
        return ".".join(parts[:2])
    return parts[0]


def modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "evaluate_modules" in path.parts:  # loaded by path by `evaluate`, not imported
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(parts).removesuffix(".__init__"), path


def imported(module: str, path: Path) -> Iterator[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join([*base, *([node.module] if node.module else [])])
            else:
                yield node.module or ""


ALL = list(modules())


def test_every_package_is_seen() -> None:
    assert {room(module) for module, _ in ALL} == set(ALLOWED)


@pytest.mark.parametrize(("module", "path"), ALL, ids=[m for m, _ in ALL])
def test_imports_run_downward(module: str, path: Path) -> None:
    mine = room(module)
    allowed = ALLOWED[mine] | LAUNCHER_EXCEPTIONS.get(module, set()) | {mine}
    ours = [name for name in imported(module, path) if name.split(".")[0] in PACKAGES]
    wrong = sorted({name for name in ours if room(name) not in allowed})
    assert not wrong, f"{module} ({mine}) imports {wrong}"
    text = path.read_text()
    if mine != "modal_backend.deploy":
        assert "import_module(" not in text or "app." not in text, "no importlib side doors"
        assert not [name for name in imported(module, path) if name.split(".")[0] == "modal"], (
            f"{module} imports modal: only modal_backend.deploy may"
        )


@pytest.mark.parametrize(("module", "path"), ALL, ids=[m for m, _ in ALL])
def test_no_source_file_is_over_500_lines(module: str, path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{path} has grown past {MAX_LINES}"
