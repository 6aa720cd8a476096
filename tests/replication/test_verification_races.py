"""Verification against what runs at the same time: copies, writes, marks, and a missing primary.

Real Redis, real node processes. The verdict is recorded only if nothing
changed under the claim; a primary whose replica is missing takes no write
and hands its role to a replica with every acknowledged write.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest

from praefect.core.mutation import ChangeType
from praefect.plugins.replication.intents import IntentStore
from praefect.plugins.replication.nodes import NodeClients, NodeEndpoint
from praefect.plugins.replication.state import PrimaryCheck, PrimaryMissing, RepositoryStore
from praefect.plugins.replication.verification import VerificationSettings
from praefect.plugins.replication.verification_store import (
    ClaimStatus,
    VerdictStatus,
    VerificationClaim,
    VerificationStore,
)
from tests.support.replication_cluster import (
    NODE_TOKEN,
    VS,
    ReplicaNode,
    StartWorker,
    eventually,
    refs_of,
)
from tests.support.replication_hold import HoldingProxy, holding_proxy
from tests.support.verification_cluster import FAST, checked, running_verifier, tracked_everywhere

NAMES = ("gitaly-1", "gitaly-2", "gitaly-3")
PATH = "g/app.git"
UPLOAD_PACK = "/gitaly.SSHService/SSHUploadPack"
LEASE = 5.0


async def _claim(verifications: VerificationStore, node: str, path: str = PATH) -> VerificationClaim:
    await verifications.mark(VS, [(node, path)])
    claim = await verifications.claim(VS, path, node, lease=LEASE, interval=3600.0)
    assert isinstance(claim, VerificationClaim), claim
    return claim


# ---------------------------------------------------------------- copies


@pytest.fixture
async def source_proxy(nodes: dict[str, ReplicaNode]) -> AsyncIterator[HoldingProxy]:
    """gitaly-1 behind a proxy that can hold the upload-pack a copy from it opens."""
    async with holding_proxy(nodes["gitaly-1"].address) as proxy:
        yield proxy


@pytest.fixture
async def clients_via_proxy(
    nodes: dict[str, ReplicaNode], source_proxy: HoldingProxy
) -> AsyncIterator[NodeClients]:
    endpoints = [
        NodeEndpoint(VS, name, source_proxy.address if name == "gitaly-1" else node.address, NODE_TOKEN)
        for name, node in nodes.items()
    ]
    clients = NodeClients(endpoints)
    try:
        yield clients
    finally:
        await clients.close()


async def test_a_replica_being_created_by_a_copy_is_not_found_missing(
    store: RepositoryStore,
    nodes: dict[str, ReplicaNode],
    clients_via_proxy: NodeClients,
    source_proxy: HoldingProxy,
    run_worker: StartWorker,
) -> None:
    # gitaly-2 lost its copy (an empty disk) while the state says it holds
    # generation 0; the write of generation 1 queued its copy from gitaly-1.
    await tracked_everywhere(store, nodes, PATH, generation=0)
    shutil.rmtree(nodes["gitaly-2"].repo(PATH))
    await store.record_mutation(VS, PATH, change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES)
    await store.set_replica_generation(VS, PATH, "gitaly-3", 1)

    # The copy into gitaly-2 starts and waits, half-way, for the source's refs.
    source_proxy.hold_next(UPLOAD_PACK)
    await run_worker(clients_via_proxy, "gitaly-2")
    async def copying() -> bool:
        return source_proxy.held.is_set()

    await eventually(copying, what="the copy into gitaly-2 to start")
    assert "gitaly-2" in await store.copy_leases(VS, PATH), "the worker holds the copy's lease"
    assert not await clients_via_proxy.exists(VS, PATH, node="gitaly-2", deadline=5), (
        "half-created: the node says it does not exist yet"
    )

    async with running_verifier(store, clients_via_proxy) as verifier:
        await verifier.verifications.mark(VS, [("gitaly-2", PATH)])
        checks = await verifier.run_once()
        assert ("gitaly-2", PATH) not in checked(checks), "not claimed while a copy runs into it"
        during = await store.require(VS, PATH)
        assert during.replica_generation("gitaly-2") == 0, "its generation is left to the copy"
        assert (await verifier.verifications.entries(VS, PATH, ["gitaly-2"]))["gitaly-2"].marked

        # The copy ends and raises gitaly-2; the mark is then checked for real.
        source_proxy.release.set()

        async def copied() -> bool:
            return (await store.require(VS, PATH)).is_up_to_date("gitaly-2")

        await eventually(copied, what="the copy into gitaly-2 to end and raise it")
        assert checked(await verifier.run_once()) == {("gitaly-2", PATH): "exists"}
    assert refs_of(nodes["gitaly-2"].repo(PATH)) == refs_of(nodes["gitaly-1"].repo(PATH))
    assert [call.method for call in source_proxy.calls].count(UPLOAD_PACK) == 1


async def test_a_missing_answer_during_or_after_a_copy_is_not_recorded(
    store: RepositoryStore, nodes: dict[str, ReplicaNode]
) -> None:
    await tracked_everywhere(store, nodes, PATH, generation=0)
    await store.record_mutation(VS, PATH, change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES)
    verifications = VerificationStore(store)

    # Claimed before a copy started; the node answered "missing" while it ran.
    claim = await _claim(verifications, "gitaly-2")
    lease = await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=60)
    verdict = await verifications.record(claim, exists=False)
    assert verdict.status is VerdictStatus.COPYING
    assert (await store.require(VS, PATH)).replica_generation("gitaly-2") == 0
    await store.release_copy_lease(lease)

    # Claimed, answered "missing", then a copy started, ended and raised the replica.
    claim = await _claim(verifications, "gitaly-2")
    lease = await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=60)
    raised = await store.raise_after_copy(VS, PATH, "gitaly-2", 1, source="gitaly-1", lease=lease)
    assert raised.holds
    verdict = await verifications.record(claim, exists=False)
    assert verdict.status is VerdictStatus.CHANGED, "the copy may have created it after the answer"
    assert (await store.require(VS, PATH)).is_up_to_date("gitaly-2")

    # No copy, no change: the same answer drops the generation.
    claim = await _claim(verifications, "gitaly-2")
    assert (await verifications.record(claim, exists=False)).status is VerdictStatus.MISSING
    assert (await store.require(VS, PATH)).replica_generation("gitaly-2") == -1


async def test_a_leased_replica_is_not_claimed(
    store: RepositoryStore, nodes: dict[str, ReplicaNode]
) -> None:
    await tracked_everywhere(store, nodes, PATH)
    verifications = VerificationStore(store)
    await verifications.mark(VS, [("gitaly-3", PATH)])
    lease = await store.take_copy_lease(VS, PATH, "gitaly-3", ttl=60)
    refused = await verifications.claim(VS, PATH, "gitaly-3", lease=LEASE, interval=3600.0)
    assert refused is ClaimStatus.COPYING
    await store.release_copy_lease(lease)
    assert isinstance(
        await verifications.claim(VS, PATH, "gitaly-3", lease=LEASE, interval=3600.0),
        VerificationClaim,
    )


# ------------------------------------------------------ writes and marks


async def test_a_missing_answer_while_a_write_is_in_flight_on_the_node_is_not_recorded(
    store: RepositoryStore, nodes: dict[str, ReplicaNode]
) -> None:
    # A RemoveRepository forwarded to the primary: the node deleted the
    # repository, the router has not recorded the delete yet.
    await tracked_everywhere(store, nodes, PATH)
    verifications = VerificationStore(store)
    claim = await _claim(verifications, "gitaly-1")
    intents = IntentStore(store.client)
    intent = await intents.record(
        VS, PATH, router_id="router-a", node="gitaly-1", replicas=NAMES[1:], change=ChangeType.DELETE
    )
    shutil.rmtree(nodes["gitaly-1"].repo(PATH))
    verdict = await verifications.record(claim, exists=False)
    assert verdict.status is VerdictStatus.IN_FLIGHT
    metadata = await store.require(VS, PATH)
    assert (metadata.primary, metadata.is_up_to_date("gitaly-1")) == ("gitaly-1", True)

    await store.record_mutation(
        VS, PATH, change=ChangeType.DELETE, source="gitaly-1", assigned=NAMES, intent_id=intent.id
    )
    assert await store.get(VS, PATH) is None, "the delete is recorded as if nothing happened"


async def test_a_mark_after_the_claim_survives_an_exists_answer(
    store: RepositoryStore, nodes: dict[str, ReplicaNode]
) -> None:
    await tracked_everywhere(store, nodes, PATH)
    verifications = VerificationStore(store)
    claim = await _claim(verifications, "gitaly-2")
    # The operator replaced the disk and marked the node after the node answered.
    await verifications.mark(VS, [("gitaly-2", PATH)])
    verdict = await verifications.record(claim, exists=True)
    assert verdict.status is VerdictStatus.MARKED
    entry = (await verifications.entries(VS, PATH, ["gitaly-2"]))["gitaly-2"]
    assert entry.marked, "still due at once: the answer may predate the replacement"


# ------------------------------------------------------ a missing primary


async def test_a_primary_whose_replica_is_missing_takes_no_write_and_hands_its_role_over(
    store: RepositoryStore, nodes: dict[str, ReplicaNode], node_clients: NodeClients,
    run_worker: StartWorker,
) -> None:
    await tracked_everywhere(store, nodes, PATH)
    expected_refs = refs_of(nodes["gitaly-2"].repo(PATH))
    verifications = VerificationStore(store)

    # Found missing: the generation is dropped, nothing is copied into it.
    claim = await _claim(verifications, "gitaly-1")
    shutil.rmtree(nodes["gitaly-1"].repo(PATH))
    verdict = await verifications.record(claim, exists=False)
    assert (verdict.status, verdict.repair_source) == (VerdictStatus.MISSING_PRIMARY, "")
    dropped = await store.require(VS, PATH)
    assert (dropped.primary, dropped.replica_generation("gitaly-1")) == ("gitaly-1", -1)

    # A write that reached it anyway (the router's view lagged) is refused.
    intents = IntentStore(store.client)
    intent = await intents.record(
        VS, PATH, router_id="router-a", node="gitaly-1", replicas=NAMES[1:], change=ChangeType.UPDATE
    )
    with pytest.raises(PrimaryMissing) as refused:
        await store.record_mutation(
            VS, PATH, change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES,
            intent_id=intent.id, check=PrimaryCheck.REPAIR,
        )
    assert refused.value.code.name == "FAILED_PRECONDITION"
    assert "lost its copy" in refused.value.message
    assert await intents.list(VS) == [], "the intent is cleared: nothing to resolve"
    unchanged = await store.require(VS, PATH)
    assert (unchanged.generation, unchanged.replica_generation("gitaly-1")) == (1, -1)

    # The verifier hands the role to an up-to-date replica that answers and
    # queues the old primary's repair, which the replay worker carries out.
    async with running_verifier(store, node_clients) as verifier:
        await verifier.run_once()
        assert verifier.stats.primaries_replaced == 1
    moved = await store.require(VS, PATH)
    assert moved.primary == "gitaly-2"
    assert moved.generation == 1, "gitaly-2 had every write: nothing made authoritative"
    await run_worker(node_clients, "gitaly-1")

    async def repaired() -> bool:
        return (await store.require(VS, PATH)).is_up_to_date("gitaly-1")

    await eventually(repaired, what="the former primary to be repaired from gitaly-2")
    assert refs_of(nodes["gitaly-1"].repo(PATH)) == expected_refs


async def test_a_missing_primary_without_a_replica_that_has_every_acknowledged_write_stays_read_only(
    store: RepositoryStore, nodes: dict[str, ReplicaNode], node_clients: NodeClients
) -> None:
    await tracked_everywhere(store, nodes, PATH)
    # A write only the primary has (its replication has not run): acknowledged.
    await store.record_mutation(VS, PATH, change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES)
    verifications = VerificationStore(store)
    claim = await _claim(verifications, "gitaly-1")
    shutil.rmtree(nodes["gitaly-1"].repo(PATH))
    assert (await verifications.record(claim, exists=False)).status is VerdictStatus.MISSING_PRIMARY

    async with running_verifier(store, node_clients) as verifier:
        await verifier.run_once()
        assert verifier.stats.primaries_replaced == 0
    after = await store.require(VS, PATH)
    assert (after.primary, after.generation, after.up_to_date) == ("gitaly-1", 2, ()), (
        "no replica has generation 2: the role stays, the repository is read-only"
    )
    replacement = await verifications.replace_missing_primary(VS, PATH, "gitaly-1", ["gitaly-2", "gitaly-3"])
    assert replacement.status == "none"

    # Had generation 2 never been acknowledged (the failover plugin's
    # `acked`), a replica at 1 would lose nothing acknowledged: it takes
    # over and its copy becomes the repository's, as after an election.
    await store.client.hset(store.keys(VS).repository(PATH), "acked", 1)
    async with running_verifier(store, node_clients) as verifier:
        await verifier.run_once()
        assert verifier.stats.primaries_replaced == 1
    moved = await store.require(VS, PATH)
    assert (moved.primary, moved.generation) == ("gitaly-2", 3)
    assert moved.up_to_date == ("gitaly-2",), "the others are replicated from it"


async def test_with_failover_off_a_missing_primary_keeps_its_role(
    store: RepositoryStore, nodes: dict[str, ReplicaNode], node_clients: NodeClients
) -> None:
    await tracked_everywhere(store, nodes, PATH)
    shutil.rmtree(nodes["gitaly-1"].repo(PATH))
    off = VerificationSettings(
        interval=3600.0, lease=FAST.lease, call_timeout=FAST.call_timeout, replace_primaries=False
    )
    async with running_verifier(store, node_clients, settings=off) as verifier:
        await verifier.verifications.mark(VS, [("gitaly-1", PATH)])
        assert checked(await verifier.run_once())[("gitaly-1", PATH)] == "missing"
    after = await store.require(VS, PATH)
    assert (after.primary, after.replica_generation("gitaly-1")) == ("gitaly-1", -1)

