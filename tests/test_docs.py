"""The README is the front door, the manual is the site built from docs/: the README fits one
screen, keeps the two commands a fresh machine needs, and sends each reader to a page that
exists; every page is in the site's navigation (`make docs-check` builds it with --strict)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 120


def _pages() -> set[str]:
    return {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}


def test_the_readme_fits_one_screen_and_keeps_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < MAX_README_LINES
    assert "make demo   #" in text and "make test   #" in text


def test_the_readme_sends_each_reader_to_a_page_that_exists() -> None:
    links = set(re.findall(r"\]\(docs/([^)#]+\.md)", README.read_text()))
    assert links <= _pages()
    assert _pages() - links == {"index.md"}  # every page has a reader; the home page is the site's


def test_every_page_is_in_the_navigation() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    nav = set(re.findall(r":\s*([\w/-]+\.md)\s*$", config, flags=re.M))
    assert nav == _pages()
