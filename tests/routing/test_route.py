"""The default ``route`` over a real replication state (Redis + the in-memory cache).

The router is built but not served: the replication plugin's own
``startup`` gives it a real runtime on an embedded Redis, the state is
changed through ``RepositoryStore`` as routers change it, and ``route``
decides from the cache that follows it.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from praefect.core.call import Call, Metadata, RepositoryRef
from praefect.core.errors import Unavailable
from praefect.core.mutation import ChangeType
from praefect.core.router import Router
from praefect.core.router_config import RouterConfig
from praefect.core.routing_types import NodeRef, RouteDecision
from praefect.plugins.replication import plugin as replication_plugin
from praefect.plugins.replication.runtime import ReplicationRuntime
from praefect.plugins.routing import route
from praefect.plugins.routing.reads import ACCESSOR_POLICY_HEADER, PRIMARY_ONLY
from praefect.settings import Config
from tests.support.replication_cluster import short_tmp_dir
from tests.support.router import router_settings_mapping

VS = "praefect"
NAMES = ("gitaly-1", "gitaly-2", "gitaly-3")
EXISTS = "/gitaly.RepositoryService/RepositoryExists"
WRITE_REF = "/gitaly.RepositoryService/WriteRef"
OPTIMIZE = "/gitaly.RepositoryService/OptimizeRepository"
READS = 300  # enough that each of three replicas is chosen (miss: 3 * (2/3)**300)


@dataclass
class Routing:
    router: Router
    runtime: ReplicationRuntime

    def node(self, name: str) -> NodeRef:
        return self.router.cluster.virtual_storage(VS).node(name)

    def call(self, method: str, path: str, metadata: Metadata = ()) -> Call:
        call = Call(self.router.registry[method], metadata, router=self.router)
        call.repository = RepositoryRef(VS, path)
        return call

    def route(self, method: str, path: str, metadata: Metadata = ()) -> RouteDecision:
        decision = route(self.call(method, path, metadata), self.router.cluster)
        assert decision is not None
        return decision

    def reads(self, path: str, metadata: Metadata = ()) -> Counter[str]:
        return Counter(self.route(EXISTS, path, metadata).node.name for _ in range(READS))

    async def track(self, path: str, *, current: tuple[str, ...] = NAMES) -> None:
        """Track ``path`` with gitaly-1 as primary and ``current`` at its generation."""
        store = self.runtime.store
        await store.track_repository(VS, path, primary="gitaly-1", assigned=NAMES)
        for name in current:
            if name != "gitaly-1":
                await store.set_replica_generation(VS, path, name, 0)


@pytest.fixture
async def routing() -> AsyncIterator[Routing]:
    with short_tmp_dir("prt-") as redis_dir:
        # Nothing listens at these addresses: route never calls a node.
        nodes = {name: f"tcp://127.0.0.1:{9 + index}" for index, name in enumerate(NAMES)}
        settings = Config.from_mapping(
            router_settings_mapping(nodes, redis={"data_dir": str(redis_dir)})
        )
        router = Router(RouterConfig(settings), load_entry_points=False)
        await replication_plugin.startup(router)
        try:
            runtime = replication_plugin.replication_runtime(router)
            assert runtime is not None
            # Routing only reads the state. Workers would try to copy into the
            # unreachable nodes, and the copy lease each attempt holds makes a
            # test's set_primary answer "busy" at random.
            if runtime.workers is not None:
                await runtime.workers.stop()
            yield Routing(router, runtime)
        finally:
            await replication_plugin.shutdown(router)


async def test_reads_spread_over_every_up_to_date_replica(routing: Routing) -> None:
    await routing.track("spread.git")
    counts = routing.reads("spread.git")
    assert set(counts) == set(NAMES), counts
    assert routing.route(EXISTS, "spread.git").reason == "accessor: up-to-date replica"


async def test_an_outdated_replica_gets_no_reads_until_it_catches_up(routing: Routing) -> None:
    await routing.track("behind.git")
    store = routing.runtime.store
    record = await store.record_mutation(
        VS, "behind.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES
    )
    assert set(routing.reads("behind.git")) == {"gitaly-1"}
    await store.set_replica_generation(VS, "behind.git", "gitaly-3", record.generation)
    assert set(routing.reads("behind.git")) == {"gitaly-1", "gitaly-3"}


async def test_a_replica_that_is_down_gets_no_reads(routing: Routing) -> None:
    await routing.track("health.git")
    routing.router.cluster.set_healthy(routing.node("gitaly-2"), False)
    assert set(routing.reads("health.git")) == {"gitaly-1", "gitaly-3"}


async def test_primary_only_sends_reads_to_the_primary(routing: Routing) -> None:
    await routing.track("mine.git")
    assert (await routing.runtime.store.set_primary(VS, "mine.git", "gitaly-2")).status == "ok"
    header = ((ACCESSOR_POLICY_HEADER, PRIMARY_ONLY),)
    assert routing.reads("mine.git", header) == Counter({"gitaly-2": READS})
    assert routing.route(EXISTS, "mine.git", header).reason == "accessor: primary-only"


async def test_an_untracked_repository_goes_to_the_configured_primary(routing: Routing) -> None:
    assert routing.reads("never-created.git") == Counter({"gitaly-1": READS})
    decision = routing.route(WRITE_REF, "never-created.git")
    assert decision.node.name == "gitaly-1"
    assert [node.name for node in decision.replicas] == ["gitaly-2", "gitaly-3"]


async def test_mutators_go_to_the_primary_in_the_state(routing: Routing) -> None:
    await routing.track("moved.git")
    assert (await routing.runtime.store.set_primary(VS, "moved.git", "gitaly-3")).status == "ok"
    await routing.runtime.store.set_assigned(VS, "moved.git", ["gitaly-1", "gitaly-3"])
    decision = routing.route(WRITE_REF, "moved.git")
    assert decision.node.name == "gitaly-3"
    assert [node.name for node in decision.replicas] == ["gitaly-1"], "assigned replicas only"


async def test_maintenance_goes_to_every_healthy_replica(routing: Routing) -> None:
    await routing.track("tidy.git")
    assert (await routing.runtime.store.set_primary(VS, "tidy.git", "gitaly-2")).status == "ok"
    decision = routing.route(OPTIMIZE, "tidy.git")
    assert [node.name for node in decision.nodes] == ["gitaly-2", "gitaly-1", "gitaly-3"]
    routing.router.cluster.set_healthy(routing.node("gitaly-1"), False)
    await routing.runtime.store.set_assigned(VS, "tidy.git", ["gitaly-1", "gitaly-2"])
    decision = routing.route(OPTIMIZE, "tidy.git")
    assert [node.name for node in decision.nodes] == ["gitaly-2"]


async def test_without_a_healthy_up_to_date_replica_reads_go_to_the_primary(routing: Routing) -> None:
    await routing.track("lonely.git", current=("gitaly-1",))
    assert (await routing.runtime.store.set_primary(VS, "lonely.git", "gitaly-3")).status == "ok"  # an outdated one
    routing.router.cluster.set_healthy(routing.node("gitaly-1"), False)
    decision = routing.route(EXISTS, "lonely.git")
    assert (decision.node.name, decision.reason) == (
        "gitaly-3",
        "accessor: primary (no healthy up-to-date replica)",
    )
    routing.router.cluster.set_healthy(routing.node("gitaly-3"), False)
    with pytest.raises(Unavailable, match=r"the primary of praefect:lonely\.git, gitaly-3 .* is down"):
        routing.route(EXISTS, "lonely.git")


async def test_routing_reads_memory_only(routing: Routing) -> None:
    await routing.track("offline.git")
    embedded = routing.runtime.embedded
    assert embedded is not None
    os.kill(embedded.pid, signal.SIGKILL)
    # Redis is gone; decisions still come from the in-memory view.
    assert set(routing.reads("offline.git")) == set(NAMES)
    assert routing.route(WRITE_REF, "offline.git").node.name == "gitaly-1"
