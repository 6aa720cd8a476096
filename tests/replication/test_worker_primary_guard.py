"""The worker never copies into the primary; a copy counts only while its source vouches for it.

Real Redis, real node processes, real ReplicateRepository calls. What
happens in the middle of a copy (a failover, a refused write on the source)
is made deterministic by :class:`HookedNodeClients`: it runs the test's
hook when the worker calls ReplicateRepository, before the real call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from praefect.core.mutation import ChangeType
from praefect.plugins.replication.intents import IntentStore
from praefect.plugins.replication.nodes import NodeClients, NodeEndpoint
from praefect.plugins.replication.state import (
    PrimaryCheck,
    PrimaryMoved,
    RaiseStatus,
    RepositoryStore,
)
from praefect.plugins.replication.streams import queue_status
from praefect.plugins.replication.worker import WorkerSettings
from tests.support.gitenv import git
from tests.support.replication_cluster import (
    VS,
    ReplicaNode,
    StartWorker,
    add_commit,
    eventually,
    make_bare_repo,
    refs_of,
)
from tests.support.telemetry import Spans, in_memory_tracing

NAMES = ["gitaly-1", "gitaly-2", "gitaly-3"]
SETTINGS = WorkerSettings(
    block=0.2,
    claim_idle=2.0,
    backoff_initial=0.1,
    backoff_max=0.4,
    backoff_jitter=0.0,
    trim_interval=0.2,
    call_timeout=30,
    max_attempts=4,
)
WORKER_LOG = "praefect.replication.worker"

#: ``await hook(source, target)``, run when ReplicateRepository is called, before it is sent
ReplicateHook = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True)
class ReplicateCall:
    source: str
    target: str
    #: the target's replica generation in Redis when the call started
    target_generation: int
    #: the target's refs on disk when the call started
    target_refs: str


class HookedNodeClients(NodeClients):
    """Real node clients that run a test hook inside every ReplicateRepository."""

    def __init__(
        self, endpoints: list[NodeEndpoint], store: RepositoryStore, nodes: dict[str, ReplicaNode]
    ) -> None:
        super().__init__(endpoints)
        self.store = store
        self.disks = nodes
        self.hook: ReplicateHook | None = None
        self.calls: list[ReplicateCall] = []

    async def replicate(
        self, virtual_storage: str, relative_path: str, *, source: str, target: str, deadline: float
    ) -> None:
        metadata = await self.store.require(virtual_storage, relative_path)
        on_disk = self.disks[target].repo(relative_path)
        self.calls.append(
            ReplicateCall(
                source,
                target,
                metadata.replica_generation(target),
                refs_of(on_disk) if on_disk.exists() else "",
            )
        )
        if self.hook is not None:
            hook, self.hook = self.hook, None  # once
            await hook(source, target)
        await super().replicate(
            virtual_storage, relative_path, source=source, target=target, deadline=deadline
        )


@pytest.fixture
def node_names() -> list[str]:
    return NAMES


@pytest.fixture
async def clients(
    nodes: dict[str, ReplicaNode], store: RepositoryStore
) -> AsyncIterator[HookedNodeClients]:
    hooked = HookedNodeClients([node.endpoint() for node in nodes.values()], store, nodes)
    try:
        yield hooked
    finally:
        await hooked.close()


@pytest.fixture
def worker_settings() -> WorkerSettings:
    return SETTINGS


async def _settled(client: aioredis.Redis, target: str) -> bool:
    return bool((await queue_status(client, VS, target)).pending == 0)


async def _track(store: RepositoryStore, nodes: dict[str, ReplicaNode], path: str) -> Path:
    """``path`` on gitaly-1 (primary) and, identical, on gitaly-3 (up to date); gitaly-2 lacks it."""
    primary = make_bare_repo(nodes["gitaly-1"].storage, path, 2)
    await asyncio.to_thread(_clone_bare, primary, nodes["gitaly-3"].repo(path))
    await store.track_repository(VS, path, primary="gitaly-1", assigned=NAMES)
    await store.set_replica_generation(VS, path, "gitaly-3", 0)
    return primary


def _clone_bare(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    git(["clone", "-q", "--bare", str(source), str(target)])


# ----------------------------------------------------------------- the worker


async def test_an_event_whose_target_became_the_primary_is_acknowledged_without_a_copy(
    nodes: dict[str, ReplicaNode], clients: HookedNodeClients, store: RepositoryStore,
    client: aioredis.Redis, run_worker: StartWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = "moved.git"
    await _track(store, nodes, path)
    await store.record_mutation(VS, path, change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES)
    # gitaly-2 has an older copy; a failover makes it the primary (an election
    # of a replica behind the repository's generation), and it takes a write.
    make_bare_repo(nodes["gitaly-2"].storage, path, 1)
    taken = await asyncio.to_thread(add_commit, nodes["gitaly-2"].repo(path), "taken-as-primary")
    assert (await store.set_primary(VS, path, "gitaly-2")).changed
    before = refs_of(nodes["gitaly-2"].repo(path))
    assert taken in before

    with in_memory_tracing() as exporter, caplog.at_level(logging.INFO, logger=WORKER_LOG):
        worker = await run_worker(clients, "gitaly-2")
        async def acknowledged() -> bool:
            # counted once Redis has answered the XACK, after it is visible here
            return await _settled(client, "gitaly-2") and worker.stats.events_acked == 2

        await eventually(acknowledged, what="gitaly-2's events to be acknowledged")
        await worker.stop()
        spans = Spans.from_exporter(exporter)

    assert clients.calls == [], "no ReplicateRepository into the primary"
    assert (worker.stats.replicate_calls, worker.stats.skipped, worker.stats.events_acked) == (0, 1, 2)
    assert refs_of(nodes["gitaly-2"].repo(path)) == before, "the primary's refs are untouched"
    assert (await store.require(VS, path)).replica_generation("gitaly-2") == -1, "nothing raised"
    replay = spans.one("replicate update")
    assert replay.attributes["praefect.outcome"] == "skipped: target is now the primary"
    assert any(
        "not replicating moved.git into gitaly-2: it is the primary now" in record.getMessage()
        for record in caplog.records
    ), caplog.text


async def test_a_source_dropped_during_the_copy_does_not_get_the_target_raised(
    nodes: dict[str, ReplicaNode], clients: HookedNodeClients, store: RepositoryStore,
    client: aioredis.Redis, run_worker: StartWorker,
) -> None:
    path = "refused.git"
    await _track(store, nodes, path)
    refused: list[str] = []

    async def failover_with_a_write_in_flight(source: str, target: str) -> None:
        # While the worker copies gitaly-1 into gitaly-2: the primary moves to
        # gitaly-3, gitaly-1 takes a write anyway and its recording is refused
        # (gitaly-1's generation dropped, a repair queued for it).
        assert (source, target) == ("gitaly-1", "gitaly-2")
        assert (await store.set_primary(VS, path, "gitaly-3", expected="gitaly-1", up_to_date=True)).changed
        refused.append(await asyncio.to_thread(add_commit, nodes["gitaly-1"].repo(path), "refused"))
        with pytest.raises(PrimaryMoved):
            await store.record_mutation(
                VS, path, change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES,
                check=PrimaryCheck.REPAIR,
            )
        assert (await store.require(VS, path)).replica_generation("gitaly-1") == -1

    clients.hook = failover_with_a_write_in_flight
    with in_memory_tracing() as exporter:
        worker = await run_worker(clients, "gitaly-2")

        async def converged() -> bool:
            metadata = await store.require(VS, path)
            return metadata.replica_generation("gitaly-2") == 0 and await _settled(client, "gitaly-2")

        await eventually(converged, what="gitaly-2 to be replicated from the new primary")
        await worker.stop()
        spans = Spans.from_exporter(exporter)

    first, second = clients.calls
    assert (first.source, second.source) == ("gitaly-1", "gitaly-3"), "planned again from the primary"
    assert refused[0] in second.target_refs, "the first copy took the refused write ..."
    assert second.target_generation == -1, "... and gitaly-2 was not raised after it"
    final = refs_of(nodes["gitaly-2"].repo(path))
    assert refused[0] not in final
    assert final == refs_of(nodes["gitaly-3"].repo(path))
    assert (worker.stats.not_raised, worker.stats.retried, worker.stats.dead_lettered) == (1, 1, 0)
    outcomes = sorted(str(span.attributes["praefect.outcome"]) for span in spans.named("replicate create"))
    assert outcomes[0].startswith(
        "copied from gitaly-1 but not raised to generation 0: gitaly-1's generation was dropped "
        "during the copy"
    ), outcomes
    assert outcomes[0].endswith("attempt 1 of 4 failed; next in 0.1 s"), outcomes
    assert outcomes[1] == "replicated from gitaly-3 at generation 0"


async def test_a_copy_from_a_primary_that_takes_writes_meanwhile_still_raises_the_target(
    nodes: dict[str, ReplicaNode], clients: HookedNodeClients, store: RepositoryStore,
    client: aioredis.Redis, run_worker: StartWorker,
) -> None:
    path = "busy.git"
    primary = await _track(store, nodes, path)
    await store.record_mutation(VS, path, change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES)

    async def acknowledged_write(source: str, target: str) -> None:
        # The source (the primary) moves on from generation 1 to 2: its copy
        # is still at least generation 1, so the target is raised to 1.
        await asyncio.to_thread(add_commit, primary, "meanwhile")
        await store.record_mutation(
            VS, path, change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES,
            check=PrimaryCheck.REPAIR,
        )

    clients.hook = acknowledged_write
    worker = await run_worker(clients, "gitaly-2")

    async def current() -> bool:
        metadata = await store.require(VS, path)
        return metadata.replica_generation("gitaly-2") == 2 and await _settled(client, "gitaly-2")

    await eventually(current, what="gitaly-2 to reach generation 2")
    assert [call.target_generation for call in clients.calls] == [-1, 1], (
        "raised to 1 after the first copy, then replicated for generation 2"
    )
    assert worker.stats.not_raised == 0
    assert refs_of(nodes["gitaly-2"].repo(path)) == refs_of(primary)


async def test_the_normal_path_raises_the_target_to_the_source_generation(
    nodes: dict[str, ReplicaNode], clients: HookedNodeClients, store: RepositoryStore,
    client: aioredis.Redis, run_worker: StartWorker,
) -> None:
    path = "plain.git"
    primary = await _track(store, nodes, path)
    await asyncio.to_thread(add_commit, primary, "second")
    record = await store.record_mutation(
        VS, path, change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES
    )
    with in_memory_tracing() as exporter:
        worker = await run_worker(clients, "gitaly-2")

        async def raised() -> bool:
            metadata = await store.require(VS, path)
            return metadata.is_up_to_date("gitaly-2") and await _settled(client, "gitaly-2")

        await eventually(raised, what="gitaly-2 to be up to date")
        await worker.stop()
        spans = Spans.from_exporter(exporter)

    assert record.generation == 1
    assert [(call.source, call.target) for call in clients.calls] == [("gitaly-1", "gitaly-2")]
    assert (worker.stats.replicate_calls, worker.stats.not_raised) == (1, 0)
    assert refs_of(nodes["gitaly-2"].repo(path)) == refs_of(primary)
    replay = spans.one("replicate update")
    assert replay.attributes["praefect.outcome"] == "replicated from gitaly-1 at generation 1"


# -------------------------------------------------------- the raise, in Lua


async def _repository(store: RepositoryStore, path: str, generation: int = 2) -> None:
    """Tracked, primary gitaly-1 at ``generation``, gitaly-3 at 1, gitaly-2 without a copy."""
    await store.track_repository(VS, path, primary="gitaly-1", assigned=NAMES)
    for _ in range(generation):
        await store.record_mutation(VS, path, change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES)
    await store.set_replica_generation(VS, path, "gitaly-3", 1)


async def test_the_raise_needs_the_source_at_the_copied_generation_not_up_to_date(
    store: RepositoryStore,
) -> None:
    await _repository(store, "r.git")
    # gitaly-3 is behind the repository (2) but still a copy of generation 1.
    result = await store.raise_after_copy(VS, "r.git", "gitaly-2", 1, source="gitaly-3")
    assert (result.status, result.generation, result.source_generation) == (RaiseStatus.RAISED, 1, 1)
    again = await store.raise_after_copy(VS, "r.git", "gitaly-2", 1, source="gitaly-1")
    assert (again.status, again.generation) == (RaiseStatus.UNCHANGED, 1)
    assert again.holds
    lower = await store.raise_after_copy(VS, "r.git", "gitaly-2", 2, source="gitaly-3")
    assert (lower.status, lower.source_generation) == (RaiseStatus.SOURCE_BEHIND, 1)
    assert (await store.require(VS, "r.git")).replica_generation("gitaly-2") == 1, "never lowered"


async def test_a_dropped_source_does_not_raise(store: RepositoryStore) -> None:
    await _repository(store, "d.git")
    await store.set_replica_generation(VS, "d.git", "gitaly-3", 2)
    assert (await store.set_primary(VS, "d.git", "gitaly-3")).changed
    with pytest.raises(PrimaryMoved):
        await store.record_mutation(
            VS, "d.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES,
            primary="gitaly-1", check=PrimaryCheck.REPAIR,
        )
    result = await store.raise_after_copy(VS, "d.git", "gitaly-2", 2, source="gitaly-1")
    assert (result.status, result.source_generation) == (RaiseStatus.SOURCE_BEHIND, -1)
    assert not result.holds
    assert (await store.require(VS, "d.git")).replica_generation("gitaly-2") == -1


async def test_a_former_primary_with_a_write_in_flight_does_not_raise(
    store: RepositoryStore, client: aioredis.Redis
) -> None:
    await _repository(store, "f.git")
    intents = IntentStore(client)
    intent = await intents.record(
        VS, "f.git", router_id="router-a", node="gitaly-1", replicas=NAMES, change=ChangeType.UPDATE
    )
    other = await intents.record(
        VS, "other.git", router_id="router-a", node="gitaly-3", replicas=NAMES, change=ChangeType.UPDATE
    )
    # While gitaly-1 is the primary, its writes in flight are its own: raise.
    primary = await store.raise_after_copy(VS, "f.git", "gitaly-2", 1, source="gitaly-1")
    assert primary.status is RaiseStatus.RAISED
    # After a move, a write in flight on gitaly-1 is about to be refused.
    await store.set_replica_generation(VS, "f.git", "gitaly-3", 2)
    assert (await store.set_primary(VS, "f.git", "gitaly-3")).changed
    moved = await store.raise_after_copy(VS, "f.git", "gitaly-2", 2, source="gitaly-1")
    assert moved.status is RaiseStatus.SOURCE_IN_FLIGHT
    # gitaly-3's intent is on another repository: it does not count here.
    assert (await store.set_primary(VS, "f.git", "gitaly-1")).changed
    unrelated = await store.raise_after_copy(VS, "f.git", "gitaly-2", 2, source="gitaly-3")
    assert unrelated.status is RaiseStatus.RAISED
    assert await intents.clear(intent) and await intents.clear(other)


async def test_no_raise_into_the_primary_or_across_a_re_creation(store: RepositoryStore) -> None:
    await _repository(store, "p.git")
    assert (await store.set_primary(VS, "p.git", "gitaly-2")).changed
    into_primary = await store.raise_after_copy(VS, "p.git", "gitaly-2", 2, source="gitaly-1")
    assert (into_primary.status, into_primary.generation) == (RaiseStatus.TARGET_PRIMARY, -1)

    await _repository(store, "again.git", generation=0)
    planned = await store.require(VS, "again.git")
    assert await store.remove_repository(VS, "again.git")
    await store.record_mutation(
        VS, "again.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NAMES,
        created_at=planned.created_at + 1,
    )
    recreated = await store.raise_after_copy(
        VS, "again.git", "gitaly-2", 0, source="gitaly-1", created_at=planned.created_at
    )
    assert recreated.status is RaiseStatus.RECREATED
    same_life = await store.raise_after_copy(
        VS, "again.git", "gitaly-2", 0, source="gitaly-1", created_at=planned.created_at + 1
    )
    assert same_life.status is RaiseStatus.RAISED

    gone = await store.raise_after_copy(VS, "never.git", "gitaly-2", 0, source="gitaly-1")
    assert gone.status is RaiseStatus.UNTRACKED
