"""The distribution installs everything under `praefect.` and nothing else."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MAPPED_ROOTS = ("core", "plugins", "protos", "settings", "node", "gateway")


def test_every_package_folder_is_mapped() -> None:
    """A new sub-package that is not listed in pyproject.toml would be
    missing from the wheel while the editable install still finds it."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    mapped = {folder: name for name, folder in setuptools["package-dir"].items()}
    assert set(setuptools["packages"]) == set(mapped.values())
    folders = {
        str(init.parent.relative_to(ROOT))
        for top in MAPPED_ROOTS
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert folders == set(mapped), f"unmapped: {folders - set(mapped)}, stale: {set(mapped) - folders}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_built_wheel_installs_only_the_praefect_namespace(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=240,
    )
    (wheel,) = tmp_path.glob("praefect-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_levels = {name.split("/")[0] for name in names if not name.startswith("praefect-")}
    assert top_levels == {"praefect"}
    assert "praefect/protos/gitaly/repository.proto" in names
    assert "praefect/protos/gitaly/repository_pb2.pyi" in names
    assert "praefect/settings/settings.toml" in names

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=240,
                   capture_output=True)
    probe = (
        "import importlib.util, praefect.core, praefect.plugins.auth, praefect.protos.gitaly.repository_pb2;"
        "assert importlib.util.find_spec('core') is None;"
        "assert importlib.util.find_spec('plugins') is None;"
        "print('ok')"
    )
    result = subprocess.run([python, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr
    result = subprocess.run([env_dir / "bin" / "praefect", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "node" in result.stdout, result.stderr
