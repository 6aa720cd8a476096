"""The verification worker on real Redis and real node processes.

A replica that exists is recorded verified and left alone; one whose
directory is gone loses its generation and is repaired by the ordinary
replication workers; a node that is down or fails the call gives no
verdict; several workers never check one replica at once, and a dead
worker's claim expires; marks come before the interval.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from praefect.core.mutation import ChangeType
from praefect.core.telemetry.metrics import ReplicationMetrics
from praefect.plugins.replication.embedded_redis import EmbeddedRedis
from praefect.plugins.replication.nodes import NodeClients
from praefect.plugins.replication.runtime import ReplicationRuntime, RuntimeOptions
from praefect.plugins.replication.state import RepositoryStore
from praefect.plugins.replication.verification import DEFAULT_INTERVAL, VerificationSettings
from praefect.plugins.replication.verification_store import (
    ClaimStatus,
    VerdictStatus,
    VerificationClaim,
    VerificationStore,
)
from praefect.settings import Config
from tests.support.replication_cluster import (
    VS,
    ReplicaNode,
    StartWorker,
    eventually,
    refs_of,
    unreachable_node,
)
from tests.support.router import router_settings_mapping
from tests.support.verification_cluster import (
    checked,
    mark,
    running_verifier,
    tracked_everywhere,
)

NAMES = ("gitaly-1", "gitaly-2", "gitaly-3")
PATH = "g/app.git"


async def _event_counts(client: aioredis.Redis) -> dict[str, int]:
    store_keys = RepositoryStore(client).keys(VS)
    return {name: int(await client.xlen(store_keys.events(name))) for name in NAMES}


async def test_a_replica_that_exists_is_recorded_verified_and_left_alone(
    store: RepositoryStore, client: aioredis.Redis, nodes: dict[str, ReplicaNode],
    node_clients: NodeClients,
) -> None:
    await tracked_everywhere(store, nodes, PATH)
    before = await store.require(VS, PATH)
    events = await _event_counts(client)
    registry = CollectorRegistry()
    async with running_verifier(store, node_clients) as verifier:
        verifier.metrics = ReplicationMetrics(registry)
        assert await verifier.run_once() == [], "just written: first due one interval on"
        await mark(store, NAMES, [PATH])
        started = time.time()
        checks = await verifier.run_once()
        assert checked(checks) == {(name, PATH): "exists" for name in NAMES}
        entries = await verifier.verifications.entries(VS, PATH, NAMES)
        for name in NAMES:
            verified = entries[name].verified_at
            assert verified is not None and started - 1 <= verified <= time.time() + 1, (name, verified)
        assert await verifier.run_once() == [], "verified within the interval: not due again"
        assert verifier.stats.seeded == 3

    after = await store.require(VS, PATH)
    assert (after.generation, dict(after.replica_generations), after.version) == (
        before.generation, dict(before.replica_generations), before.version
    ), "an existing replica's state is not touched"
    assert await _event_counts(client) == events, "no replication was queued"
    for name in NAMES:
        assert registry.get_sample_value(
            "praefect_replication_verifications_total",
            {"virtual_storage": VS, "node": name, "result": "exists"},
        ) == 1


async def test_a_replica_gone_from_disk_loses_its_generation_and_is_repaired(
    store: RepositoryStore, nodes: dict[str, ReplicaNode], node_clients: NodeClients,
    run_worker: StartWorker,
) -> None:
    await tracked_everywhere(store, nodes, PATH)
    expected_refs = refs_of(nodes["gitaly-1"].repo(PATH))
    shutil.rmtree(nodes["gitaly-2"].repo(PATH))
    async with running_verifier(store, node_clients) as verifier:
        await mark(store, NAMES, [PATH])
        checks = await verifier.run_once()
        assert checked(checks) == {
            ("gitaly-1", PATH): "exists", ("gitaly-2", PATH): "missing", ("gitaly-3", PATH): "exists",
        }
        [missing] = [check for check in checks if check.node == "gitaly-2"]
        assert missing.verdict is not None
        assert (missing.verdict.status, missing.verdict.repair_source, missing.verdict.repair_generation) == (
            VerdictStatus.MISSING, "gitaly-1", 1
        )
        dropped = await store.require(VS, PATH)
        assert dropped.replica_generation("gitaly-2") == -1
        assert dropped.up_to_date == ("gitaly-1", "gitaly-3"), "no read goes to it, no election picks it"
        cached = verifier.cache.get(VS, PATH)
        assert cached is not None and "gitaly-2" not in cached.up_to_date, "the routers' view follows"

        # The ordinary replay worker carries out the repair event.
        await run_worker(node_clients, "gitaly-2")

        async def repaired() -> bool:
            current = await store.require(VS, PATH)
            return current.is_up_to_date("gitaly-2")

        await eventually(repaired, what="gitaly-2 to be repaired and back at the repository's generation")
        assert refs_of(nodes["gitaly-2"].repo(PATH)) == expected_refs

        # Repaired, it is back in the due set, its clock started by the copy.
        assert await verifier.run_once() == []
        entry = (await verifier.verifications.entries(VS, PATH, ["gitaly-2"]))["gitaly-2"]
        assert entry.verified_at is not None and not entry.marked


async def test_a_node_that_is_down_or_fails_the_call_gives_no_verdict(
    store: RepositoryStore, nodes: dict[str, ReplicaNode], tmp_path: Path
) -> None:
    down = unreachable_node(tmp_path, "gitaly-4")
    endpoints = [node.endpoint() for node in nodes.values()]
    # gitaly-3 answers health checks (they need no token) but refuses the call.
    endpoints[2] = nodes["gitaly-3"].endpoint(token="not-the-node-token")
    clients = NodeClients([*endpoints, down.endpoint()])
    try:
        await tracked_everywhere(store, {name: nodes[name] for name in NAMES}, PATH)
        await store.set_assigned(VS, PATH, [*NAMES, "gitaly-4"])
        await store.set_replica_generation(VS, PATH, "gitaly-4", 1)
        before = await store.require(VS, PATH)
        async with running_verifier(store, clients) as verifier:
            await mark(store, [*NAMES, "gitaly-4"], [PATH])
            checks = await verifier.run_once()
            assert checked(checks) == {
                ("gitaly-1", PATH): "exists",
                ("gitaly-2", PATH): "exists",
                ("gitaly-3", PATH): "failed",
            }, "gitaly-4 does not answer a health check: not even claimed"
            assert verifier.stats.nodes_down == 1
            [failed] = [check for check in checks if check.node == "gitaly-3"]
            assert failed.error.startswith(("UNAUTHENTICATED", "PERMISSION_DENIED")), failed.error
            keys = store.keys(VS)
            assert await store.client.hlen(keys.verification_claims("gitaly-3")) == 0, "claim released"
            entries = await verifier.verifications.entries(VS, PATH, ["gitaly-3", "gitaly-4"])
            assert entries["gitaly-3"].marked and entries["gitaly-4"].marked, "still due at once"
            again = await verifier.run_once()
            assert checked(again) == {("gitaly-3", PATH): "failed"}, "tried again, still no verdict"
        after = await store.require(VS, PATH)
        assert dict(after.replica_generations) == dict(before.replica_generations)
    finally:
        await clients.close()


async def test_two_workers_never_verify_the_same_replica_at_once(
    store: RepositoryStore, nodes: dict[str, ReplicaNode], node_clients: NodeClients
) -> None:
    paths = [f"g/repo-{index}.git" for index in range(6)]
    for path in paths:
        await tracked_everywhere(store, nodes, path, commits=1)
    small = VerificationSettings(
        interval=3600.0, batch_size=4, lease=5.0, call_timeout=2.0, pass_interval=0.05
    )
    await mark(store, NAMES, paths)
    async with (
        running_verifier(store, node_clients, settings=small) as first,
        running_verifier(store, node_clients, settings=small, own_store=True) as second,
    ):
        # The claim: what one worker holds, the other cannot take.
        verifications = first.verifications
        claimed = []
        for path in await verifications.due(VS, "gitaly-1", interval=3600.0, limit=3):
            claim = await verifications.claim(VS, path, "gitaly-1", lease=5.0, interval=3600.0)
            assert isinstance(claim, VerificationClaim), claim
            claimed.append(claim)
        for claim in claimed:
            refused = await second.verifications.claim(
                VS, claim.relative_path, "gitaly-1", lease=5.0, interval=3600.0
            )
            assert refused is ClaimStatus.HELD, (claim.relative_path, refused)
        for claim in claimed:
            assert (await verifications.record(claim, exists=True)).status is VerdictStatus.VERIFIED

        # Whole passes side by side until nothing is due: every replica checked exactly once.
        seen: list[tuple[str, str]] = [(claim.node, claim.relative_path) for claim in claimed]
        for _ in range(20):
            a, b = await asyncio.gather(first.run_once(), second.run_once())
            pass_a = {(check.node, check.relative_path) for check in a}
            pass_b = {(check.node, check.relative_path) for check in b}
            assert not pass_a & pass_b, f"checked by both workers in one pass: {pass_a & pass_b}"
            assert all(check.result == "exists" for check in (*a, *b))
            seen.extend(pass_a | pass_b)
            if not a and not b:
                break
        assert sorted(seen) == sorted((name, path) for name in NAMES for path in paths), (
            "every replica verified exactly once between the two workers"
        )


async def test_the_claim_of_a_worker_that_died_expires(
    store: RepositoryStore, nodes: dict[str, ReplicaNode]
) -> None:
    await tracked_everywhere(store, nodes, PATH)
    verifications = VerificationStore(store)
    await verifications.mark(VS, [("gitaly-2", PATH)])
    dead = await verifications.claim(VS, PATH, "gitaly-2", lease=0.5, interval=3600.0)
    assert isinstance(dead, VerificationClaim)
    taken_at = time.monotonic()
    live = await verifications.claim(VS, PATH, "gitaly-2", lease=5.0, interval=3600.0)
    assert live is ClaimStatus.HELD, "the dead worker's claim holds until it expires"

    claims: list[VerificationClaim] = []

    async def claimable() -> bool:
        result = await verifications.claim(VS, PATH, "gitaly-2", lease=5.0, interval=3600.0)
        if isinstance(result, VerificationClaim):
            claims.append(result)
            return True
        assert result is ClaimStatus.HELD, result
        return False

    await eventually(claimable, within=5.0, what="the dead worker's claim to expire")
    assert time.monotonic() - taken_at >= 0.4, "not before its lease ran out"
    late = await verifications.record(dead, exists=False)
    assert late.status is VerdictStatus.LOST, "a late answer under an expired claim is dropped"
    assert (await store.require(VS, PATH)).is_up_to_date("gitaly-2")
    verdict = await verifications.record(claims[0], exists=True)
    assert verdict.status is VerdictStatus.VERIFIED


async def test_marked_replicas_are_verified_before_the_interval(
    store: RepositoryStore, nodes: dict[str, ReplicaNode], node_clients: NodeClients
) -> None:
    paths = ["g/one.git", "g/two.git"]
    for path in paths:
        await tracked_everywhere(store, nodes, path, commits=1)
    async with running_verifier(store, node_clients) as verifier:
        assert await verifier.run_once() == [], "just written: nothing due for an hour"
        assert verifier.stats.seeded == 6
        marked = await verifier.verifications.mark(VS, [("gitaly-2", path) for path in paths])
        assert marked == 2
        entries = await verifier.verifications.entries(VS, paths[0], NAMES)
        assert entries["gitaly-2"].marked and not entries["gitaly-1"].marked
        checks = await verifier.run_once()
        assert checked(checks) == {("gitaly-2", path): "exists" for path in paths}


@pytest.mark.parametrize("exists", [True, False])
async def test_a_repository_deleted_or_created_again_meanwhile_gets_no_verdict(
    store: RepositoryStore, nodes: dict[str, ReplicaNode], exists: bool
) -> None:
    await tracked_everywhere(store, nodes, PATH)
    verifications = VerificationStore(store)
    await verifications.mark(VS, [("gitaly-2", PATH)])
    claim = await verifications.claim(VS, PATH, "gitaly-2", lease=5.0, interval=3600.0)
    assert isinstance(claim, VerificationClaim)
    await store.record_mutation(VS, PATH, change=ChangeType.DELETE, source="gitaly-1", assigned=NAMES)
    gone = await verifications.record(claim, exists=exists)
    assert gone.status is VerdictStatus.UNTRACKED
    keys = store.keys(VS)
    assert await store.client.zscore(keys.verification_due("gitaly-2"), PATH) is None

    await store.track_repository(VS, PATH, primary="gitaly-1", assigned=NAMES)
    await store.set_replica_generation(VS, PATH, "gitaly-2", 0)
    await verifications.mark(VS, [("gitaly-2", PATH)])
    claim = await verifications.claim(VS, PATH, "gitaly-2", lease=5.0, interval=3600.0)
    assert isinstance(claim, VerificationClaim)
    await store.record_mutation(VS, PATH, change=ChangeType.DELETE, source="gitaly-1", assigned=NAMES)
    await store.track_repository(VS, PATH, primary="gitaly-1", assigned=NAMES)
    await store.set_replica_generation(VS, PATH, "gitaly-2", 0)
    again = await verifications.record(claim, exists=exists)
    assert again.status is VerdictStatus.RECREATED
    assert (await store.require(VS, PATH)).replica_generation("gitaly-2") == 0, "the new life is untouched"


@pytest.mark.parametrize(("interval", "runs"), [(None, True), (2.0, True), (0.0, False)])
async def test_the_runtime_runs_a_verifier_unless_the_interval_is_zero(
    redis_server: EmbeddedRedis, interval: float | None, runs: bool
) -> None:
    replication = {} if interval is None else {"verification_interval": interval}
    settings = Config.from_mapping(
        router_settings_mapping(
            {name: f"tcp://127.0.0.1:{9 + index}" for index, name in enumerate(NAMES)},
            redis={"url": redis_server.url},
            replication=replication,
            failover={"enabled": False},
        )
    )
    # What `praefect replicate` runs: workers without a router.
    runtime = ReplicationRuntime(settings, options=RuntimeOptions(intents=False, embedded_redis=False))
    await runtime.start()
    try:
        assert (runtime.verifier is not None) is runs
        if runtime.verifier is not None:
            pace = runtime.verifier.settings
            assert pace.interval == (DEFAULT_INTERVAL if interval is None else interval)
            # A short interval is looked at more often: a quarter of it, at most 5 s.
            assert pace.pass_interval == (5.0 if interval is None else 0.5)
            assert pace.replace_primaries is False, "failover.enabled = false: no primary moves"
    finally:
        await runtime.stop()
    assert runtime.verifier is None
