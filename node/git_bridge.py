"""A git transport over a node's SSHUploadPack / SSHReceivePack streams.

git's ``ext::`` remote helper runs a command and talks the git protocol over
its stdin and stdout, exactly as it would over ssh. This module is that
command: it forwards its stdin to a node in SSH*Request.stdin messages and
writes the SSH*Response stdout/stderr chunks back, then exits with git's
exit status on the node. So plain ``git clone``, ``git fetch``,
``git ls-remote`` and ``git push`` work against a repository on a node
(tests and tools use it; the node's own replication relays the protocol in
its process instead, see `praefect.node.replication_fetch`)::

    env = {**os.environ, **bridge_env("127.0.0.1:9001", "gitaly-1", "group/project.git", token)}
    subprocess.run(["git", "-c", "protocol.ext.allow=always", "clone", bridge_url(), "project"], env=env)

Where to connect comes from the environment, never from the command line
(which other users can read), as set by `bridge_env`:

``PRAEFECT_BRIDGE_ADDRESS``        node address, ``host:port`` or ``tcp://host:port``
``PRAEFECT_BRIDGE_STORAGE``        storage name on that node
``PRAEFECT_BRIDGE_RELATIVE_PATH``  repository path in the storage
``PRAEFECT_BRIDGE_TOKEN``          the node's token (a v2 token is signed per call)

``GIT_PROTOCOL`` (e.g. ``version=2``), when set in git's environment, is
passed on in the first request, so the node's git speaks that protocol
version; git's client follows whatever version the server answers with.

Run as ``python -m praefect.node.git_bridge git-upload-pack`` (or
``git-receive-pack``); `bridge_url()` builds the matching ``ext::`` URL.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from typing import Any

import grpc
from grpc import aio

from praefect.core.tokens import bearer_metadata
from praefect.node.gitaly_servers import grpc_target
from praefect.protos.gitaly import shared_pb2, ssh_pb2, ssh_pb2_grpc

ADDRESS_ENV = "PRAEFECT_BRIDGE_ADDRESS"
STORAGE_ENV = "PRAEFECT_BRIDGE_STORAGE"
RELATIVE_PATH_ENV = "PRAEFECT_BRIDGE_RELATIVE_PATH"
TOKEN_ENV = "PRAEFECT_BRIDGE_TOKEN"
GIT_CONFIG_ALLOW_EXT = ("-c", "protocol.ext.allow=always")

SERVICES = ("git-upload-pack", "git-receive-pack")
CHUNK_SIZE = 64 * 1024
EXIT_BRIDGE_FAILED = 128  # what git itself uses for fatal errors


def bridge_url(executable: str | None = None) -> str:
    """The ``ext::`` URL that makes git run this bridge with this interpreter."""
    python = executable or sys.executable
    # ext:: splits its command on spaces; '% ' is a literal space, '%%' a '%'.
    escaped = python.replace("%", "%%").replace(" ", "% ")
    return f"ext::{escaped} -m praefect.node.git_bridge %S"


def bridge_env(address: str, storage: str, relative_path: str, token: str) -> dict[str, str]:
    """Environment variables telling the bridge where the repository is."""
    return {
        ADDRESS_ENV: address,
        STORAGE_ENV: storage,
        RELATIVE_PATH_ENV: relative_path,
        TOKEN_ENV: token,
    }


class BridgeError(Exception):
    """The bridge cannot run; the message is printed as git's fatal error."""


def _settings(environ: Mapping[str, str]) -> tuple[str, str, str, str]:
    values = []
    for name in (ADDRESS_ENV, STORAGE_ENV, RELATIVE_PATH_ENV, TOKEN_ENV):
        value = environ.get(name, "")
        if not value:
            raise BridgeError(f"{name} is not set: run git with the environment from bridge_env()")
        values.append(value)
    address, storage, relative_path, token = values
    try:
        target = grpc_target(address)
    except ValueError as error:
        raise BridgeError(f"{ADDRESS_ENV}: {error}") from None
    return target, storage, relative_path, token


async def _forward_stdin(call: Any, request_type: Any, stdin: asyncio.StreamReader) -> None:
    while chunk := await stdin.read(CHUNK_SIZE):
        await call.write(request_type(stdin=chunk))
    await call.done_writing()


async def bridge(service: str, environ: Mapping[str, str]) -> int:
    """Connect this process's stdio to `service` on the node; return git's exit status."""
    if service not in SERVICES:
        raise BridgeError(f"unsupported service {service!r}: expected one of {', '.join(SERVICES)}")
    target, storage, relative_path, token = _settings(environ)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=CHUNK_SIZE * 4)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin.buffer)
    out_transport, out_protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, sys.stdout.buffer
    )
    stdout = asyncio.StreamWriter(out_transport, out_protocol, None, loop)

    repository = shared_pb2.Repository(storage_name=storage, relative_path=relative_path)
    git_protocol = environ.get("GIT_PROTOCOL", "")
    async with aio.insecure_channel(target) as channel:
        stub = ssh_pb2_grpc.SSHServiceStub(channel)
        if service == "git-upload-pack":
            request_type: Any = ssh_pb2.SSHUploadPackRequest
            call: Any = stub.SSHUploadPack(metadata=(bearer_metadata(token),))
        else:
            request_type = ssh_pb2.SSHReceivePackRequest
            call = stub.SSHReceivePack(metadata=(bearer_metadata(token),))
        exit_status = 0
        forwarder: asyncio.Task[None] | None = None
        try:
            # Inside the try: a node that refuses the call (a wrong token) may
            # have answered before this first write, which then raises.
            await call.write(request_type(repository=repository, git_protocol=git_protocol))
            forwarder = asyncio.create_task(_forward_stdin(call, request_type, stdin))
            async for response in call:
                if response.stdout:
                    stdout.write(response.stdout)
                    await stdout.drain()
                if response.stderr:
                    sys.stderr.buffer.write(response.stderr)
                    sys.stderr.buffer.flush()
                if response.HasField("exit_status"):
                    exit_status = response.exit_status.value
        except grpc.aio.AioRpcError as error:
            raise BridgeError(f"{error.code().name}: {error.details()}") from None
        finally:
            if forwarder is not None:
                forwarder.cancel()
                await asyncio.gather(forwarder, return_exceptions=True)
            await stdout.drain()
    return exit_status


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(
            f"usage: python -m praefect.node.git_bridge <{'|'.join(SERVICES)}> "
            "(normally run by git through bridge_url())",
            file=sys.stderr,
        )
        return 2
    try:
        return asyncio.run(bridge(args[0], os.environ))
    except BridgeError as error:
        print(f"fatal: praefect git bridge: {error}", file=sys.stderr, flush=True)
        return EXIT_BRIDGE_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
