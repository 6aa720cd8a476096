"""SmartHTTPService: git's smart HTTP protocol over gRPC, served by real git.

Each call runs ``git upload-pack`` or ``git receive-pack`` in stateless-RPC
mode, as git-http-backend does, and pipes bytes between git and the gRPC
stream; nothing holds a whole pack in memory. git's output goes out in
messages of up to 128 KiB (`read_messages`, `OutputHold`): git cannot be
waiting for its client once the client has sent its whole request (git's
stdin is closed), nor while it sends side-band packets, so output that
arrives within a few milliseconds is then batched into one message.

The handlers are coroutines that send with ``context.write`` rather than
async generators. grpc.aio cancels the handler's task when the client
cancels or the deadline passes; a coroutine receives that cancellation at
its own ``await`` and leaves the ``spawn_git`` block, which kills git, as
part of the cancellation. An abandoned async generator is only closed when
its last reference goes away, which CPython usually does at once but which
nothing guarantees (a traceback holding the frame delays it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any, TypeVar

from grpc import aio

from praefect.node import pktline
from praefect.node.context import NodeContext
from praefect.node.errors import InvalidArgument
from praefect.node.git import (
    GitCommandError,
    GitResult,
    OutputHold,
    read_chunks,
    read_messages,
    spawn_git,
)
from praefect.node.repository_args import locate_repository
from praefect.node.services.base import NodeServicer
from praefect.node.services.base import rpc as _rpc
from praefect.node.storage import RepositoryLocation
from praefect.node.transport_options import git_config_arguments, git_protocol_environment
from praefect.protos.gitaly import smarthttp_pb2, smarthttp_pb2_grpc

# Bound with an explicit type: mypy run on single files cannot follow the
# editable install's import hook and would otherwise see `rpc` as untyped.
rpc: Callable[[Callable[..., Any]], Callable[..., Any]] = _rpc

UPLOAD_PACK = "upload-pack"
RECEIVE_PACK = "receive-pack"

# What Gitaly turns on for every fetch: partial clone filters and fetching
# any reachable object by id.
UPLOAD_PACK_DEFAULTS = ("uploadpack.allowFilter=true", "uploadpack.allowAnySHA1InWant=true")

STDERR_TAIL_BYTES = 16 * 1024


_Request = TypeVar(
    "_Request", smarthttp_pb2.PostUploadPackRequest, smarthttp_pb2.PostReceivePackRequest
)


def protocol_version(git_protocol: str) -> int:
    """The protocol version git will speak for this GIT_PROTOCOL value
    (git takes the highest `version=` item it finds)."""
    version = 0
    for item in git_protocol.split(":"):
        key, _, value = item.partition("=")
        if key == "version" and value.isdigit():
            version = max(version, int(value))
    return version


def needs_service_announcement(service: str, git_protocol: str) -> bool:
    """git-http-backend prefixes the advertisement with `# service=...` and a
    flush, except when git answers in protocol v2, which only upload-pack
    speaks (receive-pack answers v2 requests in v0, so it keeps the prefix)."""
    return not (service == UPLOAD_PACK and protocol_version(git_protocol) >= 2)


class StderrTail:
    """Drains a git process's stderr so git never blocks on a full pipe,
    keeping the last STDERR_TAIL_BYTES for the error message."""

    def __init__(self, stream: asyncio.StreamReader | None) -> None:
        self._buffer = bytearray()
        self._task = asyncio.create_task(self._drain(stream)) if stream is not None else None

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        async for chunk in read_chunks(stream):
            self._buffer += chunk
            del self._buffer[:-STDERR_TAIL_BYTES]

    async def text(self) -> bytes:
        if self._task is not None:
            await self._task
        return bytes(self._buffer)

    async def cancel(self) -> None:
        if self._task is not None:
            await _stop(self._task)


async def _feed_stdin(
    stdin: asyncio.StreamWriter,
    first_data: bytes,
    requests: AsyncIterator[smarthttp_pb2.PostUploadPackRequest]
    | AsyncIterator[smarthttp_pb2.PostReceivePackRequest],
) -> None:
    """Copy the client's data into git's stdin, then close it (EOF) when the
    client half-closes. `drain` keeps at most a pipe's worth in memory."""
    try:
        if first_data:
            stdin.write(first_data)
            await stdin.drain()
        async for request in requests:
            if request.data:
                stdin.write(request.data)
                await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        # git stopped reading (it has all it needs or failed); its exit
        # status and output tell the client what happened.
        pass
    finally:
        stdin.close()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await stdin.wait_closed()


class SmartHTTPService(NodeServicer, smarthttp_pb2_grpc.SmartHTTPServiceServicer):  # type: ignore[misc, unused-ignore]
    @rpc
    async def InfoRefsUploadPack(  # type: ignore[override, unused-ignore]
        self, request: smarthttp_pb2.InfoRefsRequest, context: aio.ServicerContext
    ) -> None:
        await self._info_refs(UPLOAD_PACK, request, context)

    @rpc
    async def InfoRefsReceivePack(  # type: ignore[override, unused-ignore]
        self, request: smarthttp_pb2.InfoRefsRequest, context: aio.ServicerContext
    ) -> None:
        await self._info_refs(RECEIVE_PACK, request, context)

    @rpc
    async def PostUploadPack(  # type: ignore[override, unused-ignore]
        self,
        request_iterator: AsyncIterable[smarthttp_pb2.PostUploadPackRequest],
        context: aio.ServicerContext,
    ) -> None:
        requests = aiter(request_iterator)
        first = await _first_request(requests)
        location = self._locate(first)
        config = git_config_arguments(first.git_config_options, UPLOAD_PACK_DEFAULTS)
        await self._stateless_rpc(
            UPLOAD_PACK,
            location,
            config,
            git_protocol_environment(first.git_protocol),
            first.data,
            requests,
            context,
            smarthttp_pb2.PostUploadPackResponse,
        )

    @rpc
    async def PostReceivePack(  # type: ignore[override, unused-ignore]
        self,
        request_iterator: AsyncIterable[smarthttp_pb2.PostReceivePackRequest],
        context: aio.ServicerContext,
    ) -> None:
        requests = aiter(request_iterator)
        first = await _first_request(requests)
        # A push to a repository that does not exist is NOT_FOUND here;
        # creating repositories on push is the gateway's decision.
        location = self._locate(first)
        config = git_config_arguments(first.git_config_options)
        await self._stateless_rpc(
            RECEIVE_PACK,
            location,
            config,
            git_protocol_environment(first.git_protocol),
            first.data,
            requests,
            context,
            smarthttp_pb2.PostReceivePackResponse,
        )

    def _locate(
        self,
        request: smarthttp_pb2.InfoRefsRequest
        | smarthttp_pb2.PostUploadPackRequest
        | smarthttp_pb2.PostReceivePackRequest,
    ) -> RepositoryLocation:
        repository = request.repository if request.HasField("repository") else None
        return locate_repository(self.ctx, repository)

    async def _info_refs(
        self, service: str, request: smarthttp_pb2.InfoRefsRequest, context: aio.ServicerContext
    ) -> None:
        location = self._locate(request)
        defaults = UPLOAD_PACK_DEFAULTS if service == UPLOAD_PACK else ()
        config = git_config_arguments(request.git_config_options, defaults)
        env = git_protocol_environment(request.git_protocol)
        args = [*config, service, "--stateless-rpc", "--advertise-refs", str(location.path)]
        async with spawn_git(args, env=env) as process:
            assert process.stdout is not None
            stderr = StderrTail(process.stderr)
            try:
                if needs_service_announcement(service, request.git_protocol):
                    await context.write(
                        smarthttp_pb2.InfoRefsResponse(data=pktline.service_announcement(service))
                    )
                # git's stdin is /dev/null: it never waits for the client.
                async for chunk in read_messages(process.stdout, may_hold=_always):
                    await context.write(smarthttp_pb2.InfoRefsResponse(data=chunk))
                returncode = await process.wait()
                _check_exit(service, returncode, await stderr.text())
            finally:
                await stderr.cancel()

    async def _stateless_rpc(
        self,
        service: str,
        location: RepositoryLocation,
        config: list[str],
        env: dict[str, str],
        first_data: bytes,
        requests: AsyncIterator[smarthttp_pb2.PostUploadPackRequest]
        | AsyncIterator[smarthttp_pb2.PostReceivePackRequest],
        context: aio.ServicerContext,
        response_type: Callable[..., object],
    ) -> None:
        args = [*config, service, "--stateless-rpc", str(location.path)]
        async with spawn_git(args, env=env, stdin=True) as process:
            assert process.stdin is not None and process.stdout is not None
            stderr = StderrTail(process.stderr)
            feeder = asyncio.create_task(_feed_stdin(process.stdin, first_data, requests))
            hold = OutputHold(process.stdin.is_closing)
            try:
                async for chunk in read_messages(process.stdout, may_hold=hold):
                    await context.write(response_type(data=chunk))
                returncode = await process.wait()
                # Errors reading the client's stream surface here; git has
                # exited, so nothing waits on stdin any more.
                if feeder.done():
                    feeder.result()
                _check_exit(service, returncode, await stderr.text())
            finally:
                await _stop(feeder)
                await stderr.cancel()


def _always(chunk: bytes) -> bool:
    return True


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for it, without raising what it raised."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # marks the exception retrieved


async def _first_request(requests: AsyncIterator[_Request]) -> _Request:
    first = await anext(requests, None)
    if first is None:
        raise InvalidArgument(
            "empty request stream: the first message must carry the repository"
        )
    return first


def _check_exit(service: str, returncode: int, stderr: bytes) -> None:
    if returncode != 0:
        raise GitCommandError(GitResult((service, "--stateless-rpc"), returncode, b"", stderr))


def register(server: aio.Server, ctx: NodeContext) -> None:
    """Add this service's servicer to `server`."""
    smarthttp_pb2_grpc.add_SmartHTTPServiceServicer_to_server(SmartHTTPService(ctx), server)
