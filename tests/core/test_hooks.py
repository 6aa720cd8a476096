"""Every hook, called by a real router for real calls.

Each hook has a test named ``test_hook_<name>``;
tests/core/test_hook_reference.py fails when one is missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio

from praefect.core import hookimpl
from praefect.core.call import Call, Identity
from praefect.core.cluster import Cluster
from praefect.core.errors import FailedPrecondition, PermissionDenied, Unavailable
from praefect.core.local_services import ServiceRegistrar
from praefect.core.mutation import ChangeType, Mutation, MutationFailure
from praefect.core.router import Router
from praefect.core.routing_types import NodeRef, RouteDecision
from praefect.core.server import RouterServer
from praefect.protos.admin import admin_pb2, admin_pb2_grpc
from praefect.protos.gitaly import repository_pb2, shared_pb2, smarthttp_pb2
from tests.support.grpc_client import auth
from tests.support.recording_node import BEHAVIOUR_KEY, RecordingNode, recording_node
from tests.support.router import ROUTER_TOKEN, router_settings, running_router

AUTH = auth(ROUTER_TOKEN)  # signs a fresh v2 token per call
EXISTS = "/gitaly.RepositoryService/RepositoryExists"
CREATE = "/gitaly.RepositoryService/CreateRepository"


def request(path: str = "a.git") -> bytes:
    data: bytes = repository_pb2.CreateRepositoryRequest(
        repository=shared_pb2.Repository(storage_name="praefect", relative_path=path)
    ).SerializeToString()
    return data


class Nodes:
    def __init__(self, first: RecordingNode, second: RecordingNode) -> None:
        self.first, self.second = first, second

    @property
    def addresses(self) -> dict[str, str]:
        return {"gitaly-1": self.first.address, "gitaly-2": self.second.address}


@pytest.fixture
async def nodes() -> AsyncIterator[Nodes]:
    async with recording_node() as first, recording_node() as second:
        yield Nodes(first, second)


def serve(nodes: Nodes, *plugins: object, **settings: Any) -> Any:
    extra = [(f"test-plugin-{index}", plugin) for index, plugin in enumerate(plugins)]
    return running_router(router_settings(nodes.addresses, **settings), extra_plugins=extra)


async def unary(router: RouterServer, method: str, body: bytes, metadata: Any = AUTH) -> bytes:
    assert router.bound_addr
    async with aio.insecure_channel(router.bound_addr) as channel:
        response: bytes = await channel.unary_unary(method)(body, metadata=metadata)
        return response


# -- authenticate ----------------------------------------------------------------------


class ApiKeyAuth:
    """Accepts ``x-api-key: letmein``; async, to prove the core awaits it."""

    def __init__(self) -> None:
        self.identities: list[Identity | None] = []

    @hookimpl
    async def authenticate(self, call: Call) -> Identity | None:
        await asyncio.sleep(0)
        if call.header("x-api-key") == "letmein":
            return Identity("robot", "api-key")
        if call.header("x-api-key") is not None:
            raise PermissionDenied("that API key is not valid")
        return None

    @hookimpl
    def route(self, call: Call, cluster: Cluster) -> None:
        self.identities.append(call.identity)


async def test_hook_authenticate(nodes: Nodes) -> None:
    plugin = ApiKeyAuth()
    async with serve(nodes, plugin) as router:
        await unary(router, EXISTS, request(), metadata=(("x-api-key", "letmein"),))
        await unary(router, EXISTS, request())  # the default token plugin still works
        with pytest.raises(aio.AioRpcError) as caught:
            await unary(router, EXISTS, request(), metadata=(*AUTH, ("x-api-key", "bad")))
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED  # a raise rejects despite the token
    assert caught.value.details() == "that API key is not valid"
    assert plugin.identities[0] == Identity("robot", "api-key")
    assert plugin.identities[1] is not None and plugin.identities[1].scheme == "token-v2"
    assert len(nodes.first.calls) == 2


# -- route --------------------------------------------------------------------------------


class HeaderRouting:
    """Sends calls with ``x-route-to: NODE`` to that node."""

    @hookimpl
    def route(self, call: Call, cluster: Cluster) -> RouteDecision | None:
        wanted = call.header("x-route-to")
        if not isinstance(wanted, str) or call.virtual_storage is None:
            return None
        return RouteDecision(node=cluster.virtual_storage(call.virtual_storage).node(wanted), reason="header")


async def test_hook_route(nodes: Nodes) -> None:
    async with serve(nodes, HeaderRouting()) as router:
        await unary(router, EXISTS, request(), metadata=(*AUTH, ("x-route-to", "gitaly-2")))
        await unary(router, EXISTS, request())  # no header: the default plugin decides
    assert len(nodes.second.calls) == 1 and len(nodes.first.calls) == 1
    forwarded = repository_pb2.RepositoryExistsRequest.FromString(nodes.second.calls[0].requests[0])
    assert forwarded.repository.storage_name == "gitaly-2"


async def test_route_may_fail_the_call_with_its_code(nodes: Nodes) -> None:
    class Closed:
        @hookimpl
        def route(self, call: Call, cluster: Cluster) -> RouteDecision:
            raise Unavailable("maintenance window: try again at 10:00")

    async with serve(nodes, Closed()) as router:
        with pytest.raises(aio.AioRpcError) as caught:
            await unary(router, EXISTS, request())
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "maintenance window: try again at 10:00"


# -- mutations ------------------------------------------------------------------------------


class MutationRecorder:
    def __init__(self) -> None:
        self.before: list[Mutation] = []
        self.after: list[Mutation] = []
        self.failed: list[tuple[Mutation, MutationFailure]] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    @hookimpl
    def before_mutation(self, mutation: Mutation) -> None:
        self.before.append(mutation)

    @hookimpl
    async def on_mutation(self, mutation: Mutation) -> None:
        self.entered.set()
        await self.release.wait()
        self.after.append(mutation)

    @hookimpl
    def on_mutation_failed(self, mutation: Mutation, failure: MutationFailure) -> None:
        self.failed.append((mutation, failure))


async def test_hook_before_mutation(nodes: Nodes) -> None:
    class Refuse:
        @hookimpl
        async def before_mutation(self, mutation: Mutation) -> None:
            raise FailedPrecondition(f"{mutation.relative_path} is read-only")

    recorder = MutationRecorder()
    async with serve(nodes, recorder, Refuse()) as router:
        await unary(router, EXISTS, request("x.git"))  # accessors are not mutations
        with pytest.raises(aio.AioRpcError) as caught:
            await unary(router, CREATE, request("x.git"))
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "x.git is read-only"
    assert len(nodes.first.calls) == 1  # only the accessor reached the node
    assert recorder.after == []


async def test_hook_on_mutation(nodes: Nodes) -> None:
    recorder = MutationRecorder()
    recorder.release.clear()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with serve(nodes, recorder) as router:
        pending = asyncio.create_task(
            unary(router, CREATE, request("new.git"), metadata=(*AUTH, ("traceparent", traceparent)))
        )
        async with asyncio.timeout(10):
            await recorder.entered.wait()
        await asyncio.sleep(0.05)  # give a wrongly early response time to arrive
        assert not pending.done(), "the client got its answer before on_mutation finished"
        recorder.release.set()
        await pending
    (mutation,) = recorder.after
    assert recorder.before == [mutation]
    assert (mutation.virtual_storage, mutation.relative_path) == ("praefect", "new.git")
    assert mutation.method == CREATE
    assert mutation.change_type is ChangeType.CREATE
    assert mutation.primary == NodeRef("praefect", "gitaly-1", nodes.first.address)
    assert mutation.replicas == (NodeRef("praefect", "gitaly-2", nodes.second.address),)
    assert mutation.trace_context == {"traceparent": traceparent}


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (Unavailable("replication queue unreachable"), grpc.StatusCode.UNAVAILABLE, "replication queue unreachable"),
        (RuntimeError("boom"), grpc.StatusCode.INTERNAL, "recording it for replication failed"),
    ],
)
async def test_a_failing_on_mutation_fails_the_call(
    nodes: Nodes, error: Exception, code: grpc.StatusCode, message: str
) -> None:
    class Broken:
        @hookimpl
        def on_mutation(self, mutation: Mutation) -> None:
            raise error

    async with serve(nodes, Broken()) as router:
        with pytest.raises(aio.AioRpcError) as caught:
            await unary(router, CREATE, request())
    assert len(nodes.first.calls) == 1  # the primary did the write
    assert caught.value.code() is code
    assert message in (caught.value.details() or "")


async def test_hook_on_mutation_failed(nodes: Nodes) -> None:
    recorder = MutationRecorder()
    async with serve(nodes, recorder) as router:
        with pytest.raises(aio.AioRpcError) as caught:
            await unary(router, CREATE, request(), metadata=(*AUTH, (BEHAVIOUR_KEY, "fail")))
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    ((mutation, failure),) = recorder.failed
    assert mutation.relative_path == "a.git"
    assert failure == MutationFailure(grpc.StatusCode.FAILED_PRECONDITION, "node says no")
    assert recorder.after == []


# -- node health ----------------------------------------------------------------------------


class HealthRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, NodeRef, str]] = []

    @hookimpl
    async def on_node_down(self, node: NodeRef, reason: str) -> None:
        self.events.append(("down", node, reason))

    @hookimpl
    def on_node_up(self, node: NodeRef) -> None:
        self.events.append(("up", node, ""))


async def test_hook_on_node_down(nodes: Nodes) -> None:
    recorder = HealthRecorder()
    async with serve(nodes, recorder) as router:
        assert router.router
        primary = router.router.cluster.primary("praefect", "a.git")
        await router.router.set_node_health(primary, False, "health check failed")
        await router.router.set_node_health(primary, False, "still failing")  # no change, no event
        with pytest.raises(aio.AioRpcError) as caught:
            await unary(router, CREATE, request())
    assert recorder.events == [("down", primary, "health check failed")]
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "gitaly-1" in (caught.value.details() or "")


async def test_hook_on_node_up(nodes: Nodes) -> None:
    recorder = HealthRecorder()
    async with serve(nodes, recorder) as router:
        assert router.router
        primary = router.router.cluster.primary("praefect", "a.git")
        await router.router.set_node_health(primary, False, "probe")
        await router.router.set_node_health(primary, True)
        await unary(router, CREATE, request())
    assert [event[0] for event in recorder.events] == ["down", "up"]
    assert len(nodes.first.calls) == 1


# -- services and lifecycle --------------------------------------------------------------------


class AdminPlugin(admin_pb2_grpc.AdminServiceServicer):  # type: ignore[misc]
    @hookimpl
    def register_services(self, router: Router, registrar: ServiceRegistrar) -> None:
        self.router = router
        admin_pb2_grpc.add_AdminServiceServicer_to_server(self, registrar)

    async def ListStorages(self, request: Any, context: Any) -> admin_pb2.ListStoragesResponse:
        return admin_pb2.ListStoragesResponse(
            virtual_storages=[
                admin_pb2.VirtualStorage(
                    name=vs.name, nodes=[admin_pb2.Node(name=node.name) for node in vs.nodes]
                )
                for vs in self.router.cluster.virtual_storages
            ]
        )


async def test_hook_register_services(nodes: Nodes) -> None:
    async with serve(nodes, AdminPlugin()) as router:
        assert router.bound_addr
        async with aio.insecure_channel(router.bound_addr) as channel:
            stub = admin_pb2_grpc.AdminServiceStub(channel)
            response = await stub.ListStorages(admin_pb2.ListStoragesRequest(), metadata=AUTH)
            with pytest.raises(aio.AioRpcError) as caught:
                await stub.ListStorages(admin_pb2.ListStoragesRequest())
    assert [node.name for node in response.virtual_storages[0].nodes] == ["gitaly-1", "gitaly-2"]
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert nodes.first.calls == [] and nodes.second.calls == []  # answered, not forwarded


async def test_intercepted_service_without_a_plugin_is_unimplemented(nodes: Nodes) -> None:
    async with serve(nodes) as router:
        assert router.bound_addr
        async with aio.insecure_channel(router.bound_addr) as channel:
            stub = admin_pb2_grpc.AdminServiceStub(channel)
            with pytest.raises(aio.AioRpcError) as caught:
                await stub.ListStorages(admin_pb2.ListStoragesRequest(), metadata=AUTH)
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert "praefect.admin.v1.AdminService" in (caught.value.details() or "")
    assert nodes.first.calls == []


class Lifecycle:
    def __init__(self, fail_startup: bool = False) -> None:
        self.events: list[str] = []
        self.fail_startup = fail_startup

    @hookimpl
    async def startup(self, router: Router) -> None:
        if self.fail_startup:
            raise RuntimeError("cannot reach the event store")
        self.events.append(f"startup {len(router.node_channels)} channels")

    @hookimpl
    async def shutdown(self, router: Router) -> None:
        self.events.append(f"shutdown {len(router.node_channels)} channels")


async def test_hook_startup(nodes: Nodes) -> None:
    plugin = Lifecycle()
    async with serve(nodes, plugin) as router:
        assert plugin.events == ["startup 2 channels"]
        await unary(router, EXISTS, request())

    failing = Lifecycle(fail_startup=True)
    with pytest.raises(RuntimeError, match="cannot reach the event store"):
        async with serve(nodes, failing):
            pass


async def test_a_failed_startup_shuts_down_the_plugins_already_started(nodes: Nodes) -> None:
    class FailsLast:
        shut_down = False

        @hookimpl(trylast=True)
        async def startup(self, router: Router) -> None:
            raise RuntimeError("cannot reach the event store")

        @hookimpl
        async def shutdown(self, router: Router) -> None:
            self.shut_down = True

    started, failing = Lifecycle(), FailsLast()
    with pytest.raises(RuntimeError, match="cannot reach the event store"):
        async with serve(nodes, started, failing):
            pass
    assert started.events == ["startup 2 channels", "shutdown 2 channels"], (
        "a plugin that started is shut down when a later one fails to start"
    )
    assert not failing.shut_down, "the plugin that failed to start is not shut down"


async def test_hook_shutdown(nodes: Nodes) -> None:
    class BrokenShutdown:
        @hookimpl(tryfirst=True)
        def shutdown(self, router: Router) -> None:
            raise RuntimeError("flush failed")

    plugin = Lifecycle()
    async with serve(nodes, plugin, BrokenShutdown()):
        pass
    # the broken plugin ran first and did not stop the others; channels still open
    assert plugin.events == ["startup 2 channels", "shutdown 2 channels"]


# -- failover ----------------------------------------------------------------------------------


class FailoverRecorder:
    def __init__(self) -> None:
        self.moves: list[tuple[str, str, str, str, str]] = []

    @hookimpl  # type: ignore[untyped-decorator, unused-ignore]
    async def on_failover(
        self, virtual_storage: str, relative_path: str, old: NodeRef, new: NodeRef, reason: str
    ) -> None:
        self.moves.append((virtual_storage, relative_path, old.name, new.name, reason))


async def test_hook_on_failover(tmp_path: Any) -> None:
    # Real nodes, Redis, replication and failover: the hook fires when the
    # primary of a tracked repository dies and another replica takes over.
    from tests.support.failover_cluster import (
        commit_file,
        create_repository,
        eventually,
        failover_cluster,
    )

    recorder = FailoverRecorder()
    async with failover_cluster(tmp_path) as cluster, cluster.router(("recorder", recorder)) as router:
        assert router.bound_addr
        async with aio.insecure_channel(router.bound_addr) as channel:
            await create_repository(channel, "a.git")
            await commit_file(channel, "a.git", "main", "one.txt")
            cluster.nodes["gitaly-1"].stop()
            await eventually(lambda: recorder.moves, what="on_failover")
            await commit_file(channel, "a.git", "main", "two.txt")  # the new primary takes writes
        primary = (await cluster.store.require("praefect", "a.git")).primary
    ((vs, path, old, new, reason),) = recorder.moves
    assert (vs, path, old) == ("praefect", "a.git", "gitaly-1")
    assert new == primary and reason.startswith("gitaly-1 is down")


async def test_ref_advertisement_before_a_push_records_no_mutation(nodes: Nodes) -> None:
    """InfoRefsReceivePack is a mutator (it must reach the primary) that
    changes nothing: replicating after it would only bump generations."""
    recorder = MutationRecorder()
    body = smarthttp_pb2.InfoRefsRequest(
        repository=shared_pb2.Repository(storage_name="praefect", relative_path="a.git")
    ).SerializeToString()
    async with serve(nodes, recorder) as router, aio.insecure_channel(router.bound_addr) as channel:
        call = channel.unary_stream("/gitaly.SmartHTTPService/InfoRefsReceivePack")(body, metadata=AUTH)
        async for _ in call:
            pass
        await unary(router, CREATE, request("b.git"))
    assert [m.method for m in recorder.before] == [CREATE]
    assert [m.relative_path for m in recorder.after] == ["b.git"]
