"""docs/configuration.md is generated from the schema and must match it."""

from __future__ import annotations

from pathlib import Path

from praefect.settings.docs import render_reference
from praefect.settings.schema import iter_keys

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_reference_matches_schema() -> None:
    assert DOC.read_text(encoding="utf-8") == render_reference(), (
        "docs/configuration.md is stale: run "
        "`.venv/bin/python -m praefect.settings.docs --write docs/configuration.md`"
    )


def test_every_key_is_documented() -> None:
    text = render_reference()
    for key in iter_keys():
        assert f"| `{key.path}` |" in text
