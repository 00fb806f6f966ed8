"""docs/templates.md is generated from the code: it must say what the code does."""

from __future__ import annotations

from toolkit.family_table import PAGE, render


def test_the_page_matches_the_code() -> None:
    assert PAGE.read_text() == render(), "docs/templates.md is stale: run python -m toolkit.family_table"
