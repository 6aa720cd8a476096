"""Reading and changing references for the operations service.

Every reference change of the operations service goes through
`change_refs`: one `git update-ref --stdin` transaction (node/refs.py) where
each change names the value it expects to replace. git locks the references,
checks the expected values and only then writes, all or nothing, so two
concurrent operations on one branch can never both succeed from the same
starting point: the second one fails cleanly (`RefChangeRejected`,
FAILED_PRECONDITION as in Gitaly) instead of silently dropping the first
one's commit.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from praefect.node.errors import FailedPrecondition, InvalidArgument
from praefect.node.git import GitCommandError, run_git, validate_ref_name
from praefect.node.refs import RefUpdate, RefUpdateConflict, update_refs

BRANCH_PREFIX = "refs/heads/"
TAG_PREFIX = "refs/tags/"

_HEX_DIGITS = frozenset(string.hexdigits.lower())
# SHA-1 and SHA-256 object ids.
_OBJECT_ID_LENGTHS = (40, 64)


async def validate_branch_name(name: bytes, *, what: str = "branch name") -> str:
    """`refs/heads/<name>` for a caller's branch name, or INVALID_ARGUMENT."""
    return await _validate_short_ref_name(name, BRANCH_PREFIX, what)


async def validate_tag_name(name: bytes, *, what: str = "tag name") -> str:
    """`refs/tags/<name>` for a caller's tag name, or INVALID_ARGUMENT."""
    return await _validate_short_ref_name(name, TAG_PREFIX, what)


async def _validate_short_ref_name(name: bytes, prefix: str, what: str) -> str:
    if not name:
        raise InvalidArgument(f"empty {what}")
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"invalid {what}: not valid UTF-8") from None
    if text.startswith("-"):
        raise InvalidArgument(f"invalid {what} {text!r}: must not start with '-'")
    return await validate_ref_name(prefix + text, what=what)


def short_name(ref: str) -> str:
    for prefix in (BRANCH_PREFIX, TAG_PREFIX):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref


def parse_object_id(value: str | bytes, *, what: str) -> str:
    """A hex object id (SHA-1 or SHA-256) in lower case, or INVALID_ARGUMENT."""
    text = value.decode("ascii", errors="replace") if isinstance(value, bytes) else value
    lowered = text.lower()
    if len(lowered) not in _OBJECT_ID_LENGTHS or not set(lowered) <= _HEX_DIGITS:
        raise InvalidArgument(
            f"invalid {what} {text!r}: expected a full hexadecimal object id (40 or 64 digits)"
        )
    return lowered


def is_zero_oid(oid: str) -> bool:
    return bool(oid) and set(oid) == {"0"}


async def read_ref(git_dir: Path, ref: str) -> str | None:
    """The object id `ref` (a full, validated ref name) points to, or None.

    `show-ref --verify` looks the name up exactly: `rev-parse` would also try
    `refs/heads/<ref>` and friends when `ref` itself does not exist.
    """
    result = await run_git(["show-ref", "--verify", "--hash", ref], git_dir=git_dir, check=False)
    if not result.ok:
        return None
    return result.stdout.decode().strip() or None


async def resolve_commit(git_dir: Path, revision: str) -> str | None:
    """The commit a validated revision (oid, ref, short name) peels to, or None."""
    result = await run_git(
        ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}"],
        git_dir=git_dir,
        check=False,
    )
    return (result.stdout.decode().strip() or None) if result.ok else None


async def resolve_object(git_dir: Path, revision: str) -> str | None:
    """The object a validated revision names, without peeling, or None."""
    result = await run_git(
        ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{object}}"],
        git_dir=git_dir,
        check=False,
    )
    return (result.stdout.decode().strip() or None) if result.ok else None


async def peel_object(git_dir: Path, oid: str) -> str:
    """What an object id peels to through annotated tags (itself for others)."""
    result = await run_git(
        ["rev-parse", "--verify", "--end-of-options", f"{oid}^{{}}"], git_dir=git_dir
    )
    return result.stdout.decode().strip()


async def resolve_expected_old_oid(git_dir: Path, value: str) -> str:
    """An `expected_old_oid` of a request: a full object id that exists."""
    oid = parse_object_id(value, what="expected old object ID")
    if is_zero_oid(oid):
        return oid
    resolved = await resolve_object(git_dir, oid)
    if resolved is None:
        raise InvalidArgument(
            f"cannot resolve expected old object ID {value!r}: no such object in the repository"
        )
    return resolved


async def object_type(git_dir: Path, oid: str) -> str:
    result = await run_git(["cat-file", "-t", oid], git_dir=git_dir)
    return result.stdout.decode().strip()


async def has_branches(git_dir: Path) -> bool:
    result = await run_git(
        ["for-each-ref", "--count=1", "--format=%(refname)", BRANCH_PREFIX], git_dir=git_dir
    )
    return bool(result.stdout.strip())


async def is_ancestor(git_dir: Path, ancestor: str, descendant: str) -> bool:
    result = await run_git(
        ["merge-base", "--is-ancestor", ancestor, descendant], git_dir=git_dir, check=False
    )
    if result.returncode in (0, 1):
        return result.returncode == 0
    raise GitCommandError(result)


async def point_dangling_head_at(git_dir: Path, branch_ref: str) -> bool:
    """Make HEAD point to `branch_ref` when HEAD's branch does not exist.

    An empty repository's HEAD names a branch nobody created yet; after the
    first branch appears it must become the default branch, as in Gitaly.
    Returns whether HEAD was changed.
    """
    current = await run_git(["symbolic-ref", "--quiet", "HEAD"], git_dir=git_dir, check=False)
    if current.returncode == 1:
        return False  # a detached HEAD names a commit: leave it alone
    if not current.ok:
        raise GitCommandError(current)
    target = current.stdout.decode().strip()
    if target == branch_ref or await read_ref(git_dir, target) is not None:
        return False
    await run_git(["symbolic-ref", "HEAD", branch_ref], git_dir=git_dir)
    return True


@dataclass(frozen=True, slots=True)
class RefChange:
    """One reference change with the value it must replace.

    `new` None deletes the reference. `old` None means the reference must not
    exist yet; a deletion always names the value it deletes.
    """

    ref: str
    new: str | None
    old: str | None

    def __post_init__(self) -> None:
        if self.new is None and self.old is None:
            raise ValueError(f"deleting {self.ref} needs the value it is expected to have")

    def as_update(self) -> RefUpdate:
        # Either side is a real object id, so its length gives the zero id's.
        known = self.new if self.new is not None else self.old
        assert known is not None
        zero = "0" * len(known)
        return RefUpdate(self.ref, self.new or zero, self.old or zero)


class RefChangeRejected(FailedPrecondition):
    """A reference was not at the expected value (or was locked): nothing changed."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"Could not update: {reason}. Please refresh and try again.")


async def change_refs(git_dir: Path, changes: Sequence[RefChange]) -> None:
    """Apply `changes` in one atomic `git update-ref --stdin` transaction, each
    compared against its expected old value under git's ref lock.

    Raises RefChangeRejected (FAILED_PRECONDITION, as Gitaly answers a failed
    reference update) when a reference moved, exists or is locked meanwhile.
    """
    try:
        await update_refs(git_dir, [change.as_update() for change in changes])
    except RefUpdateConflict as conflict:
        raise RefChangeRejected(conflict.message) from None
