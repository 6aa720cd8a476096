"""Small helpers for tests of the node's RepositoryService and SSHService."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Sequence
from pathlib import Path

import grpc
from grpc import aio

from praefect.protos.gitaly import repository_pb2 as pb
from praefect.protos.gitaly import repository_pb2_grpc, shared_pb2
from tests.node.conftest import NODE_TOKEN, STORAGE
from tests.support.grpc_client import auth


def repo(relative_path: str, storage: str = STORAGE) -> shared_pb2.Repository:
    return shared_pb2.Repository(storage_name=storage, relative_path=relative_path)


def node_auth(token: str = NODE_TOKEN) -> Sequence[tuple[str, str]]:
    return auth(token)


def repository_stub(channel: aio.Channel) -> repository_pb2_grpc.RepositoryServiceStub:
    return repository_pb2_grpc.RepositoryServiceStub(channel)


async def create(
    stub: repository_pb2_grpc.RepositoryServiceStub,
    relative_path: str,
    *,
    default_branch: bytes = b"",
    object_format: shared_pb2.ObjectFormat.ValueType = shared_pb2.OBJECT_FORMAT_UNSPECIFIED,
) -> shared_pb2.Repository:
    repository = repo(relative_path)
    await stub.CreateRepository(
        pb.CreateRepositoryRequest(repository=repository, default_branch=default_branch, object_format=object_format),
        metadata=node_auth(),
    )
    return repository


async def checksum(stub: repository_pb2_grpc.RepositoryServiceStub, repository: shared_pb2.Repository, token: str = NODE_TOKEN) -> str:
    response = await stub.CalculateChecksum(pb.CalculateChecksumRequest(repository=repository), metadata=auth(token))
    return str(response.checksum)


async def expect_error(call: Awaitable[object], code: grpc.StatusCode) -> aio.AioRpcError:
    """Await `call`, assert it failed with `code`, return the error."""
    try:
        await call
    except aio.AioRpcError as error:
        assert error.code() == code, f"expected {code.name}, got {error.code().name}: {error.details()}"
        return error
    raise AssertionError(f"expected {code.name}, but the call succeeded")


def files_under(root: Path) -> set[str]:
    """Every path under `root`, relative to it (to prove nothing was created)."""
    found: set[str] = set()
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(directory, name), root))
    return found


def user_visible_files(root: Path) -> set[str]:
    """Like `files_under`, without the node's scratch area."""
    return {path for path in files_under(root) if not path.startswith("+praefect")}
