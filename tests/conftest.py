from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gitenv import GIT_IDENTITY


@pytest.fixture(autouse=True, scope="session")
def _git_identity() -> Iterator[None]:
    """CI machines have no git identity; every test gets one."""
    saved = {key: os.environ.get(key) for key in GIT_IDENTITY}
    os.environ.update(GIT_IDENTITY)
    os.environ["GIT_CONFIG_GLOBAL"] = os.devnull
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    root = tmp_path / "storage"
    root.mkdir()
    return root
