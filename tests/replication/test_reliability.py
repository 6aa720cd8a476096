"""Replication survives dying routers, nodes and Redis: real processes, real Redis.

Every test runs three ``praefect node serve`` processes, an embedded Redis
the test owns, and one or two ``praefect serve`` processes sharing it, and
ends by checking that every replica's checksum equals its primary's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from praefect.plugins.replication.keys import VirtualStorageKeys
from praefect.plugins.replication.streams import queue_status
from tests.support.crash_window_plugin import MARKER, crash_window_env
from tests.support.replication_cluster import VS, eventually
from tests.support.replication_processes import (
    NAMES,
    ReplicatedCluster,
    consumers_pending,
    create_from_bundle,
    refs_on_disk,
    replicated_cluster,
    write_ref,
)
from tests.support.router import clean_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

KEYS = VirtualStorageKeys(VS)
#: events of a router that died are taken over after 2 s instead of 60 s
FAST_CLAIMS = {"claim_idle": 2.0}


async def _create(cluster: ReplicatedCluster, channel: aio.Channel, paths: list[str]) -> None:
    await asyncio.gather(*(create_from_bundle(channel, path, cluster.bundle) for path in paths))
    await cluster.wait_converged(paths)


async def _write_refs(
    cluster: ReplicatedCluster, channel: aio.Channel, paths: list[str], count: int, prefix: str
) -> dict[str, dict[str, str]]:
    """``count`` WriteRefs round-robin over ``paths``; returns path -> {ref: commit} acknowledged."""
    written: dict[str, dict[str, str]] = {path: {} for path in paths}
    commits = cluster.bundle.commits
    for i in range(count):
        path, ref, commit = paths[i % len(paths)], f"refs/heads/{prefix}-{i}", commits[i % len(commits)]
        await write_ref(channel, path, ref, commit)
        written[path][ref] = commit
    return written


def _assert_everywhere(cluster: ReplicatedCluster, written: dict[str, dict[str, str]]) -> None:
    """Every acknowledged ref is on every node, pointing where the client wrote it."""
    missing = []
    for name in NAMES:
        for path, refs in written.items():
            on_disk = refs_on_disk(cluster.nodes[name], path)
            missing += [
                f"{name}:{path}:{ref}" for ref, commit in refs.items() if on_disk.get(ref) != commit
            ]
    assert not missing, f"acknowledged writes missing: {missing}"


async def _pending(cluster: ReplicatedCluster, target: str) -> dict[str, int]:
    info: Any = await cluster.client.xinfo_consumers(KEYS.events(target), target)
    return consumers_pending(info)


async def _nothing_left(cluster: ReplicatedCluster) -> None:
    """Every event acknowledged, none dead-lettered.

    A worker raises the target's generation before it acknowledges the
    event, so a converged cluster may still hold the last one for a moment.
    """
    statuses = {}

    async def settled() -> bool:
        for name in NAMES:
            statuses[name] = await queue_status(cluster.client, VS, name)
        return all((s.pending, s.dead_lettered) == (0, 0) for s in statuses.values())

    try:
        await eventually(settled, within=10, what="every event acknowledged and none dead-lettered")
    except AssertionError as error:
        raise AssertionError(f"{error}; queues: {statuses}") from None


async def test_a_killed_router_leaves_events_that_another_router_finishes(tmp_path: Path) -> None:
    async with replicated_cluster(tmp_path) as cluster:
        router_a = cluster.router_process("router-a", replication=FAST_CLAIMS)
        paths = [f"g/kill-{i}.git" for i in range(5)]
        async with cluster.channel(router_a) as channel:
            await _create(cluster, channel, paths)
            cluster.kill_node("gitaly-3")
            written = await _write_refs(cluster, channel, paths, 20, "a")
        consumer_a = f"-{router_a.pid}-"

        async def router_a_holds_events() -> bool:
            pending = await _pending(cluster, "gitaly-3")
            return any(consumer_a in name and count > 0 for name, count in pending.items())

        await eventually(router_a_holds_events, what="router A's worker to hold gitaly-3's events")
        router_a.kill9()
        cluster.restart_node("gitaly-3")
        router_b = cluster.router_process("router-b", replication=FAST_CLAIMS)

        await cluster.wait_converged(paths, within=40)
        _assert_everywhere(cluster, written)
        # Converged data may come before the last of A's events is claimed:
        # B coalesces, and acknowledges the older events on its next claim.
        async def router_a_holds_nothing() -> bool:
            pending = await _pending(cluster, "gitaly-3")
            return not any(count for name, count in pending.items() if consumer_a in name)

        await eventually(router_a_holds_nothing, within=20, what="router B to take every event of router A")
        assert "claimed" in router_b.log(), "router B took over router A's events"
        await _nothing_left(cluster)


async def test_a_node_down_during_writes_converges_after_it_returns(tmp_path: Path) -> None:
    async with replicated_cluster(tmp_path) as cluster:
        # Two attempts only: without holding events for a node that is down,
        # they would be dead-lettered long before the node returns.
        router = cluster.router_process("router", replication={"max_attempts": 2})
        paths = [f"g/down-{i}.git" for i in range(5)]
        async with cluster.channel(router) as channel:
            await _create(cluster, channel, paths)
            cluster.kill_node("gitaly-2")
            written = await _write_refs(cluster, channel, paths, 20, "d")
            states = await cluster.states(paths)
            assert all("gitaly-2" not in state.up_to_date for state in states.values() if state)
            # The outage outlasts the retry budget (1 s backoff, 2 attempts):
            # a deliberate duration, not synchronisation.
            await asyncio.sleep(4)
            assert (await queue_status(cluster.client, VS, "gitaly-2")).dead_lettered == 0
            cluster.restart_node("gitaly-2")
            await cluster.wait_converged(paths, within=30)
            _assert_everywhere(cluster, written)
            await _nothing_left(cluster)


async def test_redis_killed_and_restarted_loses_no_acknowledged_event(tmp_path: Path) -> None:
    async with replicated_cluster(tmp_path) as cluster:
        router = cluster.router_process("router")
        paths = [f"g/redis-{i}.git" for i in range(5)]
        async with cluster.channel(router) as channel:
            await _create(cluster, channel, paths)
            # Replication of the last writes is still under way when Redis dies.
            cluster.kill_node("gitaly-3")
            written = await _write_refs(cluster, channel, paths, 20, "r")
            before = await cluster.states(paths)
            os.kill(cluster.redis.pid, signal.SIGKILL)
            await cluster.restart_redis()
            cluster.restart_node("gitaly-3")

            after = await cluster.states(paths)
            for path in paths:
                old, new = before[path], after[path]
                assert old is not None and new is not None, path
                assert new.generation >= old.generation == 4, f"{path}: {old} -> {new}"

            # The router works on the restarted Redis (its first calls may
            # still find the old connections broken).
            async def writes_again() -> bool:
                try:
                    await write_ref(channel, paths[0], "refs/heads/after-restart", cluster.bundle.commits[0])
                except aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                    return False
                return True

            await eventually(writes_again, within=20, what="a write to succeed after the restart")
            written[paths[0]]["refs/heads/after-restart"] = cluster.bundle.commits[0]
            await cluster.wait_converged(paths, within=40)
            _assert_everywhere(cluster, written)
            await _nothing_left(cluster)


@pytest.mark.timeout(150)
async def test_a_thousand_writes_from_eight_clients_reach_every_replica(tmp_path: Path) -> None:
    async with replicated_cluster(tmp_path) as cluster:
        # Replication alone (the cluster's routers block failover): each OK
        # comes at once, and the test is about replication keeping up with
        # concurrent writers. Holding each OK until a replica has the write
        # is the failover plugin's (one replication per write, see
        # docs/performance.md).
        router = cluster.router_process("router")
        paths = [f"g/load-{i:02d}.git" for i in range(50)]
        commits = cluster.bundle.commits
        written: dict[str, dict[str, str]] = {path: {} for path in paths}
        started = time.monotonic()

        async def client(number: int) -> None:
            async with cluster.channel(router) as channel:
                for i in range(number, 1000, 8):
                    path, ref = paths[i % 50], f"refs/heads/c{number}-{i}"
                    await write_ref(channel, path, ref, commits[i % len(commits)])
                    written[path][ref] = commits[i % len(commits)]

        async with cluster.channel(router) as channel:
            for start in range(0, 50, 10):
                await asyncio.gather(
                    *(create_from_bundle(channel, path, cluster.bundle) for path in paths[start : start + 10])
                )
        await asyncio.gather(*(client(number) for number in range(8)))
        elapsed = time.monotonic() - started
        assert sum(len(refs) for refs in written.values()) == 1000
        await cluster.wait_converged(paths, within=45)
        _assert_everywhere(cluster, written)
        states = await cluster.states(paths)
        wrong = {path: state and state.generation for path, state in states.items() if not state or state.generation != 20}
        assert not wrong, f"every write bumps its repository's generation once (20 each); these differ: {wrong}"
        print(f"1,000 writes from 8 clients in {elapsed:.1f} s")


async def test_a_write_whose_router_died_before_its_event_still_reaches_every_replica(
    tmp_path: Path,
) -> None:
    async with replicated_cluster(tmp_path) as cluster:
        signal_file = cluster.root / "crash-window.signal"
        env = crash_window_env(cluster.root, signal_file, clean_env())
        doomed = cluster.router_process("router-doomed", env=env)
        live = cluster.router_process("router-live")
        path = f"g/{MARKER}.git"
        async with cluster.channel(doomed) as channel:
            await _create(cluster, channel, [path])
            generation = (await cluster.store.require(VS, path)).generation
            write = asyncio.ensure_future(
                write_ref(channel, path, "refs/heads/in-the-window", cluster.bundle.commits[0])
            )
            async def in_the_window() -> bool:
                return signal_file.exists()

            await eventually(in_the_window, what="the write to reach the crash window")
            assert "refs/heads/in-the-window" in refs_on_disk(cluster.nodes["gitaly-1"], path)
            intents = await cluster.client.hlen(KEYS.intents)
            assert intents == 1, "the intent is all Redis knows of the write"
            doomed.kill9()
            with pytest.raises(aio.AioRpcError):
                await write

        async def resolved() -> bool:
            state = await cluster.store.require(VS, path)
            return bool(state.generation > generation and not await cluster.client.hlen(KEYS.intents))

        # The live router sees the dead one's liveness key expire (15 s), then resolves.
        await eventually(resolved, within=40, what="the live router to resolve the intent")
        await cluster.wait_converged([path], within=20)
        _assert_everywhere(cluster, {path: {"refs/heads/in-the-window": cluster.bundle.commits[0]}})
        assert "resolved the intent" in live.log()
