"""The one image recipe every Modal container is built from: the model classes, the reviewer app,
the warm-hours cron and the trainer.

Each image is Debian slim with the project's own pins from pyproject.toml (plus the extras the
container needs), so a container runs the versions the tests run; tzdata, because the app files
check the warm-hours time zone when they are evaluated and slim images may lack the IANA
database; the project's distribution record, so code that asks for the package version (the
eval harness outside git) gets an answer; and the project's packages from this checkout,
added at container start, so a code edit never rebuilds an image.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

import modal

from modal_backend.deploy.settings import DeployConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = PROJECT_ROOT / "pyproject.toml"
PYTHON_VERSION = "3.11"
SOURCE_IGNORE = ["**/__pycache__/**", "**/*.pyc"]
"""Everything else in the packages ships, data files included (the promotion gates' TOML)."""


def requirements(*extras: str, pyproject: Path = PYPROJECT) -> list[str]:
    """The project's dependencies plus `extras`, pinned as in pyproject.toml, so the images and
    the tests install the same versions."""
    if not pyproject.is_file():
        raise DeployConfigError(f"{pyproject} not found: deploy from a checkout of the repository")
    project = tomllib.loads(pyproject.read_text())["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    self_reference = re.compile(rf"^{re.escape(project['name'])}\[(.+)\]$")
    found: list[str] = []
    expanded: set[str] = set()

    def add(requirements: list[str]) -> None:
        for requirement in requirements:
            match = self_reference.match(requirement.replace(" ", ""))
            if match is None:
                if requirement not in found:
                    found.append(requirement)
                continue
            for extra in match[1].split(","):
                if extra not in expanded:
                    expanded.add(extra)
                    add(optional[extra])

    add(project["dependencies"])
    add([f"{project['name']}[{','.join(extras)}]"] if extras else [])
    return found


def project_image(
    *extras: str,
    packages: Sequence[str],
    env: Mapping[str, str] | None = None,
    also: Sequence[str] = (),
    apt: Sequence[str] = (),
) -> modal.Image:
    """Debian slim with the pinned dependencies (and `extras`), tzdata, the distribution record,
    `env`, and `packages` added from this checkout. `also` are requirements outside
    pyproject.toml, installed in the same pip run so a clash with the pins fails the build;
    `apt` are Debian packages."""
    # Inside a container the image is already built, and pyproject.toml is not shipped.
    pins = [*requirements(*extras), *also] if modal.is_local() else []
    image = modal.Image.debian_slim(python_version=PYTHON_VERSION)
    if apt:
        image = image.apt_install(*apt)
    return (
        image.pip_install(*pins, "tzdata")
        .add_local_file(PYPROJECT, "/build/pyproject.toml", copy=True)
        .run_commands("touch /build/README.md", "pip install --no-deps /build")
        .env(dict(env or {}))
        .add_local_python_source(*packages, ignore=SOURCE_IGNORE)
    )
