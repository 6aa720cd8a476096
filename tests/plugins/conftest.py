from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PLUGIN_DIST = Path(__file__).resolve().parents[1] / "plugin_dist"


@pytest.fixture(scope="session")
def example_plugin_installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """pip-install tests/plugin_dist (praefect-example) for the session; uninstall after.

    Built from a copy so the source tree gets no build/ or egg-info; no
    dependencies, no build isolation and no index, so it takes a second.
    """
    source = tmp_path_factory.mktemp("plugin_dist") / "praefect-example"
    shutil.copytree(PLUGIN_DIST, source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield "example"
    finally:
        subprocess.run([*pip, "uninstall", "-y", "praefect-example"], check=True, capture_output=True, timeout=120)
