"""CommitService: commits, history and trees of a repository.

Behaviour follows Gitaly's commit service. Revisions are checked before git
sees them (`commitish`): never empty where one is needed, never starting
with `-`, no whitespace, control characters or `:`; `^`, `~` and `..` are
allowed, as in Gitaly. Paths always come after `--`.

Where the node chooses differently from Gitaly, it says so here:

- ListCommits: an unknown revision is NOT_FOUND (Gitaly: INTERNAL); when the
  page limit stops the listing early, the last message carries the last
  commit's id as `next_cursor` (the page token of the next page).
- FindCommits `message_regex` is an extended regular expression matched
  case-insensitively (git `-E -i --grep`).
- CommitsByMessage matches `query` as git's basic regular expression,
  case-insensitively, as Gitaly does (`--grep=<query> --regexp-ignore-case`).
- An unknown page token of GetTreeEntries is INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import json
import posixpath
import re
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from praefect.node.context import NodeContext
from praefect.node.errors import FailedPrecondition, InvalidArgument, NodeError, NotFound
from praefect.node.git import run_git, spawn_git
from praefect.node.objects import (
    ObjectReader,
    TreeItem,
    add_trailers,
    open_object_reader,
    open_object_stream,
    parse_trailers,
)
from praefect.node.refs import default_branch, resolve_revision
from praefect.node.repository_args import locate_repository
from praefect.node.services.base import NodeServicer, rpc
from praefect.protos.gitaly import commit_pb2, commit_pb2_grpc, shared_pb2

COMMITS_PER_MESSAGE = 20
ENTRIES_PER_MESSAGE = 100
PATHS_PER_MESSAGE = 100
BLOB_CHUNK_SIZE = 64 * 1024
# Gitaly follows a chain of single-subtree directories at most this deep.
FLAT_PATH_DEPTH = 10

_FORBIDDEN_IN_REVISION = re.compile(r"[\x00-\x20\x7f:]")
_PSEUDO_REVISIONS = ("--all", "--not")
_SHORTSTAT = re.compile(
    rb"(\d+) files? changed(?:, (\d+) insertions?\(\+\))?(?:, (\d+) deletions?\(-\))?"
)
_MISSING_REVISION = ("bad revision", "unknown revision", "ambiguous argument", "bad object")

T = TypeVar("T")


def commitish(value: str | bytes, *, what: str = "revision", allow_empty: bool = False) -> str:
    """A revision that is safe to give git; INVALID_ARGUMENT otherwise."""
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
    if not text:
        if allow_empty:
            return ""
        raise InvalidArgument(f"empty {what}: give a commit id, branch or tag")
    if text.startswith("-"):
        raise InvalidArgument(f"invalid {what} {text!r}: must not start with '-'")
    if _FORBIDDEN_IN_REVISION.search(text):
        raise InvalidArgument(
            f"invalid {what} {text!r}: whitespace, control characters and ':' are not allowed"
        )
    return text


def _paths(values: Sequence[bytes], what: str = "path") -> list[str]:
    paths = []
    for value in values:
        if not value:
            raise InvalidArgument(f"empty {what}: leave it out or give a path in the repository")
        if b"\x00" in value:
            raise InvalidArgument(f"invalid {what}: contains a NUL byte")
        paths.append(value.decode("utf-8", errors="surrogateescape"))
    return paths


def _git_date(timestamp: Timestamp) -> str:
    return datetime.datetime.fromtimestamp(timestamp.seconds, datetime.UTC).isoformat()


def _global_options(options: shared_pb2.GlobalOptions | None, literal: bool = False) -> list[str]:
    if literal or (options is not None and options.literal_pathspecs):
        return ["--literal-pathspecs"]
    return []


async def _batches(items: AsyncIterator[T], size: int) -> AsyncIterator[list[T]]:
    batch: list[T] = []
    async for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def _records(
    stream: AsyncGenerator[bytes, None], separator: bytes
) -> AsyncGenerator[bytes, None]:
    """Split a byte stream into `separator`-terminated records.

    Closing the records closes the stream, which ends its git process.
    """
    pending = b""
    async with contextlib.aclosing(stream):
        async for chunk in stream:
            pending += chunk
            *complete, pending = pending.split(separator)
            for record in complete:
                yield record
    if pending:
        yield pending


class GitFailure:
    """Where a streamed git command leaves its complaint once its output has ended."""

    def __init__(self) -> None:
        self.error = ""


async def _run_stream(
    git_dir: Path, args: list[str], failure: GitFailure | None = None
) -> AsyncGenerator[bytes, None]:
    """Yield git's stdout in chunks; record stderr in `failure.error` when git fails."""
    async with spawn_git(args, git_dir=git_dir) as process:
        assert process.stdout is not None and process.stderr is not None
        while chunk := await process.stdout.read(BLOB_CHUNK_SIZE):
            yield chunk
        stderr = await process.stderr.read()
        if await process.wait() != 0 and failure is not None:
            failure.error = (
                stderr.decode(errors="replace").strip() or f"git exited with {process.returncode}"
            )


def _lines(
    git_dir: Path, args: list[str], failure: GitFailure | None = None
) -> AsyncGenerator[bytes, None]:
    return _records(_run_stream(git_dir, args, failure), b"\n")


def _revision_error(what: str, error: str) -> NodeError:
    if any(marker in error for marker in _MISSING_REVISION):
        return NotFound(f"{what}: {error.removeprefix('fatal: ')}")
    return NodeError(f"{what}: {error}")


def _tree_entry_type(item: TreeItem) -> commit_pb2.TreeEntry.EntryType.ValueType:
    return {"tree": commit_pb2.TreeEntry.TREE, "commit": commit_pb2.TreeEntry.COMMIT}.get(
        item.type, commit_pb2.TreeEntry.BLOB
    )


Tree = tuple[str, list[TreeItem]]


async def _tree_at(reader: ObjectReader, root: Tree | None, path: str) -> Tree | None:
    """The tree at `path` ("" for the root) below the tree `root`.

    Walks down by names, so no git path syntax (`./`, `../`) ever applies to
    the caller's path.
    """
    tree = root
    for component in path.split("/") if path else []:
        if tree is None:
            return None
        item = next((entry for entry in tree[1] if entry.name == component.encode()), None)
        if item is None or item.type != "tree":
            return None
        tree = await reader.read_tree(item.oid)
    return tree


async def _flat_path(reader: ObjectReader, entry: commit_pb2.TreeEntry) -> bytes:
    """Follow directories that contain nothing but one directory (Gitaly's flat path)."""
    flat, oid = entry.path, entry.oid
    for _ in range(1, FLAT_PATH_DEPTH):
        tree = await reader.read_tree(oid)
        if tree is None or len(tree[1]) != 1 or tree[1][0].type != "tree":
            break
        flat, oid = flat + b"/" + tree[1][0].name, tree[1][0].oid
    return flat


def _encode_tree_cursor(path: bytes) -> str:
    payload = json.dumps(
        {"file_name": path.decode("utf-8", errors="replace")}, separators=(",", ":")
    )
    return base64.b64encode(payload.encode()).decode()


def _decode_tree_cursor(token: str) -> tuple[str, bool]:
    """(continuation point, is it a path). Old-style tokens are object ids."""
    try:
        decoded = json.loads(base64.b64decode(token, validate=True))
    except (binascii.Error, ValueError):
        return token, False
    if not isinstance(decoded, dict) or not isinstance(decoded.get("file_name"), str):
        return token, False
    return decoded["file_name"], True


_TYPE_ORDER = {
    commit_pb2.TreeEntry.TREE: 0,
    commit_pb2.TreeEntry.BLOB: 1,
    commit_pb2.TreeEntry.COMMIT: 2,
}


class CommitService(NodeServicer, commit_pb2_grpc.CommitServiceServicer):
    @rpc
    async def FindCommit(
        self, request: commit_pb2.FindCommitRequest, context: aio.ServicerContext
    ) -> commit_pb2.FindCommitResponse:
        git_dir = locate_repository(self.ctx, request.repository).path
        revision = commitish(request.revision)
        async with open_object_reader(git_dir) as reader:
            commit = await reader.read_commit(revision)
        if commit is None:
            return commit_pb2.FindCommitResponse()
        if request.trailers:
            await add_trailers(git_dir, [commit])
        return commit_pb2.FindCommitResponse(commit=commit)

    @rpc
    async def ListCommits(
        self, request: commit_pb2.ListCommitsRequest, context: aio.ServicerContext
    ) -> AsyncIterator[commit_pb2.ListCommitsResponse]:
        git_dir = locate_repository(self.ctx, request.repository).path
        if not request.revisions:
            raise InvalidArgument(
                "missing revisions: give at least one revision, e.g. main or --all"
            )
        revisions = [
            revision if revision in _PSEUDO_REVISIONS else commitish(revision)
            for revision in request.revisions
        ]
        args = ["rev-list"]
        args += {
            commit_pb2.ListCommitsRequest.TOPO: ["--topo-order"],
            commit_pb2.ListCommitsRequest.DATE: ["--date-order"],
        }.get(request.order, [])
        if request.reverse:
            args.append("--reverse")
        if request.max_parents:
            args.append(f"--max-parents={request.max_parents}")
        if request.disable_walk:
            args.append("--no-walk")
        if request.first_parent:
            args.append("--first-parent")
        if request.HasField("before"):
            args.append(f"--before={_git_date(request.before)}")
        if request.HasField("after"):
            args.append(f"--after={_git_date(request.after)}")
        if request.author:
            args.append(f"--author={request.author.decode('utf-8', errors='surrogateescape')}")
        if request.ignore_case:
            args.append("--regexp-ignore-case")
        args += [
            f"--grep={pattern.decode('utf-8', errors='surrogateescape')}"
            for pattern in request.commit_message_patterns
        ]
        if request.skip:
            args.append(f"--skip={request.skip}")
        # Revisions are validated (none starts with '-' but the two pseudo
        # revisions), so no --end-of-options: it would turn --not into a name.
        args += [*revisions, "--", *_paths(request.paths)]

        token = request.pagination_params.page_token
        limit = request.pagination_params.limit
        failure = GitFailure()
        sent = 0
        past_token = not token
        batch: list[shared_pb2.GitCommit] = []
        lines = _lines(git_dir, args, failure)
        async with open_object_reader(git_dir) as reader, contextlib.aclosing(lines):
            async for line in lines:
                oid = line.decode()
                if not past_token:
                    past_token = oid == token
                    continue
                if limit > 0 and sent >= limit:
                    # A later page exists: say where it starts.
                    yield commit_pb2.ListCommitsResponse(
                        commits=batch,
                        pagination_cursor=shared_pb2.PaginationCursor(
                            next_cursor=batch[-1].id if batch else ""
                        ),
                    )
                    return
                commit = await reader.read_commit(oid, peel=False)
                if commit is None:
                    raise NotFound(f"commit {oid} listed by rev-list is missing")
                batch.append(commit)
                sent += 1
                if len(batch) >= COMMITS_PER_MESSAGE and not (limit > 0 and sent >= limit):
                    yield commit_pb2.ListCommitsResponse(commits=batch)
                    batch = []
        if failure.error:
            raise _revision_error("listing commits failed", failure.error)
        if batch:
            yield commit_pb2.ListCommitsResponse(commits=batch)

    @rpc
    async def CountCommits(
        self, request: commit_pb2.CountCommitsRequest, context: aio.ServicerContext
    ) -> commit_pb2.CountCommitsResponse:
        git_dir = locate_repository(self.ctx, request.repository).path
        revision = commitish(request.revision, allow_empty=True)
        revisions = [commitish(value) for value in request.revisions]
        if not revision and not revisions and not request.all:
            raise InvalidArgument("empty revision and all is false: give a revision or set all")
        args = [*_global_options(request.global_options), "rev-list", "--count"]
        if request.all:
            args.append("--all")
        if request.HasField("before"):
            args.append(f"--before={_git_date(request.before)}")
        if request.HasField("after"):
            args.append(f"--after={_git_date(request.after)}")
        if request.max_count:
            args.append(f"--max-count={request.max_count}")
        if request.first_parent:
            args.append("--first-parent")
        if not request.all:
            args += ["--end-of-options", *([revision] if revision else []), *revisions]
        args.append("--")
        if request.path:
            args += _paths([request.path])
        result = await run_git(args, git_dir=git_dir, check=False)
        # As Gitaly: a revision that does not exist counts zero commits.
        count = int(result.stdout.strip() or 0) if result.ok else 0
        return commit_pb2.CountCommitsResponse(count=count)

    @rpc
    async def CommitIsAncestor(
        self, request: commit_pb2.CommitIsAncestorRequest, context: aio.ServicerContext
    ) -> commit_pb2.CommitIsAncestorResponse:
        git_dir = locate_repository(self.ctx, request.repository).path
        if not request.ancestor_id:
            raise InvalidArgument("empty ancestor_id: give the commit that may be an ancestor")
        if not request.child_id:
            raise InvalidArgument(
                "empty child_id: give the commit that may descend from ancestor_id"
            )
        ancestor = commitish(request.ancestor_id, what="ancestor_id")
        child = commitish(request.child_id, what="child_id")
        result = await run_git(
            ["merge-base", "--is-ancestor", "--end-of-options", ancestor, child],
            git_dir=git_dir,
            check=False,
        )
        # As Gitaly: commits that do not exist are not ancestors.
        return commit_pb2.CommitIsAncestorResponse(value=result.ok)

    @rpc
    async def TreeEntry(
        self, request: commit_pb2.TreeEntryRequest, context: aio.ServicerContext
    ) -> AsyncIterator[commit_pb2.TreeEntryResponse]:
        git_dir = locate_repository(self.ctx, request.repository).path
        revision = commitish(request.revision)
        if not request.path:
            raise InvalidArgument("empty path: give the path of a file or directory")
        if request.limit < 0:
            raise InvalidArgument("negative limit: give 0 (no limit) or a number of bytes")
        if request.max_size < 0:
            raise InvalidArgument("negative max_size: give 0 (no maximum) or a number of bytes")
        path = request.path.decode("utf-8", errors="surrogateescape")
        if len(path) > 1:
            path = path.rstrip("/")
        directory, name = posixpath.split(path)
        async with open_object_reader(git_dir) as reader:
            root = await reader.read_tree(f"{revision}^{{tree}}")
            tree = await _tree_at(reader, root, directory)
            item = (
                next((entry for entry in tree[1] if entry.name == name.encode()), None)
                if tree
                else None
            )
            if item is None:
                raise NotFound(f"tree entry not found: {path!r} at {revision!r}")
            if item.type == "commit":
                yield commit_pb2.TreeEntryResponse(
                    type=commit_pb2.TreeEntryResponse.COMMIT, oid=item.oid, mode=item.mode
                )
                return
            if item.type == "tree":
                obj = await reader.read(item.oid)
                size = len(obj.data) if obj else 0
                yield commit_pb2.TreeEntryResponse(
                    type=commit_pb2.TreeEntryResponse.TREE, oid=item.oid, size=size, mode=item.mode
                )
                return
        async with open_object_stream(git_dir, item.oid) as stream:
            if stream is None:
                raise NotFound(f"blob {item.oid} of {path!r} is missing from the repository")
            size = stream.info.size
            if request.max_size and size > request.max_size:
                raise FailedPrecondition(
                    f"object size ({size}) is bigger than the maximum allowed size ({request.max_size})"
                )
            response = commit_pb2.TreeEntryResponse(
                type=commit_pb2.TreeEntryResponse.BLOB, oid=item.oid, size=size, mode=item.mode
            )
            limit = request.limit if request.limit else -1
            async for chunk in stream.chunks(limit, chunk_size=BLOB_CHUNK_SIZE):
                response.data = chunk
                yield response
                response = commit_pb2.TreeEntryResponse()
            if response.type == commit_pb2.TreeEntryResponse.BLOB and response.oid:
                yield response  # an empty blob, or limit cut everything

    @rpc
    async def GetTreeEntries(
        self, request: commit_pb2.GetTreeEntriesRequest, context: aio.ServicerContext
    ) -> AsyncIterator[commit_pb2.GetTreeEntriesResponse]:
        git_dir = locate_repository(self.ctx, request.repository).path
        revision = commitish(request.revision)
        if not request.path:
            raise InvalidArgument("empty path: give a directory, or '.' for the root")
        path = request.path.decode("utf-8", errors="surrogateescape").strip("/")
        if path == ".":
            path = ""
        entries: list[commit_pb2.TreeEntry] = []
        # As Gitaly: an unknown revision or path is NOT_FOUND for recursive
        # listings and INVALID_ARGUMENT otherwise; a path to a file lists nothing.
        missing: type[NodeError] = NotFound if request.recursive else InvalidArgument
        async with open_object_reader(git_dir) as reader:
            root = await reader.read_tree(f"{revision}^{{tree}}")
            if root is None:
                raise missing(f"invalid revision or path: revision {revision!r} does not exist")
            tree = await _tree_at(reader, root, path)
            if tree is None:
                if await self._is_blob(reader, root, path):
                    return
                raise missing(f"invalid revision or path: {path!r} does not exist at {revision!r}")
            prefix = path.encode() + b"/" if path else b""
            if request.recursive:
                entries = await self._recursive_entries(git_dir, tree[0], prefix, revision)
            else:
                entries = [
                    commit_pb2.TreeEntry(
                        oid=item.oid,
                        path=prefix + item.name,
                        type=_tree_entry_type(item),
                        mode=item.mode,
                        commit_oid=revision,
                    )
                    for item in tree[1]
                ]
            if request.sort == commit_pb2.GetTreeEntriesRequest.TREES_FIRST:
                entries.sort(key=lambda entry: _TYPE_ORDER.get(entry.type, 3))
            cursor = ""
            if request.HasField("pagination_params"):
                entries, cursor = self._paginate_entries(entries, request.pagination_params)
            if not request.recursive and not request.skip_flat_paths:
                for entry in entries:
                    entry.flat_path = (
                        await _flat_path(reader, entry)
                        if entry.type == commit_pb2.TreeEntry.TREE
                        else entry.path
                    )
        for index in range(0, len(entries), ENTRIES_PER_MESSAGE):
            response = commit_pb2.GetTreeEntriesResponse(
                entries=entries[index : index + ENTRIES_PER_MESSAGE]
            )
            if index == 0:
                # As Gitaly: the cursor (maybe empty) travels on the first message only.
                response.pagination_cursor.next_cursor = cursor
            yield response

    @staticmethod
    async def _is_blob(reader: ObjectReader, root: Tree, path: str) -> bool:
        directory, name = posixpath.split(path)
        tree = await _tree_at(reader, root, directory)
        return tree is not None and any(
            item.name == name.encode() and item.type != "tree" for item in tree[1]
        )

    @staticmethod
    async def _recursive_entries(
        git_dir: Path, tree_oid: str, prefix: bytes, revision: str
    ) -> list[commit_pb2.TreeEntry]:
        entries = []
        listing = _records(
            _run_stream(git_dir, ["ls-tree", "-r", "-t", "-z", "--end-of-options", tree_oid]),
            b"\x00",
        )
        async for record in listing:
            info, _, name = record.partition(b"\t")
            mode, _, oid = info.decode().split(" ")
            item = TreeItem(int(mode, 8), prefix + name, oid)
            entries.append(
                commit_pb2.TreeEntry(
                    oid=oid,
                    path=item.name,
                    type=_tree_entry_type(item),
                    mode=item.mode,
                    commit_oid=revision,
                )
            )
        return entries

    @staticmethod
    def _paginate_entries(
        entries: list[commit_pb2.TreeEntry], params: shared_pb2.PaginationParameter
    ) -> tuple[list[commit_pb2.TreeEntry], str]:
        start = 0
        if params.page_token:
            point, by_path = _decode_tree_cursor(params.page_token)
            index = next(
                (
                    i
                    for i, entry in enumerate(entries)
                    if (entry.path.decode(errors="replace") if by_path else entry.oid) == point
                ),
                None,
            )
            if index is None:
                raise InvalidArgument(f"could not find starting point {point!r} of the page token")
            start = index + 1
        if params.limit == 0:
            return [], ""
        if params.limit < 0 or start + params.limit >= len(entries):
            return entries[start:], ""
        page = entries[start : start + params.limit]
        return page, _encode_tree_cursor(page[-1].path)

    @rpc
    async def ListFiles(
        self, request: commit_pb2.ListFilesRequest, context: aio.ServicerContext
    ) -> AsyncIterator[commit_pb2.ListFilesResponse]:
        git_dir = locate_repository(self.ctx, request.repository).path
        revision = commitish(request.revision, allow_empty=True)
        if not revision:
            revision = await default_branch(git_dir)
            if not revision:
                raise FailedPrecondition(
                    "repository does not have a default branch: give a revision"
                )
        if await resolve_revision(git_dir, f"{revision}^{{tree}}") is None:
            yield commit_pb2.ListFilesResponse()
            return
        args = ["ls-tree", "-z", "-r", "--full-tree", "--full-name", "--end-of-options", revision]

        async def blob_paths() -> AsyncIterator[bytes]:
            async for record in _records(_run_stream(git_dir, args), b"\x00"):
                info, _, name = record.partition(b"\t")
                if info.split(b" ")[1] == b"blob":
                    yield name

        async for batch in _batches(blob_paths(), PATHS_PER_MESSAGE):
            yield commit_pb2.ListFilesResponse(paths=batch)

    @rpc
    async def LastCommitForPath(
        self, request: commit_pb2.LastCommitForPathRequest, context: aio.ServicerContext
    ) -> commit_pb2.LastCommitForPathResponse:
        git_dir = locate_repository(self.ctx, request.repository).path
        revision = commitish(request.revision)
        path = request.path.decode("utf-8", errors="surrogateescape")
        if not path or path == "/":
            path = "."
        if "\x00" in path:
            raise InvalidArgument("invalid path: contains a NUL byte")
        args = [
            *_global_options(request.global_options, request.literal_pathspec),
            "log",
            "--format=%H",
            "--max-count=1",
            "--end-of-options",
            revision,
            "--",
            path,
        ]
        result = await run_git(args, git_dir=git_dir, check=False)
        oid = result.stdout.decode().strip() if result.ok else ""
        if not oid:
            return commit_pb2.LastCommitForPathResponse()
        async with open_object_reader(git_dir) as reader:
            commit = await reader.read_commit(oid, peel=False)
        return commit_pb2.LastCommitForPathResponse(commit=commit)

    @rpc
    async def FindCommits(
        self, request: commit_pb2.FindCommitsRequest, context: aio.ServicerContext
    ) -> AsyncIterator[commit_pb2.FindCommitsResponse]:
        git_dir = locate_repository(self.ctx, request.repository).path
        revision = commitish(request.revision, allow_empty=True)
        paths = _paths(request.paths)
        references = [
            _paths([pattern], "include_referenced_by pattern")[0]
            for pattern in request.include_referenced_by
        ]
        if not revision and not request.all:
            revision = await default_branch(git_dir)
            if not revision:
                return  # an empty repository has no history
        manual_offset = request.follow and request.offset > 0
        fmt = "%x1e%H%x1f"
        if request.trailers:
            fmt += "%(trailers:unfold,separator=%x00)"
        fmt += "%x1f"
        if references:
            fmt += "%D"
        args = [*_global_options(request.global_options), "log", f"--format={fmt}"]
        if request.offset > 0 and not manual_offset:
            args.append(f"--skip={request.offset}")
        # As Gitaly: the limit is always given, so limit 0 lists nothing.
        args.append(f"--max-count={request.limit + (request.offset if manual_offset else 0)}")
        if request.follow and paths:
            args.append("--follow")
        if request.author:
            args.append(f"--author={request.author.decode('utf-8', errors='surrogateescape')}")
        if request.skip_merges:
            args.append("--no-merges")
        if request.disable_walk:
            args.append("--no-walk")
        if request.HasField("before"):
            args.append(f"--before={_git_date(request.before)}")
        if request.HasField("after"):
            args.append(f"--after={_git_date(request.after)}")
        if request.all:
            args += ["--all", "--reverse"]
        if request.first_parent:
            args.append("--first-parent")
        if request.order == commit_pb2.FindCommitsRequest.TOPO:
            args.append("--topo-order")
        if request.include_shortstat:
            args.append("--shortstat")
        if references:
            args.append("--decorate=full")
            args += [f"--decorate-refs={pattern}" for pattern in references]
        if request.message_regex:
            args += ["--extended-regexp", "--regexp-ignore-case", f"--grep={request.message_regex}"]
        args.append("--end-of-options")
        if revision:
            args.append(revision)
        args += ["--", *paths]

        skipped = 0
        batch: list[shared_pb2.GitCommit] = []
        async with open_object_reader(git_dir) as reader:
            # As Gitaly: git's complaints (an unknown revision) end the list quietly.
            async for record in _records(_run_stream(git_dir, args), b"\x1e"):
                header, _, stats = record.partition(b"\n")
                if not header:
                    continue
                if manual_offset and skipped < request.offset:
                    skipped += 1
                    continue
                oid, trailers, decorations = [*header.split(b"\x1f"), b"", b""][:3]
                commit = await reader.read_commit(oid.decode(), peel=False)
                if commit is None:
                    continue
                if request.trailers:
                    commit.trailers.extend(parse_trailers(trailers))
                if request.include_shortstat and (match := _SHORTSTAT.search(stats)):
                    commit.short_stats.CopyFrom(
                        shared_pb2.CommitStatInfo(
                            changed_files=int(match.group(1)),
                            additions=int(match.group(2) or 0),
                            deletions=int(match.group(3) or 0),
                        )
                    )
                if references:
                    commit.referenced_by.extend(_decorations(decorations))
                batch.append(commit)
                if len(batch) >= COMMITS_PER_MESSAGE:
                    yield commit_pb2.FindCommitsResponse(commits=batch)
                    batch = []
        if batch:
            yield commit_pb2.FindCommitsResponse(commits=batch)

    @rpc
    async def CommitsByMessage(
        self, request: commit_pb2.CommitsByMessageRequest, context: aio.ServicerContext
    ) -> AsyncIterator[commit_pb2.CommitsByMessageResponse]:
        git_dir = locate_repository(self.ctx, request.repository).path
        revision = commitish(request.revision, allow_empty=True)
        if not request.query:
            raise InvalidArgument("empty query: give the text to look for in commit messages")
        if not revision:
            revision = await default_branch(git_dir)
            if not revision:
                return
        args = [
            *_global_options(request.global_options),
            "log",
            "--format=%H",
            f"--grep={request.query}",
            "--regexp-ignore-case",
        ]
        if request.offset > 0:
            args.append(f"--skip={request.offset}")
        if request.limit > 0:
            args.append(f"--max-count={request.limit}")
        args += [
            "--end-of-options",
            revision,
            "--",
            *(_paths([request.path]) if request.path else []),
        ]
        async with open_object_reader(git_dir) as reader:

            async def commits() -> AsyncIterator[shared_pb2.GitCommit]:
                # As Gitaly: git's complaints (an unknown revision) end the list quietly.
                async for line in _lines(git_dir, args):
                    commit = await reader.read_commit(line.decode(), peel=False)
                    if commit is not None:
                        yield commit

            async for batch in _batches(commits(), COMMITS_PER_MESSAGE):
                yield commit_pb2.CommitsByMessageResponse(commits=batch)


def _decorations(line: bytes) -> list[bytes]:
    """`%D` of `git log --decorate=full` as ref names (Gitaly's parseRefs)."""
    names: list[bytes] = []
    for item in line.split(b", "):
        if not item:
            continue
        item = item.removeprefix(b"tag: ")
        left, arrow, right = item.partition(b" -> ")
        names += [left, right] if arrow else [item]
    return names


def register(server: aio.Server, ctx: NodeContext) -> None:
    """Add this service's servicer to `server`."""
    commit_pb2_grpc.add_CommitServiceServicer_to_server(CommitService(ctx), server)
