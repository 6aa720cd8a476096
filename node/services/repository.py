"""RepositoryService: repository lifecycle, refs, checksum, replication, bundles.

The servicer validates requests and delegates: creation and removal are
atomic (`praefect.node.repository_files`), bundles live in
`praefect.node.repository_bundle`, maintenance in
`praefect.node.repository_optimize`, the checksum in `praefect.node.checksum`
and replication in `praefect.node.replication`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from praefect.node.checksum import calculate_checksum
from praefect.node.context import NodeContext
from praefect.node.errors import FailedPrecondition, InvalidArgument, NodeError
from praefect.node.git import GitCommandError, run_git, validate_ref_name, validate_revision
from praefect.node.gitaly_servers import server_from_metadata
from praefect.node.replication import replicate_repository, validate_source
from praefect.node.repository_args import locate_repository
from praefect.node.repository_bundle import create_from_bundle, stream_bundle
from praefect.node.repository_files import (
    DEFAULT_BRANCH,
    create_repository,
    directory_size_kib,
    object_format_enum,
    object_format_name,
    read_object_format,
    remove_repository,
)
from praefect.node.repository_optimize import optimize_repository
from praefect.node.services.base import NodeServicer
from praefect.node.services.base import rpc as _rpc
from praefect.node.storage import is_git_directory
from praefect.protos.gitaly import repository_pb2 as pb
from praefect.protos.gitaly import repository_pb2_grpc

_ZERO_OID = re.compile(r"^0{40}(0{24})?$")

# Bound with an explicit type: mypy run on single files cannot follow the
# editable install's import hook and would otherwise see `rpc` as untyped.
rpc: Callable[[Callable[..., Any]], Callable[..., Any]] = _rpc


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"{what} is not valid UTF-8") from None


async def default_branch_name(raw: bytes) -> str:
    """The branch a new repository's HEAD names: `raw` (with or without
    refs/heads/), or main."""
    name = _text(raw, "default_branch").removeprefix("refs/heads/")
    if not name:
        return str(DEFAULT_BRANCH)
    if name.startswith("-"):
        raise InvalidArgument(f"invalid default_branch {name!r}: must not start with '-'")
    await validate_ref_name(f"refs/heads/{name}", what="default_branch")
    return name


async def resolve_object(git_dir: Path, revision: bytes, what: str) -> str:
    """The object id `revision` names; InvalidArgument when it names none."""
    text = validate_revision(revision, what=what)
    result = await run_git(
        ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{text}^{{object}}"],
        git_dir=git_dir,
        check=False,
    )
    if not result.ok:
        raise InvalidArgument(f"{what} {text!r} does not name an object in the repository")
    oid: str = result.stdout.decode().strip()
    return oid


async def write_ref(git_dir: Path, ref_raw: bytes, revision_raw: bytes, old_raw: bytes) -> None:
    if not ref_raw:
        raise InvalidArgument("empty ref: give a full reference name such as refs/heads/main, or HEAD")
    if not revision_raw:
        raise InvalidArgument("empty revision: give the object id or reference the ref should point at")
    if ref_raw == b"HEAD":
        if old_raw:
            raise InvalidArgument("old_revision cannot be used when ref is HEAD")
        target = _text(revision_raw, "revision")
        if not target.startswith("refs/"):
            raise InvalidArgument(
                f"revision {target!r} must be a full reference name such as refs/heads/main "
                "when ref is HEAD"
            )
        await validate_ref_name(target, what="revision")
        await run_git(["symbolic-ref", "HEAD", target], git_dir=git_dir)
        return

    ref = _text(ref_raw, "ref")
    if not ref.startswith("refs/"):
        raise InvalidArgument(f"ref {ref!r} is not a full reference name: it must start with refs/ (or be HEAD)")
    await validate_ref_name(ref, what="ref")
    new_oid = await resolve_object(git_dir, revision_raw, "revision")
    args = ["update-ref", "-m", "WriteRef", ref, new_oid]
    if old_raw:
        old_text = _text(old_raw, "old_revision")
        args.append(old_text if _ZERO_OID.match(old_text) else await resolve_object(git_dir, old_raw, "old_revision"))
    result = await run_git(args, git_dir=git_dir, check=False)
    if result.ok:
        return
    stderr = result.stderr.decode(errors="replace").strip()
    if "but expected" in stderr or "reference already exists" in stderr or "exists; cannot create" in stderr:
        raise FailedPrecondition(f"cannot update {ref}: {stderr.removeprefix('fatal: ')}")
    if ".lock" in stderr:
        raise NodeError(f"{ref} is being updated concurrently: retry ({stderr})", grpc.StatusCode.ABORTED)
    raise GitCommandError(result)


async def find_merge_base(git_dir: Path, revisions: list[bytes]) -> str:
    if len(revisions) < 2:
        raise InvalidArgument(f"at least 2 revisions are required to find a merge base, got {len(revisions)}")
    names = [validate_revision(rev, what="revision") for rev in revisions]
    result = await run_git(["merge-base", "--end-of-options", *names], git_dir=git_dir, check=False)
    # As Gitaly: no common ancestor, or a revision that names nothing, is an empty base.
    base: str = result.stdout.decode().strip() if result.ok else ""
    return base


class RepositoryServicer(NodeServicer, repository_pb2_grpc.RepositoryServiceServicer):  # type: ignore[misc, unused-ignore]
    @rpc
    async def RepositoryExists(self, request: pb.RepositoryExistsRequest, context: aio.ServicerContext) -> pb.RepositoryExistsResponse:
        location = locate_repository(self.ctx, request.repository, must_exist=False)
        return pb.RepositoryExistsResponse(exists=is_git_directory(location.path))

    @rpc
    async def CreateRepository(self, request: pb.CreateRepositoryRequest, context: aio.ServicerContext) -> pb.CreateRepositoryResponse:
        location = locate_repository(self.ctx, request.repository, must_exist=False)
        object_format = object_format_name(request.object_format)
        branch = await default_branch_name(request.default_branch)
        await create_repository(location, object_format=object_format, default_branch=branch)
        return pb.CreateRepositoryResponse()

    @rpc
    async def RemoveRepository(self, request: pb.RemoveRepositoryRequest, context: aio.ServicerContext) -> pb.RemoveRepositoryResponse:
        await remove_repository(locate_repository(self.ctx, request.repository))
        return pb.RemoveRepositoryResponse()

    @rpc
    async def RepositorySize(self, request: pb.RepositorySizeRequest, context: aio.ServicerContext) -> pb.RepositorySizeResponse:
        location = locate_repository(self.ctx, request.repository)
        return pb.RepositorySizeResponse(size=await asyncio.to_thread(directory_size_kib, location.path))

    @rpc
    async def ObjectFormat(self, request: pb.ObjectFormatRequest, context: aio.ServicerContext) -> pb.ObjectFormatResponse:
        location = locate_repository(self.ctx, request.repository)
        return pb.ObjectFormatResponse(format=object_format_enum(await read_object_format(location.path)))

    @rpc
    async def HasLocalBranches(self, request: pb.HasLocalBranchesRequest, context: aio.ServicerContext) -> pb.HasLocalBranchesResponse:
        location = locate_repository(self.ctx, request.repository)
        result = await run_git(["for-each-ref", "--count=1", "--format=%(refname)", "refs/heads/"], git_dir=location.path)
        return pb.HasLocalBranchesResponse(value=bool(result.stdout.strip()))

    @rpc
    async def WriteRef(self, request: pb.WriteRefRequest, context: aio.ServicerContext) -> pb.WriteRefResponse:
        location = locate_repository(self.ctx, request.repository)
        await write_ref(location.path, request.ref, request.revision, request.old_revision)
        return pb.WriteRefResponse()

    @rpc
    async def CalculateChecksum(self, request: pb.CalculateChecksumRequest, context: aio.ServicerContext) -> pb.CalculateChecksumResponse:
        location = locate_repository(self.ctx, request.repository)
        return pb.CalculateChecksumResponse(checksum=await calculate_checksum(location.path))

    @rpc
    async def ReplicateRepository(self, request: pb.ReplicateRepositoryRequest, context: aio.ServicerContext) -> pb.ReplicateRepositoryResponse:
        target = locate_repository(self.ctx, request.repository, must_exist=False)
        source = validate_source(request.repository, request.source if request.HasField("source") else None)
        server = server_from_metadata(context.invocation_metadata(), source.storage_name)
        await replicate_repository(target, source, server)
        return pb.ReplicateRepositoryResponse()

    @rpc
    async def OptimizeRepository(self, request: pb.OptimizeRepositoryRequest, context: aio.ServicerContext) -> pb.OptimizeRepositoryResponse:
        location = locate_repository(self.ctx, request.repository)
        await optimize_repository(location.path, request.strategy)
        return pb.OptimizeRepositoryResponse()

    @rpc
    async def CreateBundle(self, request: pb.CreateBundleRequest, context: aio.ServicerContext) -> AsyncIterator[pb.CreateBundleResponse]:
        location = locate_repository(self.ctx, request.repository)
        async with aclosing(stream_bundle(location)) as chunks:
            async for chunk in chunks:
                yield pb.CreateBundleResponse(data=chunk)

    @rpc
    async def CreateRepositoryFromBundle(
        self, request_iterator: AsyncIterator[pb.CreateRepositoryFromBundleRequest], context: aio.ServicerContext
    ) -> pb.CreateRepositoryFromBundleResponse:
        first = await anext(request_iterator, None)
        if first is None:
            raise InvalidArgument("empty request stream: the first request must name the repository")
        location = locate_repository(self.ctx, first.repository, must_exist=False)
        await create_from_bundle(location, first.data, request_iterator)
        return pb.CreateRepositoryFromBundleResponse()

    @rpc
    async def FindMergeBase(self, request: pb.FindMergeBaseRequest, context: aio.ServicerContext) -> pb.FindMergeBaseResponse:
        location = locate_repository(self.ctx, request.repository)
        return pb.FindMergeBaseResponse(base=await find_merge_base(location.path, list(request.revisions)))


def register(server: aio.Server, ctx: NodeContext) -> None:
    """Add this service's servicer to `server`."""
    repository_pb2_grpc.add_RepositoryServiceServicer_to_server(RepositoryServicer(ctx), server)
