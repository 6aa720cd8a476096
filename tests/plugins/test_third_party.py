"""A third-party plugin installed with pip: discovered, pre-empting, blockable."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from praefect.core.plugin_manager import build_plugin_manager, plugin_infos
from praefect.protos.gitaly import repository_pb2, shared_pb2
from tests.support.grpc_client import auth
from tests.support.processes import PRAEFECT
from tests.support.recording_node import RecordingNode, recording_node
from tests.support.router import ROUTER_TOKEN, clean_env, router_settings, running_router

pytestmark = pytest.mark.usefixtures("example_plugin_installed")

EXISTS = "/gitaly.RepositoryService/RepositoryExists"
CREATE = "/gitaly.RepositoryService/CreateRepository"
AUTH = auth(ROUTER_TOKEN)  # signs a fresh v2 token per call


def body(message: type[Any]) -> bytes:
    repository = shared_pb2.Repository(storage_name="praefect", relative_path="a.git")
    return message(repository=repository).SerializeToString()  # type: ignore[no-any-return]


class Two:
    def __init__(self, first: RecordingNode, second: RecordingNode) -> None:
        self.first, self.second = first, second


@pytest.fixture
async def nodes() -> AsyncIterator[Two]:
    async with recording_node() as first, recording_node() as second:
        yield Two(first, second)


def serve(nodes: Two, **settings: Any) -> Any:
    addresses = {"gitaly-1": nodes.first.address, "gitaly-2": nodes.second.address}
    return running_router(router_settings(addresses, **settings), load_entry_points=True)


async def call(router: Any, method: str, request: bytes, metadata: Any) -> grpc.StatusCode:
    async with aio.insecure_channel(router.bound_addr) as channel:
        try:
            await channel.unary_unary(method)(request, metadata=metadata)
        except aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_the_entry_point_is_discovered() -> None:
    infos = {info.name: info for info in plugin_infos(build_plugin_manager())}
    example = infos["example"]
    assert example.version == "0.1.0"
    assert example.source == "entry point (praefect-example)"
    assert example.hooks == ("authenticate", "route")
    # registered after the defaults, so pluggy calls it first
    assert list(infos)[-1] == "example"


async def test_it_overrides_routing(nodes: Two) -> None:
    async with serve(nodes) as router:
        routed = (*AUTH, ("x-example-route-to", "gitaly-2"))
        assert await call(router, EXISTS, body(repository_pb2.RepositoryExistsRequest), routed) is grpc.StatusCode.OK
        assert await call(router, EXISTS, body(repository_pb2.RepositoryExistsRequest), AUTH) is grpc.StatusCode.OK
        # mutators stay with the default plugin: the primary
        assert await call(router, CREATE, body(repository_pb2.CreateRepositoryRequest), routed) is grpc.StatusCode.OK
        unknown = (*AUTH, ("x-example-route-to", "gitaly-7"))
        code = await call(router, EXISTS, body(repository_pb2.RepositoryExistsRequest), unknown)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert [len(nodes.first.calls), len(nodes.second.calls)] == [2, 1]
    forwarded = repository_pb2.RepositoryExistsRequest.FromString(nodes.second.calls[0].requests[0])
    assert forwarded.repository.storage_name == "gitaly-2"


async def test_it_overrides_authentication(nodes: Two) -> None:
    request = body(repository_pb2.RepositoryExistsRequest)
    async with serve(nodes) as router:
        assert await call(router, EXISTS, request, (("x-example-api-key", "example-key"),)) is grpc.StatusCode.OK
        assert await call(router, EXISTS, request, (("x-example-api-key", "guess"),)) is grpc.StatusCode.PERMISSION_DENIED
        assert await call(router, EXISTS, request, ()) is grpc.StatusCode.UNAUTHENTICATED
    assert len(nodes.first.calls) == 1


async def test_plugins_blocked_keeps_it_out(nodes: Two) -> None:
    request = body(repository_pb2.RepositoryExistsRequest)
    async with serve(nodes, plugins={"blocked": ["example", "praefect.plugins.replication", "praefect.plugins.failover"]}) as router:
        key = (("x-example-api-key", "example-key"),)
        assert await call(router, EXISTS, request, key) is grpc.StatusCode.UNAUTHENTICATED
        routed = (*AUTH, ("x-example-route-to", "gitaly-2"))
        assert await call(router, EXISTS, request, routed) is grpc.StatusCode.OK
    assert (len(nodes.first.calls), len(nodes.second.calls)) == (1, 0)


def test_praefect_plugins_lists_it_unless_blocked(tmp_path: Path) -> None:
    listed = subprocess.run([*PRAEFECT, "plugins"], capture_output=True, text=True, env=clean_env(), timeout=60)
    (line,) = [line for line in listed.stdout.splitlines() if "example" in line]
    assert "0.1.0" in line and "praefect-example" in line and "authenticate, route" in line

    settings = tmp_path / "blocked.toml"
    settings.write_text('[plugins]\nblocked = ["example"]\n')
    blocked = subprocess.run(
        [*PRAEFECT, "plugins", "--config", str(settings)], capture_output=True, text=True, env=clean_env(), timeout=60
    )
    assert blocked.returncode == 0, blocked.stderr
    table = blocked.stdout.split("blocked:")[0]
    assert "example" not in table
    assert "blocked: example" in blocked.stdout
