"""UserCommitFiles: one commit from a stream of file actions, on a branch.

The flow follows Gitaly (service/operations/commit_files.go):

- the parent is the branch's tip, or `start_sha`, or `start_branch_name`'s
  tip (none at all in a repository without branches, which is how the
  "initialize with a README" commit of an empty repository comes about);
- the branch is then moved from the value read at the start (the parent, or
  the current tip with `force`, or `expected_old_oid`) to the new commit
  with compare-and-swap, so a concurrent commit is never overwritten;
- the first branch of a repository becomes HEAD's branch when HEAD pointed
  to a branch that does not exist.

Actions that do not fit the tree (creating an existing file, updating a
missing one, ...) are answered in the response's `index_error` with Gitaly's
messages and change nothing; malformed paths are INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from praefect.node.commit_writer import (
    Signature,
    list_tree,
    scratch_directory,
    write_commit,
    write_tree,
)
from praefect.node.errors import FailedPrecondition, InvalidArgument
from praefect.node.operations_files import ActionReceiver, apply_actions, write_blobs
from praefect.node.operations_refs import (
    RefChange,
    change_refs,
    has_branches,
    parse_object_id,
    point_dangling_head_at,
    read_ref,
    resolve_commit,
    resolve_expected_old_oid,
    short_name,
    validate_branch_name,
)
from praefect.node.operations_tree import IndexUpdateError, TreeEditor
from praefect.protos.gitaly import operations_pb2


@dataclass(frozen=True, slots=True)
class CommitTarget:
    """Where the new commit goes and what it builds on, read before any action."""

    branch_ref: str
    tip: str | None  # the branch's current commit; None when it is created
    parent: str | None  # None: a root commit
    expected_old: str | None  # the value the branch must still have; None: must not exist
    repository_had_branches: bool


def validate_header(header: operations_pb2.UserCommitFilesRequestHeader) -> None:
    if not header.HasField("user"):
        raise InvalidArgument("UserCommitFiles: empty User: set header.user")
    if not header.commit_message:
        raise InvalidArgument("UserCommitFiles: empty CommitMessage: set header.commit_message")
    if not header.branch_name:
        raise InvalidArgument("UserCommitFiles: empty BranchName: set header.branch_name")
    if header.start_sha:
        parse_object_id(header.start_sha, what="start_sha")
    if header.expected_old_oid:
        parse_object_id(header.expected_old_oid, what="expected_old_oid")


def _same_repository(header: operations_pb2.UserCommitFilesRequestHeader) -> bool:
    # Behind a router, start_repository keeps the virtual storage name while
    # repository carries the node's, so the relative path decides (Gitaly
    # issue 3294).
    start = header.start_repository
    return start.relative_path == header.repository.relative_path


async def resolve_target(
    git_dir: Path, header: operations_pb2.UserCommitFilesRequestHeader
) -> CommitTarget:
    branch_ref = await validate_branch_name(header.branch_name, what="branch_name")
    if header.HasField("start_repository") and not _same_repository(header):
        raise InvalidArgument(
            "UserCommitFiles: start_repository names another repository; this node only "
            "builds on commits of the target repository (leave start_repository unset)"
        )
    tip = await read_ref(git_dir, branch_ref)
    had_branches = tip is not None or await has_branches(git_dir)
    parent: str | None
    if header.start_sha:
        parent = await resolve_commit(git_dir, parse_object_id(header.start_sha, what="start_sha"))
        if parent is None:
            raise FailedPrecondition(
                f"start_sha {header.start_sha} is not a commit of this repository"
            )
    elif header.start_branch_name and had_branches:
        start_ref = await validate_branch_name(header.start_branch_name, what="start_branch_name")
        parent = await resolve_commit(git_dir, start_ref)
        if parent is None:
            raise FailedPrecondition(
                f"start branch {short_name(start_ref)!r} does not exist: create it or leave "
                "start_branch_name unset"
            )
    else:
        # Without branches, a start branch cannot exist yet: GitLab names the
        # branch being created, and the commit becomes the first (root) commit.
        parent = tip
    expected_old = None if tip is None else (tip if header.force else parent)
    if header.expected_old_oid:
        expected_old = await resolve_expected_old_oid(git_dir, header.expected_old_oid)
    return CommitTarget(branch_ref, tip, parent, expected_old, had_branches)


async def commit_files(
    git_dir: Path,
    storage_root: Path,
    header: operations_pb2.UserCommitFilesRequestHeader,
    actions: AsyncIterator[operations_pb2.UserCommitFilesRequest],
) -> operations_pb2.UserCommitFilesResponse:
    """Run UserCommitFiles after its header; `actions` yields the remaining messages."""
    target = await resolve_target(git_dir, header)
    timestamp = header.timestamp if header.HasField("timestamp") else None
    committer = Signature.for_user(header.user, timestamp)
    author = Signature.for_user(
        header.user, timestamp, name=header.commit_author_name, email=header.commit_author_email
    )
    async with scratch_directory(storage_root) as scratch:
        received = await ActionReceiver(scratch).receive(actions)
        base = await list_tree(git_dir, target.parent) if target.parent else []
        empty_blob = await write_blobs(git_dir, received, scratch)
        editor = TreeEditor(base)
        try:
            apply_actions(editor, received, empty_blob)
        except IndexUpdateError as error:
            return operations_pb2.UserCommitFilesResponse(index_error=str(error))
        tree = await write_tree(git_dir, editor.entries(), scratch)
    commit = await write_commit(
        git_dir,
        tree=tree,
        parents=[target.parent] if target.parent else [],
        author=author,
        committer=committer,
        message=header.commit_message,
    )
    await change_refs(git_dir, [RefChange(target.branch_ref, commit, target.expected_old)])
    if not target.repository_had_branches:
        await point_dangling_head_at(git_dir, target.branch_ref)
    return operations_pb2.UserCommitFilesResponse(
        branch_update=operations_pb2.OperationBranchUpdate(
            commit_id=commit,
            repo_created=not target.repository_had_branches,
            branch_created=target.tip is None,
        )
    )
