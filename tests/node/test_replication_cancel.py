"""A replication whose caller gives up mid-fetch leaves no process behind,
on the target or on the source, and no half-made repository."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from grpc import aio

from tests.support.gitenv import git
from tests.support.replication_pair import node_pair
from tests.support.router import wait_until

# Random, so that it stays large on the wire: the fetch lasts long enough to
# be seen (its pack is stored uncompressed, so seeding it is quick).
BLOB_BYTES = 24 * 1024 * 1024


def git_processes_under(root: Path) -> dict[int, int]:
    """{pid: process group} of the processes whose command line names `root`,
    and of every process in their groups (git's children name no path)."""
    marker = str(root).encode()
    groups: dict[int, int] = {}
    table: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/stat", "rb") as stat:
                pgrp = int(stat.read().rpartition(b")")[2].split()[2])
            table[int(entry)] = pgrp
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if marker in cmdline.read():
                    groups[int(entry)] = pgrp
    wanted = set(groups.values())
    return {pid: pgrp for pid, pgrp in table.items() if pgrp in wanted and pgrp != os.getpgrp()}


def large_repository(path: Path) -> None:
    git(["init", "-q", "--bare", str(path)])
    blob = os.urandom(BLOB_BYTES)
    stream = (
        b"blob\nmark :1\ndata %d\n" % len(blob) + blob + b"\n"
        b"commit refs/heads/main\ncommitter T <t@example.com> 1700000000 +0000\n"
        b"data 6\nlarge\nM 644 :1 large.bin\n\n"
    )
    git(["-c", "core.compression=0", "fast-import", "--quiet"], cwd=path, input=stream)


async def test_a_cancelled_replication_kills_and_reaps_the_fetch(tmp_path: Path) -> None:
    async with node_pair(tmp_path / "nodes") as nodes:
        large_repository(nodes.root_a / "large.git")
        replication = asyncio.create_task(nodes.replicate("large.git"))

        def fetching() -> bool:
            if replication.done():
                raise AssertionError("the replication ended before its fetch was seen: make the repository larger")
            return any(b"fetch" in _cmdline(pid) for pid in git_processes_under(nodes.root_b))

        await wait_until(fetching, "git fetch to start on the target", within=30)
        replication.cancel()  # the client gives up: the call is cancelled on both nodes
        with contextlib.suppress(asyncio.CancelledError, aio.AioRpcError):
            await replication

        await wait_until(
            lambda: not git_processes_under(nodes.root_b) and not git_processes_under(nodes.root_a),
            "every git process of the replication to be killed and reaped",
            within=15,
        )
        assert not zombie_children(), "git processes left unreaped"
        assert not (nodes.root_b / "large.git").exists()
        await wait_until(
            lambda: not any((nodes.root_b / "+praefect" / "tmp").iterdir()),
            "the scratch directory to be removed",
            within=15,
        )


def zombie_children() -> list[int]:
    """This process's children that ended and were never waited for (the nodes run in it)."""
    zombies = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
                if fields[0] == b"Z" and int(fields[1]) == os.getpid():
                    zombies.append(int(entry))
    return zombies


def _cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read()
    return b""
