"""praefect.node.git.spawn_git with descriptors passed to git (`pass_fds`),
as the replication's ``git fetch fd::<n>`` uses it.

git runs a shell alias here (``!...``), so the descriptor is seen by git
and by the processes git starts, as with ``git remote-fd``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from praefect.node.git import spawn_git


@contextlib.contextmanager
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    try:
        yield read_end, write_end
    finally:
        for fd in (read_end, write_end):
            with contextlib.suppress(OSError):
                os.close(fd)


def alias(command: str) -> list[str]:
    return ["-c", f"alias.probe=!{command}", "probe"]


async def read_some(fd: int, within: float = 10.0) -> bytes:
    """The next bytes written to the pipe, or b"" once no process holds its
    write end; fails if neither happens within `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            return os.read(fd, 4096)
        except BlockingIOError:
            if loop.time() > deadline:
                raise AssertionError(
                    f"nothing written, and the write end still held, after {within} s"
                ) from None
            await asyncio.sleep(0.02)


async def read_to_end(fd: int) -> bytes:
    data = b""
    while chunk := await read_some(fd):
        data += chunk
    return data


async def test_git_inherits_the_descriptors_it_is_passed(tmp_path: Path) -> None:
    with pipe() as (read_end, write_end):
        async with spawn_git(
            alias(f"printf inherited >/dev/fd/{write_end}"), cwd=tmp_path, pass_fds=(write_end,)
        ) as process:
            os.close(write_end)
            _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode(errors="replace")
        assert await read_to_end(read_end) == b"inherited"


async def test_git_inherits_no_descriptor_it_is_not_passed(tmp_path: Path) -> None:
    with pipe() as (read_end, write_end):
        async with spawn_git(alias(f"printf leaked >/dev/fd/{write_end}"), cwd=tmp_path) as process:
            os.close(write_end)
            await process.communicate()
        assert process.returncode != 0
        assert await read_to_end(read_end) == b""


async def test_leaving_the_block_kills_every_process_holding_a_passed_descriptor(
    tmp_path: Path,
) -> None:
    with pipe() as (read_end, write_end):
        # The shell's `sleep` holds the descriptor too, in git's process group.
        async with spawn_git(
            alias(f"printf started >/dev/fd/{write_end}; sleep 60"),
            cwd=tmp_path,
            pass_fds=(write_end,),
        ) as process:
            os.close(write_end)
            assert await read_some(read_end) == b"started"

        assert process.returncode is not None, "git is reaped when the block ends"
        # EOF: no process of the group is left holding the write end.
        assert await read_to_end(read_end) == b""
