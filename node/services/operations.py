"""The node's OperationService: commits, branches, tags and merges made on
the node with git plumbing (no work trees).

Error codes follow Gitaly (service/operations/*.go); where this node chose
differently the method's docstring says so. Every reference change is a
compare-and-swap against the value the call read or was given
(`operations_refs.change_refs`): a concurrent change makes the call fail
with FAILED_PRECONDITION and never lets it overwrite the other change.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

from grpc import aio

from praefect.node.commit_writer import Signature, write_commit, write_tag
from praefect.node.context import NodeContext
from praefect.node.errors import (
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
)
from praefect.node.git import validate_revision
from praefect.node.objects import read_commit, read_tag
from praefect.node.operations_commit_files import commit_files, validate_header
from praefect.node.operations_merge import merge_trees
from praefect.node.operations_refs import (
    RefChange,
    RefChangeRejected,
    change_refs,
    is_ancestor,
    is_zero_oid,
    object_type,
    parse_object_id,
    peel_object,
    read_ref,
    resolve_commit,
    resolve_expected_old_oid,
    resolve_object,
    short_name,
    validate_branch_name,
    validate_tag_name,
)
from praefect.node.repository_args import locate_repository
from praefect.node.services.base import NodeServicer, rpc
from praefect.protos.gitaly import operations_pb2, operations_pb2_grpc, shared_pb2

_NON_SPACE = re.compile(rb"\S")


def _require_user(user_field_set: bool) -> None:
    if not user_field_set:
        raise InvalidArgument("empty user: set user (name and email of who makes the change)")


class OperationServicer(NodeServicer, operations_pb2_grpc.OperationServiceServicer):
    def _locate(self, repository: shared_pb2.Repository) -> tuple[Path, Path]:
        """(repository directory, its storage's root) for an existing repository."""
        location = locate_repository(self.ctx, repository)
        return location.path, self.ctx.locator.storage_root(location.storage_name)

    @rpc
    async def UserCommitFiles(
        self,
        request_iterator: AsyncIterator[operations_pb2.UserCommitFilesRequest],
        context: aio.ServicerContext,
    ) -> operations_pb2.UserCommitFilesResponse:
        """Index errors (file exists / missing) come back in `index_error` with
        no commit, as Gitaly without structured errors; bad paths are
        INVALID_ARGUMENT."""
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("user_commit_files_request_payload") != "header":
            raise InvalidArgument(
                "UserCommitFiles: empty UserCommitFilesRequestHeader: the first message must carry the header"
            )
        header = first.header
        git_dir, storage_root = self._locate(header.repository)
        validate_header(header)
        return await commit_files(git_dir, storage_root, header, requests)

    @rpc
    async def UserCreateBranch(
        self, request: operations_pb2.UserCreateBranchRequest, context: aio.ServicerContext
    ) -> operations_pb2.UserCreateBranchResponse:
        """An existing branch is FAILED_PRECONDITION, as in Gitaly (its
        reference update with a zero old value fails)."""
        git_dir, _ = self._locate(request.repository)
        branch_ref = await validate_branch_name(request.branch_name)
        _require_user(request.HasField("user"))
        if not request.start_point:
            raise InvalidArgument("empty start point: name the commit the branch starts at")
        start_point = validate_revision(request.start_point, what="start point")
        commit_id = await resolve_commit(git_dir, start_point)
        if commit_id is None:
            raise FailedPrecondition(f"revspec '{start_point}' not found")
        if await read_ref(git_dir, branch_ref) is not None:
            raise FailedPrecondition(
                f"Could not update {branch_ref}: branch {short_name(branch_ref)!r} already exists"
            )
        await change_refs(git_dir, [RefChange(branch_ref, commit_id, None)])
        commit = await read_commit(git_dir, commit_id)
        if commit is None:
            raise Internal(f"commit {commit_id} vanished after creating {branch_ref}")
        return operations_pb2.UserCreateBranchResponse(
            branch=shared_pb2.Branch(name=request.branch_name, target_commit=commit)
        )

    @rpc
    async def UserUpdateBranch(
        self, request: operations_pb2.UserUpdateBranchRequest, context: aio.ServicerContext
    ) -> operations_pb2.UserUpdateBranchResponse:
        """Moves the branch from `oldrev` to `newrev` (full object ids) only if
        it is still at `oldrev`. Unparsable ids are INVALID_ARGUMENT (Gitaly:
        INTERNAL)."""
        git_dir, _ = self._locate(request.repository)
        _require_user(request.HasField("user"))
        branch_ref = await validate_branch_name(request.branch_name)
        if not request.oldrev:
            raise InvalidArgument("empty oldrev: give the commit the branch is expected to be at")
        if not request.newrev:
            raise InvalidArgument("empty newrev: give the commit to move the branch to")
        new = parse_object_id(request.newrev, what="newrev")
        old = parse_object_id(request.oldrev, what="oldrev")
        try:
            await change_refs(
                git_dir,
                [
                    RefChange(
                        branch_ref,
                        None if is_zero_oid(new) else new,
                        None if is_zero_oid(old) else old,
                    )
                ],
            )
        except RefChangeRejected as rejected:
            # Gitaly's wording, naming the branch rather than the ref.
            raise FailedPrecondition(
                f"Could not update {short_name(branch_ref)}. Please refresh and try again. "
                f"({rejected.reason})"
            ) from None
        except (NotFound, InvalidArgument) as error:
            # newrev is missing or not a commit.
            raise FailedPrecondition(
                f"Could not update {short_name(branch_ref)}: {error.message}"
            ) from None
        return operations_pb2.UserUpdateBranchResponse()

    @rpc
    async def UserDeleteBranch(
        self, request: operations_pb2.UserDeleteBranchRequest, context: aio.ServicerContext
    ) -> operations_pb2.UserDeleteBranchResponse:
        """A missing branch is FAILED_PRECONDITION "branch not found", as in Gitaly."""
        git_dir, _ = self._locate(request.repository)
        branch_ref = await validate_branch_name(request.branch_name)
        _require_user(request.HasField("user"))
        if request.expected_old_oid:
            old = await resolve_expected_old_oid(git_dir, request.expected_old_oid)
        else:
            current = await read_ref(git_dir, branch_ref)
            if current is None:
                raise FailedPrecondition(f"branch not found: {short_name(branch_ref)!r}")
            old = current
        await change_refs(git_dir, [RefChange(branch_ref, None, old)])
        return operations_pb2.UserDeleteBranchResponse()

    @rpc
    async def UserCreateTag(
        self, request: operations_pb2.UserCreateTagRequest, context: aio.ServicerContext
    ) -> operations_pb2.UserCreateTagResponse:
        """Lightweight when the message is blank, annotated otherwise (tagger:
        the user at `timestamp`). An existing tag is ALREADY_EXISTS, as in Gitaly."""
        git_dir, _ = self._locate(request.repository)
        tag_ref = await validate_tag_name(request.tag_name)
        _require_user(request.HasField("user"))
        if not request.target_revision:
            raise InvalidArgument("empty target revision: name what the tag points at")
        if b"\0" in request.message:
            raise InvalidArgument("tag message contains NUL byte")
        revision = validate_revision(request.target_revision, what="target revision")
        target = await resolve_object(git_dir, revision)
        if target is None:
            raise FailedPrecondition(f"revspec '{revision}' not found")
        target_type = await object_type(git_dir, target)
        annotated = _NON_SPACE.search(request.message) is not None
        if target_type == "tag" and not annotated:
            # A lightweight tag of a tag points at what that tag points at.
            target = await peel_object(git_dir, target)
            target_type = await object_type(git_dir, target)
        existing = await read_ref(git_dir, tag_ref)
        if existing is not None:
            raise AlreadyExists(f"tag reference exists already: {tag_ref} is at {existing}")
        ref_value = target
        if annotated:
            tagger = Signature.for_user(
                request.user, request.timestamp if request.HasField("timestamp") else None
            )
            ref_value = await write_tag(
                git_dir,
                target=target,
                target_type=target_type,
                name=request.tag_name,
                tagger=tagger,
                message=request.message,
            )
        await change_refs(git_dir, [RefChange(tag_ref, ref_value, None)])
        tag = await read_tag(git_dir, short_name(tag_ref))
        if tag is None:
            raise Internal(f"tag {tag_ref} vanished right after it was created")
        return operations_pb2.UserCreateTagResponse(tag=tag)

    @rpc
    async def UserDeleteTag(
        self, request: operations_pb2.UserDeleteTagRequest, context: aio.ServicerContext
    ) -> operations_pb2.UserDeleteTagResponse:
        """A missing tag is FAILED_PRECONDITION "tag not found", as in Gitaly."""
        git_dir, _ = self._locate(request.repository)
        tag_ref = await validate_tag_name(request.tag_name)
        _require_user(request.HasField("user"))
        if request.expected_old_oid:
            old = await resolve_expected_old_oid(git_dir, request.expected_old_oid)
        else:
            current = await read_ref(git_dir, tag_ref)
            if current is None:
                raise FailedPrecondition(f"tag not found: {short_name(tag_ref)!r}")
            old = current
        await change_refs(git_dir, [RefChange(tag_ref, None, old)])
        return operations_pb2.UserDeleteTagResponse()

    @rpc
    async def UserMergeBranch(
        self,
        request_iterator: AsyncIterator[operations_pb2.UserMergeBranchRequest],
        context: aio.ServicerContext,
    ) -> AsyncIterator[operations_pb2.UserMergeBranchResponse]:
        """Two steps: the first message computes and writes the merge commit
        and answers its id; the branch moves only when a second message with
        `apply` arrives, and only if it is still where it was in step one.
        A second message without `apply`, or a stream closed before it, is
        FAILED_PRECONDITION "merge aborted by client" and changes nothing
        (Gitaly answers a closed stream with the stream's own error)."""
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None:
            raise InvalidArgument("UserMergeBranch: empty stream: send the merge request first")
        git_dir, _ = self._locate(first.repository)
        _require_user(first.HasField("user"))
        if not first.user.email:
            raise InvalidArgument("empty user email")
        if not first.user.name:
            raise InvalidArgument("empty user name")
        branch_ref = await validate_branch_name(first.branch)
        if not first.commit_id:
            raise InvalidArgument("empty commit ID: give the commit to merge into the branch")
        if not first.message:
            raise InvalidArgument("empty message: give the merge commit's message")
        theirs = await self._existing_commit(git_dir, first.commit_id, what="commit ID")
        if first.expected_old_oid:
            ours = await resolve_expected_old_oid(git_dir, first.expected_old_oid)
        else:
            current = await read_ref(git_dir, branch_ref)
            if current is None:
                raise NotFound(f"branch {short_name(branch_ref)!r} not found: create it first")
            ours = current
        signature = Signature.for_user(
            first.user, first.timestamp if first.HasField("timestamp") else None
        )
        tree = await merge_trees(git_dir, ours, theirs)
        merge_commit = await write_commit(
            git_dir,
            tree=tree,
            parents=[ours, theirs],
            author=signature,
            committer=signature,
            message=first.message,
        )
        yield operations_pb2.UserMergeBranchResponse(commit_id=merge_commit)

        second = await anext(requests, None)
        if second is None or not second.apply:
            raise FailedPrecondition(
                "merge aborted by client: the branch was not changed (send apply=true to merge)"
            )
        await change_refs(git_dir, [RefChange(branch_ref, merge_commit, ours)])
        yield operations_pb2.UserMergeBranchResponse(
            branch_update=operations_pb2.OperationBranchUpdate(commit_id=merge_commit)
        )

    @rpc
    async def UserFFBranch(
        self, request: operations_pb2.UserFFBranchRequest, context: aio.ServicerContext
    ) -> operations_pb2.UserFFBranchResponse:
        """Fast-forwards only when the branch's commit is an ancestor of
        `commit_id` (else FAILED_PRECONDITION "not fast forward"). A branch
        that moved meanwhile is FAILED_PRECONDITION (Gitaly answers an empty
        response there, which a client cannot tell from success)."""
        git_dir, _ = self._locate(request.repository)
        branch_ref = await validate_branch_name(request.branch)
        _require_user(request.HasField("user"))
        if not request.commit_id:
            raise InvalidArgument("empty commit id: give the commit to fast-forward the branch to")
        if request.expected_old_oid:
            current = await resolve_expected_old_oid(git_dir, request.expected_old_oid)
        else:
            found = await read_ref(git_dir, branch_ref)
            if found is None:
                raise InvalidArgument(
                    f"reference not found: branch {short_name(branch_ref)!r} does not exist"
                )
            current = found
        commit_id = await self._existing_commit(git_dir, request.commit_id, what="commit ID")
        if not await is_ancestor(git_dir, current, commit_id):
            raise FailedPrecondition(
                f"not fast forward: {short_name(branch_ref)!r} at {current} is not an ancestor of {commit_id}"
            )
        await change_refs(git_dir, [RefChange(branch_ref, commit_id, current)])
        return operations_pb2.UserFFBranchResponse(
            branch_update=operations_pb2.OperationBranchUpdate(commit_id=commit_id)
        )

    @staticmethod
    async def _existing_commit(git_dir: Path, value: str, *, what: str) -> str:
        oid = parse_object_id(value, what=what)
        commit = await resolve_commit(git_dir, oid)
        if commit is None:
            raise NotFound(f"{what} {value} is not a commit of this repository")
        return commit


def register(server: aio.Server, ctx: NodeContext) -> None:
    """Add this service's servicer to `server`."""
    operations_pb2_grpc.add_OperationServiceServicer_to_server(OperationServicer(ctx), server)
