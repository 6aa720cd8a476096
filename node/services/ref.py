"""RefService: branches, tags and references of a repository.

Behaviour follows Gitaly's ref service; where the node chooses differently
the method says so:

- FindBranch of a missing branch answers an empty response (as Gitaly);
  FindTag of a missing tag answers NOT_FOUND (as Gitaly).
- A page token that names no reference is INVALID_ARGUMENT for every
  paginated call (Gitaly says INTERNAL for some of them).
- ListRefs requires at least one pattern (as Gitaly); its `next_cursor` is
  Gitaly's base64 JSON `{"ref_name": ...}` and plain ref names are accepted
  as page tokens too. HEAD (with `head`) comes first on the first page only.
- UpdateReferences: a ref that is not at its expected old value, exists
  when it must not, or is locked is ABORTED (as Gitaly); a new object that
  does not exist is NOT_FOUND.
- DeleteRefs: a locked ref is FAILED_PRECONDITION (Gitaly's structured error).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from grpc import aio

from praefect.node.context import NodeContext
from praefect.node.errors import FailedPrecondition, InvalidArgument, NotFound
from praefect.node.objects import open_object_reader
from praefect.node.refs import (
    RefUpdate,
    RefUpdateConflict,
    default_branch,
    for_each_ref,
    head_reference,
    is_object_id,
    is_valid_ref_name,
    object_format,
    require_ref_name,
    resolve_ref,
    resolve_revision,
    update_refs,
    zero_oid,
)
from praefect.node.repository_args import locate_repository
from praefect.node.services.base import NodeServicer, rpc
from praefect.protos.gitaly import ref_pb2, ref_pb2_grpc, shared_pb2

# Gitaly's lines.ItemsPerMessage: references per response message.
REFS_PER_MESSAGE = 20

_LOCAL_BRANCH_SORT = {
    ref_pb2.FindLocalBranchesRequest.NAME: "refname",
    ref_pb2.FindLocalBranchesRequest.UPDATED_ASC: "committerdate",
    ref_pb2.FindLocalBranchesRequest.UPDATED_DESC: "-committerdate",
}
_TAG_SORT_KEYS = {
    ref_pb2.FindAllTagsRequest.SortBy.REFNAME: "refname",
    ref_pb2.FindAllTagsRequest.SortBy.CREATORDATE: "creatordate",
    ref_pb2.FindAllTagsRequest.SortBy.VERSION_REFNAME: "version:refname",
}
_LIST_REFS_SORT_KEYS = {
    ref_pb2.ListRefsRequest.SortBy.REFNAME: "refname",
    ref_pb2.ListRefsRequest.SortBy.CREATORDATE: "creatordate",
    ref_pb2.ListRefsRequest.SortBy.AUTHORDATE: "authordate",
    ref_pb2.ListRefsRequest.SortBy.COMMITTERDATE: "committerdate",
}
_DIRECTIONS = {shared_pb2.ASCENDING: "", shared_pb2.DESCENDING: "-"}


@dataclass(frozen=True, slots=True)
class Page:
    """Which references of a listing to send: those after `token`, at most `limit`."""

    token: bytes | None = None
    limit: int = -1  # negative: no limit

    @classmethod
    def of(cls, params: shared_pb2.PaginationParameter | None) -> Page:
        # Gitaly: no parameters means everything; parameters with limit 0
        # mean nothing; a negative limit means no limit.
        if params is None:
            return cls()
        return cls(token=params.page_token.encode() or None, limit=params.limit)


async def paginate(
    lines: AsyncIterator[bytes], page: Page, *, size: int = REFS_PER_MESSAGE
) -> AsyncIterator[tuple[list[bytes], bool]]:
    """Group ref lines (`refname\\0...`) into batches of `size` after the page
    token, up to the limit. Yields (batch, more): `more` is True on the last
    batch when references beyond the limit exist."""
    past_token = page.token is None
    batch: list[bytes] = []
    sent = 0
    more = False
    async for line in lines:
        if not past_token:
            past_token = line.split(b"\x00", 1)[0] == page.token
            continue
        if 0 <= page.limit <= sent:
            more = True
            break
        if len(batch) == size:
            yield batch, False
            batch = []
        batch.append(line)
        sent += 1
    if not past_token:
        assert page.token is not None
        raise InvalidArgument(
            f"could not find page token {page.token.decode(errors='replace')!r}: "
            "give the name of a reference of the previous page"
        )
    if batch:
        yield batch, more


def _patterns(values: Sequence[bytes], what: str) -> list[str]:
    patterns = []
    for value in values:
        pattern = value.decode("utf-8", errors="replace")
        if not pattern or pattern.startswith("-") or "\x00" in pattern or "\n" in pattern:
            raise InvalidArgument(
                f"invalid {what} {pattern!r}: give a reference name or prefix such as refs/heads/"
            )
        patterns.append(pattern)
    return patterns


def encode_ref_cursor(ref_name: bytes) -> str:
    payload = json.dumps(
        {"ref_name": ref_name.decode("utf-8", errors="replace")}, separators=(",", ":")
    )
    return base64.b64encode(payload.encode()).decode()


def decode_ref_cursor(token: str) -> str:
    """Gitaly's ListRefs page token: base64 JSON {"ref_name"}, or a plain ref name."""
    try:
        decoded = json.loads(base64.b64decode(token, validate=True))
    except (binascii.Error, ValueError):
        return token
    name = decoded.get("ref_name") if isinstance(decoded, dict) else None
    return name if isinstance(name, str) and name else token


class RefService(NodeServicer, ref_pb2_grpc.RefServiceServicer):
    @rpc
    async def FindDefaultBranchName(
        self, request: ref_pb2.FindDefaultBranchNameRequest, context: aio.ServicerContext
    ) -> ref_pb2.FindDefaultBranchNameResponse:
        git_dir = locate_repository(self.ctx, request.repository).path
        name = await (head_reference(git_dir) if request.head_only else default_branch(git_dir))
        return ref_pb2.FindDefaultBranchNameResponse(name=name.encode())

    @rpc
    async def FindLocalBranches(
        self, request: ref_pb2.FindLocalBranchesRequest, context: aio.ServicerContext
    ) -> AsyncIterator[ref_pb2.FindLocalBranchesResponse]:
        git_dir = locate_repository(self.ctx, request.repository).path
        sort = _LOCAL_BRANCH_SORT.get(request.sort_by)
        if sort is None:
            raise InvalidArgument(
                f"unsupported sort_by {request.sort_by}: use NAME, UPDATED_ASC or UPDATED_DESC"
            )
        page = Page.of(request.pagination_params if request.HasField("pagination_params") else None)
        async with (
            open_object_reader(git_dir) as reader,
            for_each_ref(
                git_dir, ["refs/heads/"], fmt="%(refname)%00%(objectname)", sort=sort
            ) as lines,
        ):
            async for batch, _ in paginate(lines, page):
                branches = []
                for line in batch:
                    name, oid = line.split(b"\x00")
                    branch = shared_pb2.Branch(name=name)
                    commit = await reader.read_commit(oid.decode())
                    if commit is not None:
                        branch.target_commit.CopyFrom(commit)
                    branches.append(branch)
                yield ref_pb2.FindLocalBranchesResponse(local_branches=branches)

    @rpc
    async def FindAllBranches(
        self, request: ref_pb2.FindAllBranchesRequest, context: aio.ServicerContext
    ) -> AsyncIterator[ref_pb2.FindAllBranchesResponse]:
        git_dir = locate_repository(self.ctx, request.repository).path
        patterns = ["refs/heads/", "refs/remotes/"]
        options: list[str] = []
        if request.merged_only:
            default = await default_branch(git_dir)
            if not default:
                return  # nothing can be merged into a branch that does not exist
            options.append(f"--merged={default}")
            if request.merged_branches:
                patterns = _patterns(request.merged_branches, "merged_branches entry")
        async with (
            open_object_reader(git_dir) as reader,
            for_each_ref(
                git_dir, patterns, fmt="%(refname)%00%(objectname)", options=options
            ) as lines,
        ):
            async for batch, _ in paginate(lines, Page()):
                branches = []
                for line in batch:
                    name, oid = line.split(b"\x00")
                    branch = ref_pb2.FindAllBranchesResponse.Branch(name=name)
                    commit = await reader.read_commit(oid.decode())
                    if commit is not None:
                        branch.target.CopyFrom(commit)
                    branches.append(branch)
                yield ref_pb2.FindAllBranchesResponse(branches=branches)

    @rpc
    async def FindBranch(
        self, request: ref_pb2.FindBranchRequest, context: aio.ServicerContext
    ) -> ref_pb2.FindBranchResponse:
        git_dir = locate_repository(self.ctx, request.repository).path
        if not request.name:
            raise InvalidArgument("empty branch name: set name to a branch such as main")
        short = request.name.removeprefix(b"refs/heads/")
        ref = require_ref_name(b"refs/heads/" + short, what="branch name")
        oid = await resolve_ref(git_dir, ref)
        if oid is None:
            return ref_pb2.FindBranchResponse()
        async with open_object_reader(git_dir) as reader:
            commit = await reader.read_commit(oid)
        branch = shared_pb2.Branch(name=short)
        if commit is not None:
            branch.target_commit.CopyFrom(commit)
        return ref_pb2.FindBranchResponse(branch=branch)

    @rpc
    async def FindAllTags(
        self, request: ref_pb2.FindAllTagsRequest, context: aio.ServicerContext
    ) -> AsyncIterator[ref_pb2.FindAllTagsResponse]:
        git_dir = locate_repository(self.ctx, request.repository).path
        sort = ""
        if request.HasField("sort_by"):
            key = _TAG_SORT_KEYS.get(request.sort_by.key)
            direction = _DIRECTIONS.get(request.sort_by.direction)
            if key is None or direction is None:
                raise InvalidArgument(
                    "unsupported sort_by: key must be REFNAME, CREATORDATE or VERSION_REFNAME and "
                    "direction ASCENDING or DESCENDING"
                )
            sort = direction + key
        page = Page.of(request.pagination_params if request.HasField("pagination_params") else None)
        async with (
            open_object_reader(git_dir) as reader,
            for_each_ref(
                git_dir, ["refs/tags/"], fmt="%(refname)%00%(objectname)", sort=sort
            ) as lines,
        ):
            async for batch, _ in paginate(lines, page):
                tags = []
                for line in batch:
                    ref, oid = line.split(b"\x00")
                    obj = await reader.read(oid.decode())
                    if obj is None:
                        raise NotFound(
                            f"tag {ref.decode(errors='replace')} points at missing object {oid.decode()}"
                        )
                    tags.append(await reader.tag_from_object(ref.removeprefix(b"refs/tags/"), obj))
                yield ref_pb2.FindAllTagsResponse(tags=tags)

    @rpc
    async def FindTag(
        self, request: ref_pb2.FindTagRequest, context: aio.ServicerContext
    ) -> ref_pb2.FindTagResponse:
        git_dir = locate_repository(self.ctx, request.repository).path
        if not request.tag_name:
            raise InvalidArgument("empty tag_name: name the tag to find, e.g. v1.0")
        name = request.tag_name.decode("utf-8", errors="replace")
        if not is_valid_ref_name(f"refs/tags/{name}"):
            raise InvalidArgument(f"invalid tag name {name!r} (see git check-ref-format)")
        if await resolve_ref(git_dir, f"refs/tags/{name}") is None:
            raise NotFound(f"tag does not exist: refs/tags/{name}")
        async with open_object_reader(git_dir) as reader:
            tag = await reader.read_tag(name)
        if tag is None:
            raise NotFound(f"tag does not exist: refs/tags/{name}")
        return ref_pb2.FindTagResponse(tag=tag)

    @rpc
    async def RefExists(
        self, request: ref_pb2.RefExistsRequest, context: aio.ServicerContext
    ) -> ref_pb2.RefExistsResponse:
        git_dir = locate_repository(self.ctx, request.repository).path
        ref = require_ref_name(request.ref, what="ref")
        return ref_pb2.RefExistsResponse(value=await resolve_ref(git_dir, ref) is not None)

    @rpc
    async def DeleteRefs(
        self, request: ref_pb2.DeleteRefsRequest, context: aio.ServicerContext
    ) -> ref_pb2.DeleteRefsResponse:
        git_dir = locate_repository(self.ctx, request.repository).path
        if request.refs and request.except_with_prefix:
            raise InvalidArgument(
                "refs and except_with_prefix are mutually exclusive: set only one"
            )
        if not request.refs and not request.except_with_prefix:
            raise InvalidArgument(
                "empty refs and except_with_prefix: name the refs to delete (deleting all refs is refused)"
            )
        if any(not prefix for prefix in request.except_with_prefix):
            raise InvalidArgument("empty prefix in except_with_prefix")
        if request.refs:
            names = [require_ref_name(ref, what="ref to delete") for ref in request.refs]
        else:
            keep = [
                prefix.decode("utf-8", errors="replace") for prefix in request.except_with_prefix
            ]
            names = []
            async with for_each_ref(git_dir, [], fmt="%(refname)") as lines:
                async for line in lines:
                    name = line.decode("utf-8", errors="surrogateescape")
                    if not name.startswith(tuple(keep)):
                        names.append(name)
        fmt = await object_format(git_dir)
        try:
            await update_refs(
                git_dir, [RefUpdate(name, zero_oid(fmt)) for name in names], no_deref=True
            )
        except RefUpdateConflict as error:
            raise FailedPrecondition(f"cannot lock references: {error.message}") from error
        return ref_pb2.DeleteRefsResponse()

    @rpc
    async def UpdateReferences(
        self,
        request_iterator: AsyncIterator[ref_pb2.UpdateReferencesRequest],
        context: aio.ServicerContext,
    ) -> ref_pb2.UpdateReferencesResponse:
        git_dir = None
        fmt = ""
        updates: list[RefUpdate] = []
        async for request in request_iterator:
            if git_dir is None:
                git_dir = locate_repository(self.ctx, request.repository).path
                fmt = await object_format(git_dir)
            elif request.HasField("repository"):
                raise InvalidArgument(
                    "repository set in a subsequent request: only the first message names it"
                )
            if not request.updates:
                raise InvalidArgument(
                    "no updates specified: every message needs at least one update"
                )
            for update in request.updates:
                ref = require_ref_name(update.reference)
                old = update.old_object_id.decode("ascii", errors="replace")
                new = update.new_object_id.decode("ascii", errors="replace")
                if old and not is_object_id(old, fmt):
                    raise InvalidArgument(
                        f"invalid old_object_id {old!r} for {ref}: give a full {fmt} object id"
                    )
                if not is_object_id(new, fmt):
                    raise InvalidArgument(
                        f"invalid new_object_id {new!r} for {ref}: give a full {fmt} object id"
                    )
                updates.append(RefUpdate(ref, new, old or None))
        if git_dir is None:
            raise InvalidArgument(
                "empty request stream: send the repository and at least one update"
            )
        await update_refs(git_dir, updates)
        return ref_pb2.UpdateReferencesResponse()

    @rpc
    async def ListRefs(
        self, request: ref_pb2.ListRefsRequest, context: aio.ServicerContext
    ) -> AsyncIterator[ref_pb2.ListRefsResponse]:
        git_dir = locate_repository(self.ctx, request.repository).path
        if not request.patterns:
            raise InvalidArgument(
                "patterns must have at least one entry, e.g. refs/heads/ or refs/"
            )
        patterns = _patterns(request.patterns, "pattern")
        key = _LIST_REFS_SORT_KEYS.get(request.sort_by.key)
        direction = _DIRECTIONS.get(request.sort_by.direction)
        if key is None or direction is None:
            raise InvalidArgument(
                "unsupported sort_by: key must be REFNAME, CREATORDATE, AUTHORDATE or COMMITTERDATE "
                "and direction ASCENDING or DESCENDING"
            )
        fmt = await object_format(git_dir)
        options = []
        for raw_oid in request.pointing_at_oids:
            oid = raw_oid.decode("ascii", errors="replace")
            if not is_object_id(oid, fmt):
                raise InvalidArgument(
                    f"invalid pointing_at_oids entry {oid!r}: give full {fmt} object ids"
                )
            options.append(f"--points-at={oid}")
        params = request.pagination_params if request.HasField("pagination_params") else None
        if params is not None and params.page_token:
            params = shared_pb2.PaginationParameter(
                page_token=decode_ref_cursor(params.page_token), limit=params.limit
            )
        page = Page.of(params)
        head: list[ref_pb2.ListRefsResponse.Reference] = []
        if request.head and page.token is None:
            head_oid = await resolve_revision(git_dir, "HEAD")
            if head_oid is not None:
                head.append(ref_pb2.ListRefsResponse.Reference(name=b"HEAD", target=head_oid))
        line_format = "%(refname)%00%(objectname)" + (
            "%00%(*objectname)" if request.peel_tags else ""
        )
        sent_any = False
        async with for_each_ref(
            git_dir, patterns, fmt=line_format, sort=direction + key, options=options
        ) as lines:
            async for batch, more in paginate(lines, page):
                references = [*head]
                head = []
                for line in batch:
                    fields = line.split(b"\x00")
                    reference = ref_pb2.ListRefsResponse.Reference(
                        name=fields[0], target=fields[1].decode()
                    )
                    if request.peel_tags:
                        reference.peeled_target = fields[2].decode()
                    references.append(reference)
                response = ref_pb2.ListRefsResponse(references=references)
                if more:
                    response.pagination_cursor.next_cursor = encode_ref_cursor(
                        batch[-1].split(b"\x00", 1)[0]
                    )
                sent_any = True
                yield response
        if head and not sent_any:
            yield ref_pb2.ListRefsResponse(references=head)


def register(server: aio.Server, ctx: NodeContext) -> None:
    """Add this service's servicer to `server`."""
    ref_pb2_grpc.add_RefServiceServicer_to_server(RefService(ctx), server)
