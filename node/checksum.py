"""The repository checksum (CalculateChecksum), Gitaly's algorithm.

The checksum summarises a repository's references, so that two replicas can
be compared without comparing objects:

1. List every reference with its object id: ``git show-ref --head`` gives
   ``<oid> HEAD`` (only when HEAD resolves to an object) and
   ``<oid> <refname>`` for every ref under ``refs/``, loose or packed.
2. For each such line (without the newline), compute the SHA-1 digest of
   the bytes ``<oid> <refname>``.
3. XOR all the digests together and write the result as 40 lowercase hex
   digits.

Consequences: the order of refs and the way they are stored (loose files,
packed-refs, packs, loose objects) do not matter, so equal refs on two
nodes give equal checksums; a repository without any ref (a freshly created
one) has the checksum ``0000000000000000000000000000000000000000``. HEAD
contributes its resolved object id, not the name of the branch it points
at. SHA-256 repositories use the same SHA-1 fold over their longer ids.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from praefect.node.git import GitCommandError, GitResult, spawn_git

CHECKSUM_HEX_LENGTH = 40
EMPTY_CHECKSUM = "0" * CHECKSUM_HEX_LENGTH


def fold_ref_line(checksum: int, line: bytes) -> int:
    """XOR the SHA-1 of one ``<oid> <refname>`` line into `checksum`."""
    return checksum ^ int.from_bytes(hashlib.sha1(line).digest(), "big")


def format_checksum(checksum: int) -> str:
    return f"{checksum:0{CHECKSUM_HEX_LENGTH}x}"


def checksum_of_lines(lines: list[bytes]) -> str:
    """The checksum of ``<oid> <refname>`` lines (for tests and tools)."""
    checksum = 0
    for line in lines:
        checksum = fold_ref_line(checksum, line)
    return format_checksum(checksum)


async def calculate_checksum(git_dir: Path) -> str:
    """Checksum of the repository at `git_dir`; streams the ref list."""
    checksum = 0

    async def fold_stdout(stdout: asyncio.StreamReader) -> None:
        nonlocal checksum
        async for raw in stdout:
            line = raw.rstrip(b"\n")
            if line:
                checksum = fold_ref_line(checksum, line)

    async with spawn_git(["show-ref", "--head"], git_dir=git_dir) as process:
        assert process.stdout is not None and process.stderr is not None
        _, stderr = await asyncio.gather(fold_stdout(process.stdout), process.stderr.read())
        returncode = await process.wait()
    # show-ref exits 1, silently, when there is no ref at all.
    if returncode not in (0, 1) or (returncode == 1 and stderr.strip()):
        raise GitCommandError(GitResult(("show-ref", "--head"), returncode, b"", stderr))
    return format_checksum(checksum)
