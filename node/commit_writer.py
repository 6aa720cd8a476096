"""Writing trees, commits and tags with git plumbing, without a work tree.

A commit's id depends only on its tree, parents, author, committer and
message. When a request carries a timestamp, `Signature.for_user` takes the
date from it and the offset from the user's timezone, so the same request
writes the same commit on every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import shutil
import tempfile
import zoneinfo
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from praefect.node.errors import InvalidArgument
from praefect.node.git import run_git
from praefect.protos.gitaly import shared_pb2

# Scratch space of the node inside each storage (as Gitaly's +gitaly/tmp):
# on the same filesystem as the repositories, never shown to callers.
SCRATCH_DIRECTORY = Path("+praefect", "tmp")

_IDENT_FORBIDDEN = (b"<", b">", b"\n", b"\0")


@dataclass(frozen=True, slots=True)
class Signature:
    """An author, committer or tagger: who, and when in which offset."""

    name: bytes
    email: bytes
    seconds: int
    offset: str  # "+0100", as git writes it

    @classmethod
    def for_user(
        cls,
        user: shared_pb2.User,
        timestamp: Timestamp | None,
        *,
        name: bytes = b"",
        email: bytes = b"",
        what: str = "user",
    ) -> Signature:
        """The signature of `user` (or `name`/`email` when both are given) at
        `timestamp` (now when None), in the offset of `user.timezone`."""
        if not (name and email):
            name, email = user.name, user.email
        for field, value in (("name", name), ("email", email)):
            if not value:
                raise InvalidArgument(f"empty {what} {field}: set {what}.{field}")
            if any(bad in value for bad in _IDENT_FORBIDDEN):
                raise InvalidArgument(
                    f"invalid {what} {field} {value!r}: must not contain '<', '>', "
                    "a newline or a NUL byte"
                )
        if timestamp is None:
            seconds = int(datetime.datetime.now(datetime.UTC).timestamp())
        else:
            if timestamp.seconds < 0:
                raise InvalidArgument("invalid timestamp: dates before 1970 are not supported")
            seconds = timestamp.seconds
        return cls(name, email, seconds, timezone_offset(user.timezone, seconds))

    @property
    def git_date(self) -> str:
        return f"@{self.seconds} {self.offset}"

    def ident(self) -> bytes:
        return b"%s <%s> %d %s" % (self.name, self.email, self.seconds, self.offset.encode())


def timezone_offset(timezone: str, seconds: int) -> str:
    """The UTC offset (`+0100`) of the IANA `timezone` at `seconds`; `+0000`
    when no timezone is given, as Gitaly does."""
    if not timezone:
        return "+0000"
    try:
        zone = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(
            f"unknown timezone {timezone!r} in user.timezone: give an IANA name such as "
            "'Europe/Paris' or leave it empty for UTC"
        ) from None
    delta = datetime.datetime.fromtimestamp(seconds, zone).utcoffset() or datetime.timedelta()
    minutes = int(delta.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}{rest:02d}"


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One file of a tree being built: `path` is relative to the root."""

    path: bytes
    mode: str  # "100644", "100755", "120000", "160000"
    oid: str


def storage_scratch_root(storage_root: Path) -> Path:
    return storage_root / SCRATCH_DIRECTORY


@contextlib.asynccontextmanager
async def scratch_directory(storage_root: Path) -> AsyncIterator[Path]:
    """A private temporary directory in the storage's scratch space, removed on exit."""
    root = storage_scratch_root(storage_root)
    path = await asyncio.to_thread(_make_scratch, root)
    try:
        yield path
    finally:
        await asyncio.shield(asyncio.to_thread(shutil.rmtree, path, True))


def _make_scratch(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="operation-", dir=root))


async def write_tree(git_dir: Path, entries: Iterable[TreeEntry], scratch: Path) -> str:
    """Write the tree holding exactly `entries` through a temporary index."""
    index = scratch / f"index-{os.urandom(6).hex()}"
    env = {"GIT_INDEX_FILE": str(index)}
    stdin = b"".join(
        b"%s %s\t%s\0" % (entry.mode.encode(), entry.oid.encode(), entry.path) for entry in entries
    )
    if stdin:
        await run_git(["update-index", "-z", "--index-info"], git_dir=git_dir, env=env, stdin=stdin)
    result = await run_git(["write-tree"], git_dir=git_dir, env=env)
    return result.stdout.decode().strip()


async def list_tree(git_dir: Path, treeish: str) -> list[TreeEntry]:
    """Every file (blob, symlink, submodule) of `treeish`, recursively."""
    result = await run_git(["ls-tree", "-r", "-z", "--full-tree", treeish], git_dir=git_dir)
    entries: list[TreeEntry] = []
    for record in result.stdout.split(b"\0"):
        if not record:
            continue
        info, path = record.split(b"\t", 1)
        mode, _type, oid = info.decode().split(" ")
        entries.append(TreeEntry(path, mode, oid))
    return entries


async def write_commit(
    git_dir: Path,
    *,
    tree: str,
    parents: Sequence[str],
    author: Signature,
    committer: Signature,
    message: bytes,
) -> str:
    """Write a commit object (the message is kept byte for byte) and return its id."""
    args = ["commit-tree", tree]
    for parent in parents:
        args += ["-p", parent]
    env = {
        # os.fsdecode keeps non-UTF-8 bytes intact on their way to git.
        "GIT_AUTHOR_NAME": os.fsdecode(author.name),
        "GIT_AUTHOR_EMAIL": os.fsdecode(author.email),
        "GIT_AUTHOR_DATE": author.git_date,
        "GIT_COMMITTER_NAME": os.fsdecode(committer.name),
        "GIT_COMMITTER_EMAIL": os.fsdecode(committer.email),
        "GIT_COMMITTER_DATE": committer.git_date,
    }
    result = await run_git(args, git_dir=git_dir, env=env, stdin=message)
    return result.stdout.decode().strip()


async def write_tag(
    git_dir: Path,
    *,
    target: str,
    target_type: str,
    name: bytes,
    tagger: Signature,
    message: bytes,
) -> str:
    """Write an annotated tag object with `git mktag` (which checks it) and return its id."""
    if b"\n" in name or b"\0" in message:
        raise InvalidArgument("a tag name must not contain a newline nor a message a NUL byte")
    body = b"object %s\ntype %s\ntag %s\ntagger %s\n\n%s" % (
        target.encode(),
        target_type.encode(),
        name,
        tagger.ident(),
        message,
    )
    result = await run_git(["mktag"], git_dir=git_dir, stdin=body)
    return result.stdout.decode().strip()
