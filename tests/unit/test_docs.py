"""The README and docs/ stay true to the tree: every file they name exists, every relative link
resolves, and nothing points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A repository path in backticks: a top-level package or folder, then a file with an extension.
NAMED_FILE = re.compile(r"`((?:server|backends|toolkit|tests|bench|scripts|configs|docs)/[\w./-]+\.\w+)`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_architecture_names_only_files_that_exist() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(NAMED_FILE.findall(text))
    # Files inside a package row are named bare (`app.py` under `server/http/`): check those too.
    for row in re.findall(r"^\| `([\w/]+/)` \| (.*) \|$", text, flags=re.M):
        folder, cells = row
        named |= {folder + name for name in re.findall(r"`(\w+\.py)`", cells)}
    assert len(named) > 40, "the package map should name the modules"
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    broken = [
        link
        for link in LINK.findall(doc.read_text())
        if "://" not in link and not link.startswith("mailto:") and not (doc.parent / link).exists()
    ]
    assert not broken, f"{doc.name}: broken links {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_stand_alone(doc: Path) -> None:
    assert "../shared" not in doc.read_text(), f"{doc.name} points outside the repository"
