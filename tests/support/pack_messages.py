"""Helpers for the tests of how the node cuts git's output into messages:
many commits made quickly, a fetch that needs several negotiation rounds,
and reading a client's packet trace."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.gitenv import git, git_env, make_work_repo

#: Long enough that a test which waits for it fails by its own deadline:
#: output must never depend on the hold running out.
LONG_HOLD_SECONDS = 60.0
#: What a fetch with a few negotiation rounds takes here at most, even on a
#: loaded machine; well below LONG_HOLD_SECONDS.
FETCH_SECONDS = 30.0


async def run_git_within(
    args: Sequence[str], *, cwd: Path, env: Mapping[str, str], seconds: float = FETCH_SECONDS
) -> str:
    """Run the git client without blocking the event loop (an in-process
    node serves on it); fail if it fails or is not done within `seconds`
    (then it is killed). Returns its stderr."""
    process = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(seconds):
            _, stderr = await process.communicate()
    except TimeoutError:
        raise AssertionError(
            f"git {' '.join(args)} did not finish within {seconds:.0f} s: "
            "some output waited for the node's hold instead of going out"
        ) from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = stderr.decode(errors="replace")
    assert process.returncode == 0, f"git {' '.join(args)} failed ({process.returncode}):\n{text}"
    return text


def add_commits(repository: Path, branch: str, count: int, *, start: str, label: str) -> str:
    """`count` commits on `branch` starting from `start`, each adding a small
    file, written in one `git fast-import`; returns the last commit's id."""
    lines = [f"reset refs/heads/{branch}", f"from {start}", ""]
    # Dated after everything made so far: a client sends its newest commits first.
    now = int(time.time()) + 3600
    for index in range(count):
        content = f"{label} {index}\n".encode()
        message = f"{label} {index}\n".encode()
        lines.append(f"commit refs/heads/{branch}")
        lines.append(f"committer Test <test@example.com> {now + index} +0000")
        lines.append(f"data {len(message)}\n{message.decode()}")
        lines.append(f"M 100644 inline {label}-{index}.txt")
        lines.append(f"data {len(content)}\n{content.decode()}")
    stream = ("\n".join(lines) + "\n").encode()
    subprocess.run(
        ["git", "fast-import", "--quiet"],
        cwd=repository,
        env=git_env(),
        input=stream,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return git(["rev-parse", f"refs/heads/{branch}"], cwd=repository).strip()


def diverged_pair(root: Path, *, local_commits: int, server_commits: int) -> tuple[Path, Path]:
    """A work repository to serve and a clone of it that share 5 commits of
    `main`; then the clone gets `local_commits` commits of its own on
    `local` (the server knows none of them: each is a `have` it NAKs) and
    the work repository `server_commits` more on `main`.

    A fetch into the clone then needs several negotiation rounds before
    the client reaches history the server has.
    """
    work = make_work_repo(root / "work", commits=5)
    clone = root / "clone"
    git(["clone", "-q", "--no-local", str(work), str(clone)])
    shared = git(["rev-parse", "HEAD"], cwd=work).strip()
    # Newer than the shared history, so the client sends them first.
    add_commits(clone, "local", local_commits, start=shared, label="local")
    add_commits(work, "main", server_commits, start=shared, label="server")
    return work, clone


def negotiation_rounds(trace: str) -> tuple[int, int]:
    """(haves sent, flushes after haves) in a client's GIT_TRACE_PACKET output:
    each flush after a batch of haves ends one negotiation round."""
    haves = rounds = 0
    pending = False
    for line in trace.splitlines():
        if "> have " in line:
            haves += 1
            pending = True
        elif pending and line.rstrip().endswith("> 0000"):
            rounds += 1
            pending = False
    return haves, rounds
