"""Merging two commits without a work tree: `git merge-tree --write-tree`."""

from __future__ import annotations

from pathlib import Path

from praefect.node.errors import FailedPrecondition
from praefect.node.git import GitCommandError, run_git


class MergeConflictError(FailedPrecondition):
    def __init__(self, paths: list[bytes]) -> None:
        self.paths = paths
        shown = ", ".join(path.decode(errors="replace") for path in paths)
        super().__init__(
            f"merging commits: conflicts in {len(paths)} file(s): {shown}; "
            "resolve them on a branch and merge again"
        )


async def merge_trees(git_dir: Path, ours: str, theirs: str) -> str:
    """The tree of the merge of two commits (validated full object ids).

    Raises MergeConflictError listing the conflicting paths, or
    FailedPrecondition when the commits share no history.
    """
    result = await run_git(
        ["merge-tree", "--write-tree", "-z", "--name-only", "--no-messages", ours, theirs],
        git_dir=git_dir,
        check=False,
    )
    # Exit 0: clean, 1: conflicts; output "<tree>\0" then one "<path>\0" per conflict.
    if result.returncode == 1 and result.stdout:
        fields = result.stdout.split(b"\0")
        paths = list(dict.fromkeys(path for path in fields[1:] if path))
        raise MergeConflictError(paths)
    if result.ok:
        return result.stdout.split(b"\0", 1)[0].decode().strip()
    if b"unrelated histories" in result.stderr:
        raise FailedPrecondition(
            f"merging commits: {ours} and {theirs} have no common history; nothing to merge"
        )
    raise GitCommandError(result)
