"""A git identity and clean config for tests: CI machines have none."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Committer",
    "GIT_COMMITTER_EMAIL": "committer@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(GIT_IDENTITY)
    env["GIT_CONFIG_GLOBAL"] = os.devnull
    if extra:
        env.update(extra)
    return env


def git(args: Sequence[str], cwd: Path | None = None, *, input: bytes | None = None, check: bool = True) -> str:
    """Run git synchronously in a test (never inside the server's event loop)."""
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=git_env(),
        input=input,
        capture_output=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({result.returncode}): {result.stderr.decode()}")
    return result.stdout.decode()


def make_work_repo(path: Path, commits: int = 3, branch: str = "main") -> Path:
    """A non-bare repository with `commits` commits on `branch`."""
    path.mkdir(parents=True, exist_ok=True)
    git(["init", "-q", "-b", branch, str(path)])
    for i in range(commits):
        (path / f"file{i}.txt").write_text(f"content {i}\n")
        git(["add", "."], cwd=path)
        git(["commit", "-q", "-m", f"commit {i}"], cwd=path)
    return path
