"""Seed a node's storage with repositories of incompressible data.

Objects are written with zlib level 0 and packed without delta search
(random data neither compresses nor deltifies), so seeding hundreds of
megabytes takes seconds and ``git upload-pack`` serves a clone by reusing
the pack as it is: the benchmark measures moving bytes, not compressing.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

FAST_PACKING = (
    "core.compression=0",
    "pack.compression=0",
    "core.bigFileThreshold=1m",
    "gc.auto=0",
)
WRITE_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Seeded:
    """A bare repository in the storage, with what the benchmark asks for."""

    relative_path: str
    head: str  # commit id of refs/heads/main
    refs: Mapping[str, str]  # ref name -> object id
    blob: str  # object id of the first (largest) file
    blob_size: int
    pack_bytes: int  # size of the repository's pack on disk


def git_environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PRAEFECT_", "GIT_"))}
    env.update(
        GIT_AUTHOR_NAME="Bench",
        GIT_AUTHOR_EMAIL="bench@example.com",
        GIT_COMMITTER_NAME="Bench",
        GIT_COMMITTER_EMAIL="bench@example.com",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
    )
    return env


def _git(args: Sequence[str], git_dir: Path, work_tree: Path | None = None) -> str:
    command = ["git", f"--git-dir={git_dir}"]
    if work_tree is not None:
        command.append(f"--work-tree={work_tree}")
    result = subprocess.run(
        [*command, *args], env=git_environment(), capture_output=True, timeout=600, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout.decode()


def _write_random(path: Path, size: int) -> None:
    with path.open("wb") as out:
        remaining = size
        while remaining > 0:
            chunk = min(WRITE_CHUNK, remaining)
            out.write(os.urandom(chunk))
            remaining -= chunk


def seed_repository(storage: Path, relative_path: str, file_sizes: Sequence[int], scratch: Path) -> Seeded:
    """A bare repository whose history adds one random file of each size per commit.

    The first file is the blob that GetBlob fetches.
    """
    git_dir = storage / relative_path
    work = scratch / f"{relative_path.replace('/', '_')}.work"
    work.mkdir(parents=True)
    git_dir.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "init", "-q", "--bare", "-b", "main", str(git_dir)],
        env=git_environment(),
        check=True,
        capture_output=True,
    )
    for setting in FAST_PACKING:
        key, value = setting.split("=", 1)
        _git(["config", key, value], git_dir)
    for index, size in enumerate(file_sizes):
        name = f"data-{index:03d}.bin"
        _write_random(work / name, size)
        _git(["add", name], git_dir, work)
        _git(["commit", "-q", "-m", f"add {name} ({size} bytes)"], git_dir, work)
        # The work tree only feeds `git add`; the objects live in the repository.
        (work / name).unlink()
    _git(["repack", "-a", "-d", "-q", "--window=0"], git_dir)
    blob = _git(["rev-parse", "main:data-000.bin"], git_dir, None).strip()
    work.rmdir()
    refs = {}
    for line in _git(["for-each-ref", "--format=%(refname) %(objectname)"], git_dir).splitlines():
        name, oid = line.split(" ")
        refs[name] = oid
    pack_bytes = sum(path.stat().st_size for path in (git_dir / "objects" / "pack").glob("*.pack"))
    return Seeded(
        relative_path=relative_path,
        head=refs["refs/heads/main"],
        refs=refs,
        blob=blob,
        blob_size=file_sizes[0],
        pack_bytes=pack_bytes,
    )
