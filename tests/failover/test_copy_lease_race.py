"""A replica being copied into is not made primary until the copy ends.

The race this closes: a worker runs ReplicateRepository into replica R (a
mirror fetch that overwrites and prunes R's refs); meanwhile R becomes
eligible, the primary goes down, R is elected and takes an acknowledged
write, and then the copy ends and undoes that write.

Real node processes (two), a real Redis, an in-process router with its own
replication workers and failover. gitaly-2 is reached through a proxy
(:mod:`tests.support.replication_hold`) that holds the router's
ReplicateRepository into it, so the copy stays open as long as the test
wants. gitaly-1, the primary, is declared down by a broken storage probe
while its process still serves the copy's fetch, as a node with a failing
disk (or cut off from the routers only) would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc import aio

from praefect.core.server import RouterServer
from tests.support.failover_cluster import (
    VS,
    FailoverCluster,
    broken_storage,
    commit_file,
    create_repository,
    eventually,
    failover_cluster,
)
from tests.support.gitenv import git
from tests.support.replication_hold import HoldingProxy, holding_proxy

PATH = "race/project.git"
NAMES = ("gitaly-1", "gitaly-2")
REPLICATE = "/gitaly.RepositoryService/ReplicateRepository"
COMMIT_FILES = "/gitaly.OperationService/UserCommitFiles"
FAILOVER_LOG = "praefect.failover"
WORKER_LOG = "praefect.replication.worker"
#: writes wait for replicas up to this long: the test decides when the copy ends
ACK_TIMEOUT = 90


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[FailoverCluster, HoldingProxy]]:
    async with (
        failover_cluster(tmp_path, names=NAMES) as cluster,
        holding_proxy(cluster.nodes["gitaly-2"].address) as proxy,
    ):
        cluster.addresses["gitaly-2"] = proxy.address
        yield cluster, proxy


async def _everywhere(cluster: FailoverCluster) -> bool:
    metadata = await cluster.store.get(VS, PATH)
    return metadata is not None and len(metadata.up_to_date) == len(NAMES)


def _healthy(router: RouterServer) -> set[str]:
    assert router.router is not None
    return {node.name for node in router.router.cluster.healthy_nodes(VS)}


def _on_main(cluster: FailoverCluster, node: str, commit: str) -> bool:
    history = git(["--git-dir", str(cluster.repo(node, PATH)), "rev-list", "main"], check=False)
    return commit in history.split()


def _waiting_for_the_copy(caplog: pytest.LogCaptureFixture) -> bool:
    """The router logged that a write waits for the copy into gitaly-2 before its election."""
    return any(
        record.name == FAILOVER_LOG
        and "gitaly-2 cannot take over from gitaly-1 yet, a copy into it is running; "
        f"a write ({COMMIT_FILES}) waits" in record.getMessage()
        for record in caplog.records
    )


async def _outcome(write: asyncio.Task[str]) -> str | grpc.StatusCode:
    try:
        return await write
    except aio.AioRpcError as error:
        return error.code()


@dataclass
class Race:
    """The moment of the race: gitaly-1 down for the router, a copy into gitaly-2 held."""

    channel: aio.Channel
    #: the write whose copy is held (it waits for gitaly-2 to have it)
    copied: asyncio.Task[str]
    #: the outcome of ``copied``, once gitaly-1 is back
    copied_outcome: str | grpc.StatusCode | None = None


@contextlib.asynccontextmanager
async def _gitaly_1_down_with_a_copy_into_gitaly_2_held(
    cluster: FailoverCluster, proxy: HoldingProxy
) -> AsyncIterator[Race]:
    """Up to the race, in a router of its own; afterwards (gitaly-1 is back)
    the held write ends and both nodes reach the final generation."""
    async with cluster.router(ack_timeout=ACK_TIMEOUT) as router:
        assert router.bound_addr
        async with aio.insecure_channel(router.bound_addr) as channel:
            await create_repository(channel, PATH)
            await commit_file(channel, PATH, "main", "first.txt")
            await eventually(lambda: _everywhere(cluster), what="the repository on both nodes")
            assert await cluster.primary_of(PATH) == "gitaly-1"

            # The next write is recorded at generation g+1 on gitaly-1; its copy into
            # gitaly-2 is held. Its client waits for gitaly-2 (ack_replicas = 1), so
            # it is not acknowledged yet and gitaly-2, at g, may be elected.
            proxy.hold_next(REPLICATE)
            copied = asyncio.create_task(commit_file(channel, PATH, "main", "copied.txt", deadline=120))
            await eventually(proxy.held.is_set, within=30, what="the copy into gitaly-2 to reach the proxy")
            assert not copied.done()
            race = Race(channel, copied)
            with broken_storage(cluster.nodes["gitaly-1"]):
                await eventually(
                    lambda: _healthy(router) == {"gitaly-2"}, within=30,
                    what="the router to see gitaly-1 down",
                )
                yield race
            race.copied_outcome = await _outcome(copied)
            await eventually(
                lambda: _everywhere(cluster), within=60,
                what="both nodes at the final generation once gitaly-1 is back",
            )


@pytest.mark.timeout(150)
async def test_a_replica_being_copied_into_takes_no_write_until_the_copy_ends(
    setup: tuple[FailoverCluster, HoldingProxy], caplog: pytest.LogCaptureFixture
) -> None:
    cluster, proxy = setup
    caplog.set_level(logging.INFO, logger=FAILOVER_LOG)
    caplog.set_level(logging.INFO, logger=WORKER_LOG)
    async with _gitaly_1_down_with_a_copy_into_gitaly_2_held(cluster, proxy) as race:
        write = asyncio.create_task(commit_file(race.channel, PATH, "main", "during.txt", deadline=120))
        # Before the fix the write went to gitaly-2 at once; now its
        # election waits for the copy.
        await eventually(
            lambda: write.done() or _waiting_for_the_copy(caplog), within=30,
            what="the write to be answered or to wait for the copy into gitaly-2",
        )
        early = proxy.named(COMMIT_FILES)
        proxy.release.set()
        during = await _outcome(write)

    assert isinstance(during, str), f"the write during the failover failed: {during}"
    metadata = await cluster.metadata(PATH)
    assert metadata.primary == "gitaly-2", metadata
    copied_outcome = race.copied_outcome
    acknowledged = [during] + ([copied_outcome] if isinstance(copied_outcome, str) else [])
    for node in NAMES:
        missing = [commit for commit in acknowledged if not _on_main(cluster, node, commit)]
        assert missing == [], f"acknowledged writes missing on {node}: {missing}"
    assert early == [], "no write reached gitaly-2 while the copy into it was held"
    (copy,) = [call for call in proxy.named(REPLICATE) if call.held]
    (taken,) = proxy.named(COMMIT_FILES)
    assert copy.ended is not None and taken.started > copy.ended, (
        "gitaly-2 took the write only after the copy into it ended"
    )
    overwritten = [
        record.getMessage() for record in caplog.records
        if record.name == WORKER_LOG and "may have been overwritten" in record.getMessage()
    ]
    assert overwritten == [], "the worker's after-the-fact check never fires"


@pytest.mark.timeout(150)
async def test_a_write_waiting_for_the_copy_ends_with_its_deadline_and_changes_nothing(
    setup: tuple[FailoverCluster, HoldingProxy], caplog: pytest.LogCaptureFixture
) -> None:
    cluster, proxy = setup
    caplog.set_level(logging.INFO, logger=FAILOVER_LOG)
    async with _gitaly_1_down_with_a_copy_into_gitaly_2_held(cluster, proxy) as race:
        with pytest.raises(aio.AioRpcError) as late:
            await commit_file(race.channel, PATH, "main", "too-late.txt", deadline=2)
        assert _waiting_for_the_copy(caplog), "it waited for the copy, not for anything else"
        assert await cluster.primary_of(PATH) == "gitaly-1", "nobody was elected"
        assert proxy.named(COMMIT_FILES) == [], "nothing reached gitaly-2"
        proxy.release.set()
        # Once the copy ended, gitaly-2 takes over and takes writes.
        after = await commit_file(race.channel, PATH, "main", "after.txt", deadline=60)
    assert late.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert await cluster.primary_of(PATH) == "gitaly-2"
    for node in NAMES:
        assert _on_main(cluster, node, after), f"the acknowledged write is on {node}"
