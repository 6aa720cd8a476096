"""What a replication target asks the source node, over the Gitaly protocol.

* `source_object_format`: the source repository's object format through the
  ObjectFormat RPC, or None when the source repository does not exist.
* `source_head`: where the source's HEAD points, read with a protocol v2
  ``ls-refs`` (``symrefs``, ``unborn``, ``ref-prefix HEAD``) over
  SSHUploadPack. Unlike ``git ls-remote``, this also reports an unborn HEAD,
  so an empty repository created with another default branch replicates
  with that default branch. A server that answers in protocol v0 is read
  from its ``symref=HEAD:...`` capability.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from praefect.core.tokens import bearer_metadata
from praefect.node.errors import FailedPrecondition, NodeError
from praefect.node.gitaly_servers import GitalyServer
from praefect.protos.gitaly import (
    repository_pb2,
    repository_pb2_grpc,
    shared_pb2,
    ssh_pb2,
    ssh_pb2_grpc,
)

SOURCE_CALL_TIMEOUT = 60.0
FLUSH = b"0000"
DELIM = b"0001"
_OBJECT_ID = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


@dataclass(frozen=True, slots=True)
class RemoteHead:
    """The source's HEAD: a branch (`symref`, possibly unborn) or a detached `oid`."""

    symref: str | None
    oid: str | None


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


async def source_object_format(
    channel: aio.Channel, source: shared_pb2.Repository, server: GitalyServer
) -> shared_pb2.ObjectFormat.ValueType | None:
    stub = repository_pb2_grpc.RepositoryServiceStub(channel)
    try:
        response = await stub.ObjectFormat(
            repository_pb2.ObjectFormatRequest(repository=source),
            metadata=(bearer_metadata(server.token),),
            timeout=SOURCE_CALL_TIMEOUT,
        )
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise source_error(error, source.storage_name, server) from None
    object_format: shared_pb2.ObjectFormat.ValueType = response.format
    return object_format


def pkt_line(text: str) -> bytes:
    data = text.encode()
    return f"{len(data) + 4:04x}".encode() + data


class PktLineReader:
    """Splits a byte stream into pkt-lines; flush and delim come out as None."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> Iterator[bytes | None]:
        self._buffer += data
        while len(self._buffer) >= 4:
            try:
                length = int(self._buffer[:4], 16)
            except ValueError:
                raise FailedPrecondition("the source node sent a malformed git protocol line") from None
            if length < 4:  # 0000 flush, 0001 delim, 0002 response-end
                self._buffer = self._buffer[4:]
                yield None
                continue
            if len(self._buffer) < length:
                return
            line, self._buffer = self._buffer[4:length], self._buffer[length:]
            yield line


class _Exchange:
    """One SSHUploadPack call read packet by packet."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.reader = PktLineReader()
        self.pending: list[bytes | None] = []
        self.stderr = b""

    async def packet(self) -> bytes | None:
        while not self.pending:
            response = await self.call.read()
            if response is aio.EOF:
                detail = self.stderr.decode(errors="replace").strip()
                raise FailedPrecondition(f"the source's upload-pack ended early: {detail or 'no output'}")
            self.stderr += response.stderr
            self.pending.extend(self.reader.feed(response.stdout))
        return self.pending.pop(0)

    async def until_flush(self) -> list[bytes]:
        lines: list[bytes] = []
        while (line := await self.packet()) is not None:
            lines.append(line)
        return lines


def _head_from_v0(first_line: bytes) -> RemoteHead:
    refline, _, capabilities = first_line.partition(b"\0")
    oid, _, name = refline.decode(errors="replace").strip().partition(" ")
    for capability in capabilities.decode(errors="replace").split():
        if capability.startswith("symref=HEAD:"):
            return RemoteHead(capability.removeprefix("symref=HEAD:"), oid if name == "HEAD" else None)
    if name == "HEAD" and _OBJECT_ID.match(oid):
        return RemoteHead(None, oid)
    return RemoteHead(None, None)


def _head_from_ls_refs(lines: list[bytes]) -> RemoteHead:
    for raw in lines:
        fields = raw.decode(errors="replace").split()
        if len(fields) >= 2 and fields[1] == "HEAD":
            symref = next((f.removeprefix("symref-target:") for f in fields[2:] if f.startswith("symref-target:")), None)
            oid = fields[0] if _OBJECT_ID.match(fields[0]) else None
            return RemoteHead(symref, oid)
    return RemoteHead(None, None)


async def source_head(channel: aio.Channel, source: shared_pb2.Repository, server: GitalyServer) -> RemoteHead:
    stub = ssh_pb2_grpc.SSHServiceStub(channel)
    call = stub.SSHUploadPack(metadata=(bearer_metadata(server.token),), timeout=SOURCE_CALL_TIMEOUT)
    try:
        await call.write(ssh_pb2.SSHUploadPackRequest(repository=source, git_protocol="version=2"))
        exchange = _Exchange(call)
        first = await exchange.packet()
        if first is None or first.strip() != b"version 2":
            # A protocol v0 advertisement: HEAD (with its symref) comes first.
            await call.write(ssh_pb2.SSHUploadPackRequest(stdin=FLUSH))
            return _head_from_v0(first or b"")
        capabilities = [line.decode(errors="replace").strip() for line in await exchange.until_flush()]
        command = [pkt_line("command=ls-refs\n")]
        command += [pkt_line(f"{c}\n") for c in capabilities if c.startswith("object-format=")]
        command += [DELIM, pkt_line("symrefs\n")]
        if any(c.startswith("ls-refs=") and "unborn" in c.split("=", 1)[1].split() for c in capabilities):
            command.append(pkt_line("unborn\n"))
        command += [pkt_line("ref-prefix HEAD\n"), FLUSH]
        await call.write(ssh_pb2.SSHUploadPackRequest(stdin=b"".join(command)))
        return _head_from_ls_refs(await exchange.until_flush())
    except grpc.aio.AioRpcError as error:
        raise source_error(error, source.storage_name, server) from None
    finally:
        # The answer is in; upload-pack on the source need not wait for more.
        call.cancel()
