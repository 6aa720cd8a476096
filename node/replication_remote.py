"""The target node's one conversation with the source node: an SSHUploadPack call.

A replication opens one SSHUploadPack call to the source (protocol v2, the
token of the ``gitaly-servers`` header and the current trace context in its
metadata) and uses it for everything it needs from the source:

1. `open_source_session` reads the capability advertisement: the object
   format; NOT_FOUND means the source repository does not exist (None).
2. `SourceSession.list_refs` sends one ``ls-refs`` (``symrefs``, ``unborn``,
   no prefix): every ref and HEAD, even an unborn HEAD, in one round trip.
3. If the target differs, `SourceSession.relay` hands the call over to
   ``git fetch`` (see `praefect.node.replication_fetch`): git receives the
   advertisement again and then talks to the source's upload-pack directly,
   with its own negotiation, over a socket whose other end this relay pumps.

upload-pack on the source serves commands until its input ends, so the
``ls-refs`` of step 2 and git's own commands share one process there.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio

from praefect.core.telemetry.propagation import inject_trace_context
from praefect.core.tokens import bearer_metadata
from praefect.node.errors import FailedPrecondition, NodeError
from praefect.node.gitaly_servers import GitalyServer
from praefect.protos.gitaly import shared_pb2, ssh_pb2, ssh_pb2_grpc

#: for the advertisement and ls-refs; the fetch itself is bounded by the
#: caller's deadline, which cancels the replication
SOURCE_LISTING_TIMEOUT = 60.0
CHUNK_SIZE = 64 * 1024
MAX_PACKET = 65520  # LARGE_PACKET_MAX
STDERR_KEPT = 8 * 1024
FLUSH = b"0000"
DELIM = b"0001"
_OBJECT_ID = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


@dataclass(frozen=True, slots=True)
class RemoteHead:
    """The source's HEAD: a branch (`symref`, possibly unborn) or a detached `oid`."""

    symref: str | None
    oid: str | None


@dataclass(frozen=True, slots=True)
class SourceRefs:
    """What ``ls-refs`` reported: HEAD and every ref with its object id."""

    head: RemoteHead
    refs: dict[str, str] = field(default_factory=dict)


def source_error(error: grpc.aio.AioRpcError, storage: str, server: GitalyServer) -> NodeError:
    where = f"source node for storage {storage!r} at {server.address}"
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return NodeError(f"{where} is unreachable: {error.details()}", grpc.StatusCode.UNAVAILABLE)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return FailedPrecondition(
            f"{where} refused the token given in the gitaly-servers header: {error.details()}"
        )
    return FailedPrecondition(f"{where} answered {code.name}: {error.details()}")


def pkt_line(text: str) -> bytes:
    data = text.encode()
    return f"{len(data) + 4:04x}".encode() + data


def parse_ls_refs(lines: list[bytes]) -> SourceRefs:
    """``<oid> <name>[ symref-target:<ref>]`` lines; HEAD may be ``unborn HEAD ...``."""
    head = RemoteHead(None, None)
    refs: dict[str, str] = {}
    for raw in lines:
        fields = raw.decode(errors="replace").split()
        if len(fields) < 2:
            raise FailedPrecondition(f"the source sent a malformed ls-refs line: {raw[:100]!r}")
        oid, name = fields[0], fields[1]
        if name == "HEAD":
            symref = next(
                (f.removeprefix("symref-target:") for f in fields[2:] if f.startswith("symref-target:")),
                None,
            )
            head = RemoteHead(symref, oid if _OBJECT_ID.match(oid) else None)
        elif _OBJECT_ID.match(oid):
            refs[name] = oid
        else:
            raise FailedPrecondition(f"the source listed {name!r} with the malformed object id {oid!r}")
    return SourceRefs(head, refs)


class SourceSession:
    """One SSHUploadPack call to the source, read packet by packet until the
    relay takes it over."""

    def __init__(self, call: Any, storage: str, server: GitalyServer) -> None:
        self._call = call
        self._storage = storage
        self._server = server
        self._buffer = bytearray()
        self._stderr = bytearray()
        self.advertisement = b""
        self.capabilities: list[str] = []
        #: set by `relay` when the call failed under it
        self.error: NodeError | None = None

    @property
    def object_format(self) -> str:
        """``sha1`` or ``sha256``, from the advertised ``object-format``."""
        for capability in self.capabilities:
            if capability.startswith("object-format="):
                return capability.removeprefix("object-format=")
        return "sha1"  # git before 2.28 advertises none and knows only SHA-1

    @property
    def stderr(self) -> str:
        return self._stderr.decode(errors="replace").strip()

    def _keep_stderr(self, data: bytes) -> None:
        self._stderr += data
        del self._stderr[:-STDERR_KEPT]

    async def _fill(self) -> None:
        response = await self._call.read()
        if response is aio.EOF:
            raise FailedPrecondition(
                f"the source's upload-pack for storage {self._storage!r} ended early: "
                f"{self.stderr or 'no output'}"
            )
        self._keep_stderr(response.stderr)
        self._buffer += response.stdout

    async def read_section(self) -> tuple[list[bytes], bytes]:
        """Packets up to the next flush (delim packets skipped), and their raw bytes."""
        lines: list[bytes] = []
        position = 0
        while True:
            while len(self._buffer) < position + 4:
                await self._fill()
            header = bytes(self._buffer[position : position + 4])
            try:
                length = int(header, 16)
            except ValueError:
                raise FailedPrecondition(f"the source sent a malformed git protocol line: {header!r}") from None
            if length == 0:
                position += 4
                raw = bytes(self._buffer[:position])
                del self._buffer[:position]
                return lines, raw
            if length < 4:  # delim (0001), response-end (0002)
                position += 4
                continue
            if length > MAX_PACKET:
                raise FailedPrecondition(f"the source sent a git protocol line of {length} bytes")
            while len(self._buffer) < position + length:
                await self._fill()
            lines.append(bytes(self._buffer[position + 4 : position + length]))
            position += length

    async def start(self, source: shared_pb2.Repository) -> None:
        await self._call.write(ssh_pb2.SSHUploadPackRequest(repository=source, git_protocol="version=2"))
        lines, self.advertisement = await self.read_section()
        if not lines or lines[0].strip() != b"version 2":
            raise FailedPrecondition(
                f"the source node for storage {self._storage!r} did not answer in git protocol "
                "version 2: replication needs git 2.18 or later on the source"
            )
        self.capabilities = [line.decode(errors="replace").strip() for line in lines[1:]]

    async def list_refs(self) -> SourceRefs:
        """HEAD and every ref of the source, in one ``ls-refs``."""
        command = [pkt_line("command=ls-refs\n")]
        command += [pkt_line(f"{c}\n") for c in self.capabilities if c.startswith("object-format=")]
        command += [DELIM, pkt_line("symrefs\n")]
        if any(c.startswith("ls-refs=") and "unborn" in c.split("=", 1)[1].split() for c in self.capabilities):
            command.append(pkt_line("unborn\n"))
        command.append(FLUSH)  # no ref-prefix: HEAD and all refs
        try:
            async with asyncio.timeout(SOURCE_LISTING_TIMEOUT):
                await self._call.write(ssh_pb2.SSHUploadPackRequest(stdin=b"".join(command)))
                lines, _ = await self.read_section()
        except TimeoutError:
            raise NodeError(
                f"the source node for storage {self._storage!r} did not list its refs within "
                f"{SOURCE_LISTING_TIMEOUT:.0f} s",
                grpc.StatusCode.UNAVAILABLE,
            ) from None
        except grpc.aio.AioRpcError as error:
            raise source_error(error, self._storage, self._server) from None
        return parse_ls_refs(lines)

    async def finish(self) -> None:
        """End the call without a fetch: a flush where a command would come
        ends upload-pack's command loop, and with it the call."""
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError, aio.UsageError):
            await self._call.write(ssh_pb2.SSHUploadPackRequest(stdin=FLUSH))
            await self._call.done_writing()
            while await self._call.read() is not aio.EOF:
                pass

    async def relay(self, sock: socket.socket) -> None:
        """Connect git's end of `sock` to the source's upload-pack until both
        directions end; the advertisement is replayed first, as git expects it."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(self._to_git(loop, sock), self._to_source(loop, sock))

    async def _to_git(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        try:
            await loop.sock_sendall(sock, self.advertisement + self._buffer)
            self._buffer.clear()
            while (response := await self._call.read()) is not aio.EOF:
                if response.stdout:
                    await loop.sock_sendall(sock, response.stdout)
                if response.stderr:
                    self._keep_stderr(response.stderr)
        except (BrokenPipeError, ConnectionResetError):
            pass  # git has gone; its exit status says why
        except grpc.aio.AioRpcError as error:
            self.error = source_error(error, self._storage, self._server)
        finally:
            # EOF for git: the source has nothing more to say.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

    async def _to_source(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        try:
            while data := await loop.sock_recv(sock, CHUNK_SIZE):
                await self._call.write(ssh_pb2.SSHUploadPackRequest(stdin=data))
            await self._call.done_writing()
        except (ConnectionResetError, grpc.aio.AioRpcError, asyncio.InvalidStateError, aio.UsageError):
            pass  # the call has ended: `_to_git` records how


@contextlib.asynccontextmanager
async def open_source_session(
    channel: aio.Channel, source: shared_pb2.Repository, server: GitalyServer
) -> AsyncIterator[SourceSession | None]:
    """An SSHUploadPack call to the source past its advertisement, or None
    when the source repository does not exist. The call is cancelled on exit
    if it has not ended by then."""
    stub = ssh_pb2_grpc.SSHServiceStub(channel)
    metadata = (bearer_metadata(server.token), *inject_trace_context().items())
    call = stub.SSHUploadPack(metadata=metadata)
    session = SourceSession(call, source.storage_name, server)
    try:
        found = await _start(session, source, server)
        yield session if found else None
    finally:
        call.cancel()


async def _start(session: SourceSession, source: shared_pb2.Repository, server: GitalyServer) -> bool:
    """Read the source's advertisement; False when its repository does not exist."""
    try:
        async with asyncio.timeout(SOURCE_LISTING_TIMEOUT):
            await session.start(source)
    except TimeoutError:
        raise NodeError(
            f"the source node for storage {source.storage_name!r} at {server.address} did not "
            f"answer within {SOURCE_LISTING_TIMEOUT:.0f} s",
            grpc.StatusCode.UNAVAILABLE,
        ) from None
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise source_error(error, source.storage_name, server) from None
    return True
