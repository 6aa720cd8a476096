"""`praefect list-storages`: the storages of the settings, without Redis or nodes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import PRAEFECT
from tests.support.router import clean_env

SETTINGS = """
auth_token = "external-secret"

[virtual_storages.default.gitaly-1]
address = "tcp://127.0.0.1:9001"
token = "internal-one"
primary = true

[virtual_storages.default.gitaly-2]
address = "unix:/run/gitaly-2.sock"
token = "internal-two"

[virtual_storages.archive.cold-1]
address = "tcp://10.0.0.7:9001"
token = "internal-three"
primary = true
"""


@pytest.fixture
def settings(tmp_path: Path) -> Path:
    path = tmp_path / "praefect.toml"
    path.write_text(SETTINGS)
    return path


def list_storages(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PRAEFECT, "list-storages", *args], capture_output=True, text=True, env=clean_env(), timeout=60
    )


def test_every_node_of_every_virtual_storage_is_listed_without_tokens(settings: Path) -> None:
    result = list_storages("--config", str(settings))

    assert result.returncode == 0, result.stderr
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in result.stdout.splitlines()
        if line.startswith("│")
    ]
    assert rows == [
        ["default", "gitaly-1", "tcp://127.0.0.1:9001", "yes"],
        ["default", "gitaly-2", "unix:/run/gitaly-2.sock", ""],
        ["archive", "cold-1", "tcp://10.0.0.7:9001", "yes"],
    ]
    assert "internal-" not in result.stdout and "external-secret" not in result.stdout


def test_json_output_of_one_virtual_storage(settings: Path) -> None:
    result = list_storages("--config", str(settings), "--virtual-storage", "archive", "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "archive": [{"node": "cold-1", "address": "tcp://10.0.0.7:9001", "primary": True}]
    }


def test_an_unknown_virtual_storage_is_refused_naming_the_known_ones(settings: Path) -> None:
    result = list_storages("--config", str(settings), "--virtual-storage", "praefect")

    assert result.returncode == 1
    assert result.stdout == ""
    assert "unknown virtual storage 'praefect': the settings have default, archive" in result.stderr


def test_settings_without_virtual_storages_are_reported_as_settings_errors(tmp_path: Path) -> None:
    path = tmp_path / "praefect.toml"
    path.write_text('auth_token = "x"\n')
    result = list_storages("--config", str(path))

    assert result.returncode == 2
    assert "virtual_storages" in result.stderr
