"""Meta-tests: every hook is documented in docs/plugins.md and has a test."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from praefect.core import hookdoc, hookspecs

ROOT = Path(__file__).resolve().parents[2]
HOOK_TESTS = Path(__file__).with_name("test_hooks.py")


def hook_test_names() -> set[str]:
    tree = ast.parse(HOOK_TESTS.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)}


@pytest.mark.parametrize("hook", hookdoc.hook_names())
def test_every_hook_has_a_test(hook: str) -> None:
    assert f"test_hook_{hook}" in hook_test_names(), (
        f"hook {hook!r} has no test_hook_{hook} in {HOOK_TESTS.relative_to(ROOT)}"
    )


@pytest.mark.parametrize("hook", hookdoc.hook_names())
def test_every_hook_has_a_reference_docstring(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc.splitlines()) >= 3, f"hook {hook!r} needs a docstring stating when it is called and its contract"


def test_plugins_md_reference_is_up_to_date() -> None:
    document = (ROOT / "docs" / "plugins.md").read_text()
    assert hookdoc.replace_reference(document) == document, (
        "docs/plugins.md is out of date: run python -m praefect.core.hookdoc --write docs/plugins.md"
    )
    for hook in hookdoc.hook_names():
        assert f"### `{hook}(" in document


def test_the_reference_lists_every_hook_of_the_spec_module() -> None:
    specs = {
        name
        for name, value in vars(hookspecs).items()
        if callable(value) and hasattr(value, f"{hookspecs.PROJECT_NAME}_spec")
    }
    assert set(hookdoc.hook_names()) == specs
    assert len(specs) >= 9
