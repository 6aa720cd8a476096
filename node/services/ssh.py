"""SSHService: git upload-pack / receive-pack over bidirectional streams.

The first request names the repository (plus the optional `git_protocol`
and `git_config_options`); the stdin of every request is written to git,
git's stdout and stderr come back as they are produced, and the last
response carries git's exit status. Nothing is buffered beyond a few
messages, so a clone of any size streams. stdout goes out in messages of up
to 128 KiB: while git sends a pack (side-band packets) or once its stdin is
closed, output arriving within a few milliseconds is batched
(`read_messages`, `OutputHold`); the advertisement and negotiation go out
as soon as git writes them. git runs inside `spawn_git`, so a
cancelled call or a passed deadline kills it (and its pack-objects).
Concurrent pushes rely on git's ref locks: each either applies or fails
with git's own message and a non-zero exit status.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, Protocol

from grpc import aio

from praefect.node.context import NodeContext
from praefect.node.errors import InvalidArgument
from praefect.node.git import HoldPolicy, OutputHold, read_chunks, read_messages, spawn_git
from praefect.node.repository_args import locate_repository
from praefect.node.services.base import NodeServicer
from praefect.node.services.base import rpc as _rpc
from praefect.node.transport_options import git_config_arguments, git_protocol_environment
from praefect.protos.gitaly import shared_pb2, ssh_pb2, ssh_pb2_grpc

_QUEUE_DEPTH = 4

# Bound with an explicit type: mypy run on single files cannot follow the
# editable install's import hook and would otherwise see `rpc` as untyped.
rpc: Callable[[Callable[..., Any]], Callable[..., Any]] = _rpc


class PackRequest(Protocol):
    stdin: bytes


async def _feed_stdin(
    stdin: asyncio.StreamWriter, first: bytes, requests: AsyncIterator[PackRequest]
) -> None:
    try:
        if first:
            stdin.write(first)
            await stdin.drain()
        async for request in requests:
            if request.stdin:
                stdin.write(request.stdin)
                await stdin.drain()
        # Not wait_closed(): cancelling that wait makes asyncio's pipe
        # protocol fail later on its cancelled future.
        stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # git stopped reading (it has finished): the rest is not needed


async def _pump(
    stream: asyncio.StreamReader,
    field: str,
    queue: asyncio.Queue[tuple[str, bytes] | None],
    may_hold: HoldPolicy | None = None,
) -> None:
    """Forward one of git's output streams; None marks its end.

    Not in a `finally`: a cancelled pump must not block on a full queue
    that nobody reads any more.
    """
    chunks = read_messages(stream, may_hold=may_hold) if may_hold is not None else read_chunks(stream)
    try:
        async for chunk in chunks:
            await queue.put((field, chunk))
    except (OSError, ValueError):
        pass  # a broken pipe ends the stream; git's exit status says the rest
    await queue.put(None)


async def serve_pack(
    ctx: NodeContext,
    requests: AsyncIterator[Any],
    service: str,
    response_type: Any,
) -> AsyncGenerator[Any, None]:
    """Run ``git <service>`` (upload-pack, receive-pack) for a request stream
    and yield `response_type` messages: stdout/stderr chunks, then exit_status."""
    first = await anext(requests, None)
    if first is None:
        raise InvalidArgument("empty request stream: the first request must name the repository")
    location = locate_repository(ctx, first.repository if first.HasField("repository") else None)
    config = git_config_arguments(first.git_config_options)
    env = git_protocol_environment(first.git_protocol)

    async with spawn_git([*config, service, str(location.path)], stdin=True, env=env) as process:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(_QUEUE_DEPTH)
        tasks = [
            asyncio.create_task(_feed_stdin(process.stdin, first.stdin, requests)),
            asyncio.create_task(_pump(process.stdout, "stdout", queue, OutputHold(process.stdin.is_closing))),
            asyncio.create_task(_pump(process.stderr, "stderr", queue)),
        ]
        try:
            open_streams = 2
            while open_streams:
                item = await queue.get()
                if item is None:
                    open_streams -= 1
                    continue
                field, data = item
                yield response_type(**{field: data})
            returncode = await process.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    yield response_type(exit_status=shared_pb2.ExitStatus(value=returncode))


class SSHServicer(NodeServicer, ssh_pb2_grpc.SSHServiceServicer):  # type: ignore[misc, unused-ignore]
    @rpc
    async def SSHUploadPack(
        self, request_iterator: AsyncIterator[ssh_pb2.SSHUploadPackRequest], context: aio.ServicerContext
    ) -> AsyncIterator[ssh_pb2.SSHUploadPackResponse]:
        # aclosing: git is killed as soon as this call ends, not when the
        # abandoned generator happens to be collected.
        async with aclosing(serve_pack(self.ctx, request_iterator, "upload-pack", ssh_pb2.SSHUploadPackResponse)) as responses:
            async for response in responses:
                yield response

    @rpc
    async def SSHReceivePack(
        self, request_iterator: AsyncIterator[ssh_pb2.SSHReceivePackRequest], context: aio.ServicerContext
    ) -> AsyncIterator[ssh_pb2.SSHReceivePackResponse]:
        async with aclosing(serve_pack(self.ctx, request_iterator, "receive-pack", ssh_pb2.SSHReceivePackResponse)) as responses:
            async for response in responses:
                yield response


def register(server: aio.Server, ctx: NodeContext) -> None:
    """Add this service's servicer to `server`."""
    ssh_pb2_grpc.add_SSHServiceServicer_to_server(SSHServicer(ctx), server)
