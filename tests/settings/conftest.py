"""Fixtures for the settings tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No PRAEFECT_* or dynaconf variables from the developer's shell."""
    for name in list(os.environ):
        if name.startswith(("PRAEFECT_", "DYNACONF_")) or name.endswith("_FOR_DYNACONF"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return _write


_GOOD_TOML = """\
auth_token = "external-token-0123456789"

[virtual_storages.praefect.gitaly-1]
address = "tcp://127.0.0.1:9001"
token = "internal-token-0123456789"
primary = true

[virtual_storages.praefect.gitaly-2]
address = "127.0.0.1:9002"
token = "internal-token-0123456789"

[virtual_storages.praefect.gitaly-3]
address = "unix:/tmp/gitaly-3.sock"
token = "internal-token-0123456789"
"""


@pytest.fixture
def good_toml() -> str:
    """A valid router settings file."""
    return _GOOD_TOML


@pytest.fixture
def good_mapping() -> dict[str, Any]:
    """A valid router settings mapping (the same as good_toml), fresh for each test."""
    return {
        "auth_token": "external-token-0123456789",
        "virtual_storages": {
            "praefect": {
                "gitaly-1": {
                    "address": "tcp://127.0.0.1:9001",
                    "token": "internal-token-0123456789",
                    "primary": True,
                },
                "gitaly-2": {"address": "127.0.0.1:9002", "token": "internal-token-0123456789"},
                "gitaly-3": {
                    "address": "unix:/tmp/gitaly-3.sock",
                    "token": "internal-token-0123456789",
                },
            }
        },
    }
