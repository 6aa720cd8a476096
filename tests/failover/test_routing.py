"""Routing around a down primary, and writes that reach a former primary (in-process router)."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio

from praefect.core.mutation import ChangeType, Mutation
from praefect.plugins.failover.election import MovedBeforeAcknowledgement
from praefect.plugins.failover.runtime import FailoverRuntime
from praefect.plugins.replication.state import PrimaryMoved
from praefect.protos.gitaly import repository_pb2, repository_pb2_grpc
from tests.support.failover_cluster import (
    AUTH,
    VS,
    FailoverCluster,
    commit_file,
    create_repository,
    eventually,
    exists,
    repository,
    runtime_of,
    sees_healthy,
)

NODES = ("gitaly-1", "gitaly-2", "gitaly-3")


async def _everywhere(cluster: FailoverCluster, path: str) -> bool:
    metadata = await cluster.store.get(VS, path)
    return metadata is not None and len(metadata.up_to_date) == len(NODES)


async def test_a_new_repository_goes_to_a_healthy_node_when_the_configured_primary_is_down(
    cluster: FailoverCluster,
) -> None:
    async with cluster.router() as router:
        assert router.bound_addr
        cluster.nodes["gitaly-1"].stop()
        await eventually(lambda: not sees_healthy(router, "gitaly-1"), what="gitaly-1 to be down")
        async with aio.insecure_channel(router.bound_addr) as channel:
            await create_repository(channel, "new.git")
            await commit_file(channel, "new.git", "main", "first.txt")
    metadata = await cluster.metadata("new.git")
    assert metadata.primary == "gitaly-2"
    assert cluster.repo("gitaly-2", "new.git").is_dir()


async def test_with_failover_disabled_reads_use_a_replica_and_writes_wait_for_the_primary(
    cluster: FailoverCluster,
) -> None:
    async with cluster.router(enabled=False) as router:
        assert router.bound_addr
        async with aio.insecure_channel(router.bound_addr) as channel:
            await create_repository(channel, "a.git")
            await eventually(lambda: _everywhere(cluster, "a.git"), what="a.git on every node")
            cluster.nodes["gitaly-1"].stop()
            await eventually(lambda: not sees_healthy(router, "gitaly-1"), what="gitaly-1 to be down")
            assert await exists(channel, "a.git")
            with pytest.raises(aio.AioRpcError) as primary_only:
                await repository_pb2_grpc.RepositoryServiceStub(channel).RepositoryExists(
                    repository_pb2.RepositoryExistsRequest(repository=repository("a.git")),
                    metadata=(*AUTH, ("gitaly-route-repository-accessor-policy", "primary-only")),
                )
            with pytest.raises(aio.AioRpcError) as refused:
                await commit_file(channel, "a.git", "main", "x.txt")
    assert primary_only.value.code() is grpc.StatusCode.UNAVAILABLE
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "is down" in (refused.value.details() or "")
    assert (await cluster.primary_of("a.git")) == "gitaly-1", "no automatic failover"


def _mutation(node: str, runtime: FailoverRuntime) -> Mutation:
    storage = runtime.cluster.virtual_storage(VS)
    return Mutation(
        virtual_storage=VS,
        relative_path="a.git",
        method="/gitaly.RefService/WriteRef",
        change_type=ChangeType.UPDATE,
        primary=storage.node(node),
        replicas=tuple(n for n in storage.nodes if n.name != node),
    )


async def test_a_write_that_reaches_a_former_primary_is_refused_and_the_new_primary_wins(
    cluster: FailoverCluster,
) -> None:
    async with cluster.router() as router:
        assert router.bound_addr
        runtime = runtime_of(router)
        replication = runtime.replication
        async with aio.insecure_channel(router.bound_addr) as channel:
            await create_repository(channel, "a.git")
            await commit_file(channel, "a.git", "main", "one.txt")
            await eventually(lambda: _everywhere(cluster, "a.git"), what="a.git on every node")
        intents = replication.intents
        assert intents is not None
        # gitaly-2 takes over while a write to gitaly-1 is in flight...
        late = await replication.begin_mutation(
            VS, "a.git", primary="gitaly-1", replicas=("gitaly-2", "gitaly-3"),
            change=ChangeType.UPDATE,
        )
        assert (await cluster.store.set_primary(VS, "a.git", "gitaly-2")).changed
        before = await cluster.metadata("a.git")
        # ...and its OK arrives: the replication plugin refuses to record it.
        with pytest.raises(PrimaryMoved, match="moved from gitaly-1 to gitaly-2") as refused:
            await replication.record_mutation(
                VS, "a.git", primary="gitaly-1", replicas=("gitaly-2", "gitaly-3"),
                change=ChangeType.UPDATE, intent=late,
            )
        assert refused.value.code is grpc.StatusCode.ABORTED
        assert not await intents.exists(late), "the resolver must not replay it from gitaly-1"
        assert late.id not in replication.in_flight()
        # The router's own workers bring gitaly-1 back in line with gitaly-2.
        await eventually(lambda: _everywhere(cluster, "a.git"), what="gitaly-1 repaired from gitaly-2")
        repaired = await cluster.metadata("a.git")
        assert (repaired.primary, repaired.generation) == ("gitaly-2", before.generation)

        # A write recorded before the move but not yet acknowledged when it
        # happens: ABORTED too, and gitaly-2's copy is made authoritative again
        # instead of being overwritten from gitaly-1.
        assert (await cluster.store.set_primary(VS, "a.git", "gitaly-1")).changed
        recorded = await cluster.store.record_mutation(
            VS, "a.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NODES, targets=()
        )
        assert (await cluster.store.set_primary(VS, "a.git", "gitaly-2")).changed
        await replication.cache.wait_until(
            lambda: (m := replication.cache.get(VS, "a.git")) is not None
            and m.primary == "gitaly-2"
        )
        with pytest.raises(MovedBeforeAcknowledgement, match="before this write was acknowledged") as late_ack:
            await runtime.acknowledger.acknowledge(_mutation("gitaly-1", runtime))
        assert late_ack.value.code is grpc.StatusCode.ABORTED
    after = await cluster.metadata("a.git")
    assert after.primary == "gitaly-2"
    assert after.generation == recorded.generation + 1
    assert after.is_up_to_date("gitaly-2"), "gitaly-2's copy is the newest; the others follow it"
