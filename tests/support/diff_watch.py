"""Watching the git processes of an in-process node from its tests.

The blob and diff tests use these to check that a call that stops early
(cancelled, or cut by a limit) kills its git process and ends: the process
is gone and its pipes are closed. Every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

POLL_INTERVAL = 0.02


def git_children() -> list[int]:
    """Pids of the live git processes this test process (and so its in-process node) started."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name, fields = (
            stat[stat.index("(") + 1 : stat.rindex(")")],
            stat[stat.rindex(")") + 2 :].split(),
        )
        if name == "git" and int(fields[1]) == os.getpid() and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def git_blocked_writing() -> bool:
    """Whether a git child waits for its output to be read (a full pipe)."""
    for pid in git_children():
        with contextlib.suppress(OSError):
            if "pipe_write" in Path(f"/proc/{pid}/wchan").read_text():
                return True
    return False


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def poll_until(condition: Callable[[], bool], *, within: float = 10) -> bool:
    """Check `condition` until it holds or `within` seconds have passed."""
    for _ in range(round(within / POLL_INTERVAL)):
        if condition():
            return True
        await asyncio.sleep(POLL_INTERVAL)
    return condition()


async def wait_for_git_blocked_writing() -> None:
    """Wait until the node has stopped reading git's output (its buffer is
    full): the case in which a pipe left unread never reaches its end."""
    assert await poll_until(git_blocked_writing), "git never blocked on a full pipe"


async def wait_for_no_git_children() -> None:
    assert await poll_until(lambda: not git_children()), (
        f"git processes still running: {git_children()}"
    )


async def wait_for_fds(limit: int) -> None:
    """Wait until this process has at most `limit` open file descriptors: a
    call left waiting for git keeps git's pipes open."""
    assert await poll_until(lambda: open_fds() <= limit), (
        f"{open_fds() - limit} more file descriptors open than before (git's pipes?)"
    )
