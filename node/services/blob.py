"""The node's BlobService: GetBlob and GetBlobs over `git cat-file --batch`.

Blob contents are streamed from cat-file's output in messages of
BLOB_CHUNK_SIZE bytes and never held whole in memory. As in Gitaly:

- GetBlob wants a full hexadecimal object id of the repository's object
  format; an unknown object, or one that is not a blob, gets one empty
  response (no oid), which is how a client tells "not found";
- `limit` -1 means the whole blob, 0 no data, N the first N bytes; `size`
  is always the blob's full size;
- GetBlobs resolves every revision:path with one cat-file process by walking
  the trees (so a path may hold any byte), answers a path that does not
  exist (or a revision that does not resolve) with a response that carries
  only revision and path, a directory with its tree id and size, and a
  submodule with `is_submodule` and the commit id; neither gets data.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from grpc import aio

from praefect.node.context import NodeContext
from praefect.node.errors import Internal, InvalidArgument
from praefect.node.git import kill_and_reap, spawn_git, validate_revision
from praefect.node.objects import TreeItem, parse_tree
from praefect.node.refs import object_format
from praefect.node.repository_args import locate_repository
from praefect.node.services.base import NodeServicer, rpc
from praefect.protos.gitaly import blob_pb2, blob_pb2_grpc, shared_pb2

BLOB_CHUNK_SIZE = 128 * 1024
# Unread content up to this size is read and discarded to keep the cat-file
# process; beyond it, restarting cat-file is cheaper.
DISCARD_LIMIT = 1024 * 1024

_HEX_LENGTHS = {"sha1": 40, "sha256": 64}
_HEX = re.compile(r"[0-9a-fA-F]+")

_TREE_MODE = 0o40000
_SUBMODULE_MODE = 0o160000
_OBJECT_TYPES = {
    "commit": shared_pb2.COMMIT,
    "blob": shared_pb2.BLOB,
    "tree": shared_pb2.TREE,
    "tag": shared_pb2.TAG,
}


@dataclass(frozen=True, slots=True)
class ObjectHeader:
    oid: str
    type: str  # "blob", "tree", "commit" or "tag"
    size: int


class StreamingObjectReader:
    """One `git cat-file --batch` for many lookups, with contents streamed.

    `lookup` answers the header of an object; its content can then be read,
    all or part, with `content`. What is left unread is skipped at the next
    lookup: read and dropped when small, by restarting cat-file when large.
    The process is killed and reaped on exit.
    """

    def __init__(self, git_dir: Path) -> None:
        self._git_dir = git_dir
        self._stack: contextlib.AsyncExitStack | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._stdin: asyncio.StreamWriter | None = None
        self._stdout: asyncio.StreamReader | None = None
        # Content bytes of the current object not read yet; None when no
        # content (nor its terminating LF) is pending.
        self._unread: int | None = None

    async def __aenter__(self) -> StreamingObjectReader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stop()

    async def _streams(self) -> tuple[asyncio.StreamWriter, asyncio.StreamReader]:
        if self._stdin is None or self._stdout is None:
            stack = contextlib.AsyncExitStack()
            process = await stack.enter_async_context(
                spawn_git(["cat-file", "--batch"], git_dir=self._git_dir, stdin=True)
            )
            self._stack, self._process = stack, process
            assert process.stdin is not None and process.stdout is not None
            self._stdin, self._stdout = process.stdin, process.stdout
        return self._stdin, self._stdout

    async def _stop(self) -> None:
        stack, process = self._stack, self._process
        self._stack = self._process = self._stdin = self._stdout = None
        self._unread = None
        if stack is None or process is None:
            return
        try:
            await kill_and_reap(process)
        finally:
            await stack.aclose()

    async def lookup(self, name: str) -> ObjectHeader | None:
        """The header of the object `name` resolves to; None when it does not."""
        await self._skip_unread()
        stdin, stdout = await self._streams()
        stdin.write(name.encode() + b"\n")
        await stdin.drain()
        line = await stdout.readline()
        if not line.endswith(b"\n"):
            raise Internal("git cat-file stopped answering")
        fields = line[:-1].split(b" ")
        if len(fields) == 2 and fields[1] in (b"missing", b"ambiguous"):
            return None
        if len(fields) != 3 or not fields[2].isdigit():
            raise Internal(f"unexpected answer from git cat-file: {line[:200]!r}")
        header = ObjectHeader(fields[0].decode(), fields[1].decode(), int(fields[2]))
        self._unread = header.size
        return header

    async def content(self, limit: int | None = None) -> AsyncIterator[bytes]:
        """Up to `limit` (None: all) further bytes of the current object."""
        unread = self._unread or 0
        remaining = unread if limit is None else min(limit, unread)
        while remaining > 0:
            _, stdout = await self._streams()
            size = min(BLOB_CHUNK_SIZE, remaining)
            data = await _read_exactly(stdout, size)
            unread -= size
            self._unread = unread
            remaining -= size
            yield data

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self.content()])

    async def _skip_unread(self) -> None:
        if self._stdout is None or self._unread is None:
            return
        if self._unread > DISCARD_LIMIT:
            await self._stop()
            return
        rest = await _read_exactly(self._stdout, self._unread + 1)  # the content and its LF
        self._unread = None
        if not rest.endswith(b"\n"):
            raise Internal("git cat-file output is out of step")


async def _read_exactly(stream: asyncio.StreamReader, size: int) -> bytes:
    try:
        return await stream.readexactly(size)
    except asyncio.IncompleteReadError:
        raise Internal("git cat-file ended in the middle of an object") from None


class TreeWalker:
    """Finds tree entries by revision and path, reading each tree once."""

    def __init__(self, reader: StreamingObjectReader) -> None:
        self._reader = reader
        self._roots: dict[str, str | None] = {}
        self._trees: dict[str, dict[bytes, TreeItem]] = {}

    async def find(self, revision: str, path: bytes) -> TreeItem | None:
        parts = path.split(b"/")
        if not path or b"" in parts:
            return None
        tree = await self._root(revision)
        for part in parts[:-1]:
            if tree is None:
                return None
            entry = (await self._entries(tree)).get(part)
            tree = entry.oid if entry is not None and entry.mode == _TREE_MODE else None
        if tree is None:
            return None
        return (await self._entries(tree)).get(parts[-1])

    async def _root(self, revision: str) -> str | None:
        if revision not in self._roots:
            header = await self._reader.lookup(f"{revision}^{{tree}}")
            self._roots[revision] = None
            if header is not None and header.type == "tree":
                self._trees[header.oid] = self._parse(header, await self._reader.read_all())
                self._roots[revision] = header.oid
        return self._roots[revision]

    async def _entries(self, tree: str) -> dict[bytes, TreeItem]:
        if tree not in self._trees:
            header = await self._reader.lookup(tree)
            if header is None or header.type != "tree":
                raise Internal(f"tree {tree} is missing from the repository")
            self._trees[tree] = self._parse(header, await self._reader.read_all())
        return self._trees[tree]

    @staticmethod
    def _parse(header: ObjectHeader, data: bytes) -> dict[bytes, TreeItem]:
        try:
            items = parse_tree(data, hash_size=len(header.oid) // 2)
        except ValueError:
            raise Internal(f"tree {header.oid} cannot be parsed") from None
        return {item.name: item for item in items}


def validate_object_id(oid: str, fmt: str) -> str:
    """A full hexadecimal object id of the repository's format, or INVALID_ARGUMENT."""
    length = _HEX_LENGTHS.get(fmt, 40)
    if len(oid) != length or not _HEX.fullmatch(oid):
        raise InvalidArgument(
            f"invalid object id {oid!r}: give a full object id of {length} hexadecimal "
            f"characters (the repository uses {fmt})"
        )
    return oid


def _read_limit(limit: int, size: int) -> int:
    return size if limit < 0 else min(limit, size)


class BlobServicer(NodeServicer, blob_pb2_grpc.BlobServiceServicer):
    @rpc
    async def GetBlob(
        self, request: blob_pb2.GetBlobRequest, context: aio.ServicerContext
    ) -> AsyncIterator[blob_pb2.GetBlobResponse]:
        location = locate_repository(
            self.ctx, request.repository if request.HasField("repository") else None
        )
        oid = validate_object_id(request.oid, await object_format(location.path))
        async with StreamingObjectReader(location.path) as reader:
            header = await reader.lookup(oid)
            if header is None or header.type != "blob":
                yield blob_pb2.GetBlobResponse()
                return
            first: blob_pb2.GetBlobResponse | None = blob_pb2.GetBlobResponse(
                size=header.size, oid=header.oid
            )
            async for data in reader.content(_read_limit(request.limit, header.size)):
                message, first = first or blob_pb2.GetBlobResponse(), None
                message.data = data
                yield message
            if first is not None:
                yield first

    @rpc
    async def GetBlobs(
        self, request: blob_pb2.GetBlobsRequest, context: aio.ServicerContext
    ) -> AsyncIterator[blob_pb2.GetBlobsResponse]:
        location = locate_repository(
            self.ctx, request.repository if request.HasField("repository") else None
        )
        if not request.revision_paths:
            raise InvalidArgument("empty revision_paths: ask for at least one revision and path")
        for revision_path in request.revision_paths:
            validate_revision(revision_path.revision)
        async with StreamingObjectReader(location.path) as reader:
            walker = TreeWalker(reader)
            for revision_path in request.revision_paths:
                path = revision_path.path
                if len(path) > 1:
                    path = path.rstrip(b"/")
                response = blob_pb2.GetBlobsResponse(revision=revision_path.revision, path=path)
                entry = await walker.find(revision_path.revision, path)
                if entry is None:
                    yield response
                    continue
                response.mode = entry.mode
                response.oid = entry.oid
                if entry.mode == _SUBMODULE_MODE:
                    response.is_submodule = True
                    response.type = shared_pb2.COMMIT
                    yield response
                    continue
                header = await reader.lookup(entry.oid)
                if header is None:
                    raise Internal(f"object {entry.oid} of {path!r} is missing from the repository")
                response.size = header.size
                response.type = _OBJECT_TYPES.get(header.type, shared_pb2.UNKNOWN)
                if header.type != "blob":
                    yield response
                    continue
                first: blob_pb2.GetBlobsResponse | None = response
                async for data in reader.content(_read_limit(request.limit, header.size)):
                    message, first = first or blob_pb2.GetBlobsResponse(), None
                    message.data = data
                    yield message
                if first is not None:
                    yield first


def register(server: aio.Server, ctx: NodeContext) -> None:
    """Add this service's servicer to `server`."""
    blob_pb2_grpc.add_BlobServiceServicer_to_server(BlobServicer(ctx), server)
