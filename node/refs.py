"""References: name rules, the default branch, listing and atomic updates.

Updates go through `git update-ref --stdin` in one transaction
(start/prepare/commit), so a set of updates is applied completely or not at
all, and compare-and-swap on the old value is done by git under its ref locks.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from praefect.node.errors import FailedPrecondition, InvalidArgument, NodeError, NotFound
from praefect.node.git import run_git, spawn_git

DEFAULT_REF = "refs/heads/main"
LEGACY_DEFAULT_REF = "refs/heads/master"

_HEX = re.compile(r"[0-9a-f]+")
# Characters git refuses anywhere in a ref name (see git-check-ref-format(1)).
_FORBIDDEN_REF_CHARS = frozenset(" ~^:?*[\\\x7f")


def is_valid_ref_name(name: str) -> bool:
    """git check-ref-format's rules for a full reference name, without a process."""
    if not name or name == "@" or name.startswith(("-", "/")) or name.endswith(("/", ".")):
        return False
    if ".." in name or "@{" in name or "//" in name:
        return False
    if any(ch in _FORBIDDEN_REF_CHARS or ord(ch) < 0x20 for ch in name):
        return False
    return all(
        component and not component.startswith(".") and not component.endswith(".lock")
        for component in name.split("/")
    )


def require_ref_name(name: str | bytes, *, what: str = "reference") -> str:
    """A full ref name (`refs/...`) that is safe to give git, or INVALID_ARGUMENT."""
    text = name.decode("utf-8", errors="replace") if isinstance(name, bytes) else name
    if not text.startswith("refs/") or not is_valid_ref_name(text):
        raise InvalidArgument(
            f"invalid {what} {text!r}: not a valid git reference name under refs/ "
            "(see git check-ref-format), e.g. refs/heads/main"
        )
    return text


async def object_format(git_dir: Path) -> str:
    """ "sha1" or "sha256"."""
    result = await run_git(["rev-parse", "--show-object-format"], git_dir=git_dir)
    return result.stdout.decode().strip() or "sha1"


def zero_oid(fmt: str) -> str:
    return "0" * (64 if fmt == "sha256" else 40)


def is_object_id(value: str, fmt: str) -> bool:
    return len(value) == len(zero_oid(fmt)) and _HEX.fullmatch(value) is not None


async def head_reference(git_dir: Path) -> str:
    """What HEAD points at (`refs/heads/main`), even when that branch is unborn;
    empty when HEAD is detached."""
    result = await run_git(["symbolic-ref", "--quiet", "HEAD"], git_dir=git_dir, check=False)
    return result.stdout.decode().strip() if result.ok else ""


async def branch_names(git_dir: Path) -> list[str]:
    result = await run_git(["for-each-ref", "--format=%(refname)", "refs/heads/"], git_dir=git_dir)
    return result.stdout.decode().splitlines()


async def default_branch(git_dir: Path) -> str:
    """Gitaly's GetDefaultBranch: the only branch; else HEAD's branch if it
    exists; else main, else master, else the first branch; "" without branches."""
    branches = await branch_names(git_dir)
    if len(branches) <= 1:
        return branches[0] if branches else ""
    head = await head_reference(git_dir)
    if head in branches:
        return head
    for candidate in (DEFAULT_REF, LEGACY_DEFAULT_REF):
        if candidate in branches:
            return candidate
    return branches[0]


@contextlib.asynccontextmanager
async def for_each_ref(
    git_dir: Path,
    patterns: Sequence[str],
    *,
    fmt: str,
    sort: str = "",
    options: Sequence[str] = (),
) -> AsyncIterator[AsyncIterator[bytes]]:
    """Stream `git for-each-ref` lines (without the newline).

    Patterns are given after `--end-of-options`, so a pattern can never act
    as an option.
    """
    args = ["for-each-ref", f"--format={fmt}"]
    if sort:
        args.append(f"--sort={sort}")
    args += [*options, "--end-of-options", *patterns]
    async with spawn_git(args, git_dir=git_dir) as process:
        assert process.stdout is not None and process.stderr is not None
        stdout, stderr = process.stdout, process.stderr

        async def lines() -> AsyncGenerator[bytes, None]:
            while line := await stdout.readline():
                yield line.rstrip(b"\n")
            if await process.wait() != 0:
                message = (await stderr.read()).decode(errors="replace").strip()
                raise NodeError(f"listing references failed: {message}")

        stream = lines()
        try:
            yield stream
        finally:
            await stream.aclose()


async def resolve_ref(git_dir: Path, ref: str) -> str | None:
    """The object id the full ref name `ref` points at, or None when it does not exist."""
    result = await run_git(["show-ref", "--verify", "--hash", ref], git_dir=git_dir, check=False)
    return result.stdout.decode().strip() or None if result.ok else None


async def resolve_revision(git_dir: Path, revision: str) -> str | None:
    """The object id a (validated) revision names, or None."""
    result = await run_git(
        ["rev-parse", "--verify", "--quiet", "--end-of-options", revision],
        git_dir=git_dir,
        check=False,
    )
    return result.stdout.decode().strip() or None if result.ok else None


@dataclass(frozen=True, slots=True)
class RefUpdate:
    """Set `ref` to `new_oid` (the zero id deletes it), if it is at `old_oid`.

    `old_oid` None: no check; the zero id: the ref must not exist.
    """

    ref: str
    new_oid: str
    old_oid: str | None = None


class RefUpdateConflict(NodeError):
    """A reference was not where the update expected it, or was locked."""

    code = grpc.StatusCode.ABORTED


async def update_refs(
    git_dir: Path, updates: Sequence[RefUpdate], *, no_deref: bool = False
) -> None:
    """Apply `updates` atomically with one `git update-ref --stdin` transaction.

    Raises RefUpdateConflict (ABORTED) when a ref is not at its expected old
    value, already exists, or is locked; NotFound when a new object does not
    exist; InvalidArgument for a bad name, a non-commit on a branch or two
    updates of one ref; FailedPrecondition when a name clashes with an
    existing directory/file ref.
    """
    if not updates:
        return
    lines = ["start"]
    for update in updates:
        line = f"update {update.ref} {update.new_oid}"
        if update.old_oid is not None:
            line += f" {update.old_oid}"
        lines.append(line)
    lines += ["prepare", "commit", ""]
    args = ["update-ref", "--stdin"]
    if no_deref:
        args.insert(1, "--no-deref")
    result = await run_git(args, git_dir=git_dir, stdin="\n".join(lines).encode(), check=False)
    if not result.ok:
        raise classify_update_error(result.stderr.decode(errors="replace"))


_REF_IN_MESSAGE = re.compile(r"ref '([^']+)'|ref format: (\S+)")


def classify_update_error(stderr: str) -> NodeError:
    """Turn update-ref's complaint into a status with a message for the caller.

    The message names the reference but never repeats git's text verbatim:
    lock failures mention the lock file's absolute path.
    """
    match = _REF_IN_MESSAGE.search(stderr)
    ref = next((group for group in match.groups() if group), "?") if match else "?"
    if "reference already exists" in stderr:
        return RefUpdateConflict(f"reference {ref} already exists but was expected not to")
    if "but expected" in stderr:
        detail = stderr.split(": ")[-1].strip()
        return RefUpdateConflict(f"reference {ref} changed concurrently: {detail}")
    if "unable to resolve reference" in stderr:
        return RefUpdateConflict(f"reference {ref} does not exist but an old value was expected")
    if ".lock" in stderr and "File exists" in stderr:
        return RefUpdateConflict(f"reference {ref} is locked by another update; retry")
    if "nonexistent object" in stderr:
        oid = stderr.rsplit(" ", 1)[-1].strip()
        return NotFound(f"cannot update {ref}: object {oid} does not exist in the repository")
    if "invalid ref format" in stderr:
        return InvalidArgument(f"invalid reference name {ref!r}")
    if "non-commit object" in stderr:
        return InvalidArgument(f"cannot point branch {ref} at an object that is not a commit")
    if "multiple updates for ref" in stderr:
        return InvalidArgument(f"reference {ref} is updated more than once in one request")
    if "exists; cannot create" in stderr or "cannot process" in stderr:
        return FailedPrecondition(
            f"cannot create {ref}: it clashes with an existing reference of the same path"
        )
    return NodeError(f"updating references failed: {stderr.strip()}")
