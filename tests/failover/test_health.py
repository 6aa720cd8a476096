"""Health checks of real nodes by real routers sharing a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from praefect.core import hookimpl
from praefect.core.routing_types import NodeRef
from praefect.core.server import RouterServer
from praefect.plugins.failover.votes import HealthVotes
from tests.support.failover_cluster import (
    VS,
    FailoverCluster,
    broken_storage,
    eventually,
    runtime_of,
    sees_healthy,
)


class HealthRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    @hookimpl  # type: ignore[untyped-decorator, unused-ignore]
    def on_node_down(self, node: NodeRef, reason: str) -> None:
        self.events.append(("down", node.name, reason))

    @hookimpl  # type: ignore[untyped-decorator, unused-ignore]
    def on_node_up(self, node: NodeRef) -> None:
        self.events.append(("up", node.name, ""))


async def _rounds(*servers: RouterServer, count: int = 3) -> None:
    """Let every router complete ``count`` more vote rounds."""
    async with asyncio.timeout(15):
        await asyncio.gather(*(runtime_of(s).checker.wait_for_rounds(count) for s in servers))


async def _voted_on_every_node(*servers: RouterServer) -> None:
    """Until every router has checked every node and published a vote on each.

    A router votes only on the nodes it has checked: until then another
    router's verdict on a node would be the only opinion and decide alone.
    """
    await eventually(
        lambda: all(len(runtime_of(s).checker.local_view) == 3 for s in servers),
        what="every router to check every node once",
    )
    # a round already running may have read the checks before the last one ended
    await _rounds(*servers, count=2)


async def test_a_node_whose_disk_cannot_be_written_is_taken_out_and_back(cluster: FailoverCluster) -> None:
    recorder = HealthRecorder()
    async with cluster.router(("recorder", recorder)) as router:
        await _rounds(router, count=1)
        assert sees_healthy(router, "gitaly-3")
        with broken_storage(cluster.nodes["gitaly-3"]):
            await eventually(lambda: not sees_healthy(router, "gitaly-3"), what="gitaly-3 to be marked down")
            view = await cluster.votes.view(VS)
            assert not view["gitaly-3"].healthy, "the shared view records it"
            await _rounds(router)
            assert [(kind, name) for kind, name, _ in recorder.events] == [("down", "gitaly-3")]
            assert "not writeable" in recorder.events[0][2]
            assert sees_healthy(router, "gitaly-1") and sees_healthy(router, "gitaly-2")
        await eventually(lambda: sees_healthy(router, "gitaly-3"), what="gitaly-3 to be marked up again")
        await _rounds(router)
        router_id = runtime_of(router).checker.router_id
        assert [vote.router_id for vote in await cluster.votes.votes(VS)] == [router_id]
    assert [(kind, name) for kind, name, _ in recorder.events] == [("down", "gitaly-3"), ("up", "gitaly-3")]
    assert await cluster.votes.votes(VS) == [], "a router that stops withdraws its votes"


async def test_a_killed_node_is_down_for_every_router_and_announced_once(cluster: FailoverCluster) -> None:
    first, second = HealthRecorder(), HealthRecorder()
    async with (
        cluster.router(("recorder", first)) as one,
        cluster.router(("recorder", second)) as two,
    ):
        await _voted_on_every_node(one, two)
        cluster.nodes["gitaly-2"].stop()
        await eventually(
            lambda: not sees_healthy(one, "gitaly-2") and not sees_healthy(two, "gitaly-2"),
            what="both routers to mark gitaly-2 down",
        )
        await _rounds(one, two)
        events = first.events + second.events
        assert [(kind, name) for kind, name, _ in events] == [("down", "gitaly-2")]
        assert "2 of 2 router(s) report it down" in events[0][2]


@contextlib.asynccontextmanager
async def fake_routers(votes: HealthVotes, verdicts: dict[str, dict[str, bool]]) -> AsyncIterator[None]:
    """Routers that exist only as votes in Redis, re-voting within the window until closed."""

    stop = asyncio.Event()

    async def keep_voting() -> None:
        # Stopped by the event, not cancelled: a Redis command cancelled
        # half-way would leave its connection unusable for the next user.
        while not stop.is_set():
            for router_id, nodes in verdicts.items():
                await votes.vote(VS, router_id, nodes)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await stop.wait()

    task = asyncio.create_task(keep_voting())
    try:
        await votes.vote(VS, *next(iter(verdicts.items())))
        yield
    finally:
        stop.set()
        await task


async def test_routers_follow_the_majority_of_live_routers(cluster: FailoverCluster) -> None:
    async with cluster.router() as one, cluster.router() as two:
        await _voted_on_every_node(one, two)
        # Both real routers reach gitaly-3. One or two routers that cannot reach
        # it are no majority: gitaly-3 stays up everywhere.
        down = {"gitaly-3": False}
        async with fake_routers(cluster.votes, {"fake-1": down}):
            await _rounds(one, two)
            assert sees_healthy(one, "gitaly-3") and sees_healthy(two, "gitaly-3")
        async with fake_routers(cluster.votes, {"fake-1": down, "fake-2": down}):
            await _rounds(one, two)
            assert sees_healthy(one, "gitaly-3") and sees_healthy(two, "gitaly-3"), "a tie keeps a node up"
        # Three of five say down: both real routers take gitaly-3 out although
        # their own checks still pass.
        async with fake_routers(cluster.votes, {"fake-1": down, "fake-2": down, "fake-3": down}):
            await eventually(
                lambda: not sees_healthy(one, "gitaly-3") and not sees_healthy(two, "gitaly-3"),
                what="both routers to follow the majority",
            )
            assert runtime_of(one).checker.local_view[_node(one, "gitaly-3")].healthy
        # The fake routers stop voting: after the vote window only the real
        # routers count, and they see gitaly-3 healthy.
        await eventually(
            lambda: sees_healthy(one, "gitaly-3") and sees_healthy(two, "gitaly-3"),
            within=20,
            what="gitaly-3 to be up again once the fake votes expired",
        )


def _node(server: RouterServer, name: str) -> NodeRef:
    assert server.router is not None
    return server.router.cluster.virtual_storage(VS).node(name)
