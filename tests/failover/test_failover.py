"""Failover with real processes: `praefect serve` routers, `praefect node serve` nodes, Redis."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import defaultdict

import grpc
import pytest
from grpc import aio

from tests.support.failover_cluster import (
    VS,
    FailoverCluster,
    commit_file,
    create_repository,
    eventually,
    exists,
)
from tests.support.gitenv import git
from tests.support.processes import PRAEFECT
from tests.support.router import clean_env

PATH = "group/project.git"
CLIENTS = 4


async def _replicated_everywhere(cluster: FailoverCluster) -> bool:
    metadata = await cluster.store.get(VS, PATH)
    return metadata is not None and len(metadata.up_to_date) == len(cluster.nodes)


def _reachable(cluster: FailoverCluster, node: str, commit: str, ref: str) -> bool:
    """``commit`` exists on ``node`` and ``ref`` contains it."""
    history = git(["--git-dir", str(cluster.repo(node, PATH)), "rev-list", ref], check=False)
    return cluster.has_commit(node, PATH, commit) and commit in history.split()


async def _cli(cluster: FailoverCluster, *args: str) -> tuple[int, str]:
    """Run `praefect ARGS --config <router a's settings>`; returns (status, stdout+stderr)."""
    process = await asyncio.create_subprocess_exec(
        *PRAEFECT, *args, "--config", str(cluster.root / "router-a.toml"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**clean_env(), "COLUMNS": "200"},  # rich would wrap table cells at 80
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_kill_9_of_the_primary_during_writes_loses_no_acknowledged_write(
    cluster: FailoverCluster,
) -> None:
    routers = [cluster.router_process("router-a"), cluster.router_process("router-b")]
    channels = [aio.insecure_channel(router.address) for router in routers]
    try:
        await create_repository(channels[0], PATH)
        await eventually(lambda: _replicated_everywhere(cluster), what="the repository on every node")
        acknowledged: dict[int, list[str]] = defaultdict(list)
        after_kill: dict[int, list[str]] = defaultdict(list)
        failures: list[grpc.StatusCode] = []
        killed = asyncio.Event()
        stop = asyncio.Event()

        async def client(number: int) -> None:
            channel = channels[number % len(channels)]
            count = 0
            while not stop.is_set():
                count += 1
                try:
                    commit = await commit_file(channel, PATH, f"client-{number}", f"c{number}-{count}.txt")
                except aio.AioRpcError as error:
                    failures.append(error.code())
                    # a client's pause before retrying; not synchronisation
                    await asyncio.sleep(0.05)
                    continue
                acknowledged[number].append(commit)
                if killed.is_set():
                    after_kill[number].append(commit)

        writers = [asyncio.create_task(client(number)) for number in range(CLIENTS)]
        try:
            await eventually(
                lambda: all(len(acknowledged[n]) >= 3 for n in range(CLIENTS)),
                within=60,
                what="three acknowledged writes per client",
            )
            old_primary = await cluster.primary_of(PATH)
            _kill9(cluster, old_primary)
            killed.set()
            await eventually(
                lambda: all(len(after_kill[n]) >= 2 for n in range(CLIENTS)),
                within=60,
                what="writes to succeed again after the kill",
            )
        finally:
            stop.set()
            await asyncio.gather(*writers)
        new_primary = await cluster.primary_of(PATH)
        assert new_primary != old_primary
        lost = [
            commit
            for number in range(CLIENTS)
            for commit in acknowledged[number]
            if not _reachable(cluster, new_primary, commit, f"refs/heads/client-{number}")
        ]
        total = sum(len(commits) for commits in acknowledged.values())
        assert lost == [], f"{len(lost)} of {total} acknowledged writes are not on {new_primary}"
        assert set(failures) <= {
            grpc.StatusCode.ABORTED,  # the primary moved before the write was acknowledged
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.INTERNAL,
        }, failures
    finally:
        for channel in channels:
            await channel.close()


def _kill9(cluster: FailoverCluster, name: str) -> None:
    process = cluster.nodes[name].process
    assert process is not None
    process.kill9()


def _signal_group(cluster: FailoverCluster, name: str, signum: int) -> None:
    process = cluster.nodes[name].process
    assert process is not None
    os.killpg(process.pid, signum)  # the node runs in a session of its own


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_without_a_replica_holding_every_acknowledged_write_the_repository_is_read_only(
    cluster: FailoverCluster,
) -> None:
    router = cluster.router_process("router-a", health_check_timeout=0.5)
    async with aio.insecure_channel(router.address) as channel:
        await create_repository(channel, PATH)
        kept = await commit_file(channel, PATH, "main", "kept.txt")
        await eventually(lambda: _replicated_everywhere(cluster), what="the first commit everywhere")
        # The replicas freeze: the routers take them out, and the next write is
        # acknowledged with the primary alone (there is no healthy replica to wait for).
        for name in ("gitaly-2", "gitaly-3"):
            _signal_group(cluster, name, signal.SIGSTOP)
        try:
            await eventually(
                lambda: _down(cluster, "gitaly-2", "gitaly-3"), what="the frozen replicas to be down"
            )
            only_on_primary = await commit_file(channel, PATH, "main", "only-on-primary.txt")
            _kill9(cluster, "gitaly-1")
        finally:
            for name in ("gitaly-2", "gitaly-3"):
                _signal_group(cluster, name, signal.SIGCONT)

        async def primary_down_replicas_up() -> bool:
            return await _down(cluster, "gitaly-1") and await _up(cluster, "gitaly-2", "gitaly-3")

        await eventually(primary_down_replicas_up, what="gitaly-1 down and the replicas back")
        with pytest.raises(aio.AioRpcError) as refused:
            await commit_file(channel, PATH, "main", "refused.txt")
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert (
            f"repository {PATH!r} is read-only: no up-to-date replica is healthy; see `praefect dataloss`"
            in (refused.value.details() or "")
        )
        assert await exists(channel, PATH), "reads still work from a healthy replica"
        assert (await cluster.primary_of(PATH)) == "gitaly-1", "nobody was elected"

        status, listing = await _cli(cluster, "dataloss")
        assert status == 0 and PATH in listing, listing
        status, output = await _cli(
            cluster, "accept-dataloss", "--relative-path", PATH, "--authoritative-storage", "gitaly-2"
        )
        assert status == 0, output
        assert "gitaly-2 is now authoritative" in output and "Accepted the loss of 1 change" in output

        async def writable() -> str | None:
            try:
                return await commit_file(channel, PATH, "main", "after.txt")
            except aio.AioRpcError:
                return None

        after = await eventually(writable, what="writes to succeed on gitaly-2")
        assert (await cluster.primary_of(PATH)) == "gitaly-2"
        assert _reachable(cluster, "gitaly-2", kept, "refs/heads/main")
        assert _reachable(cluster, "gitaly-2", after, "refs/heads/main")
        assert not cluster.has_commit("gitaly-2", PATH, only_on_primary), "accepted as lost"
        status, shown = await _cli(cluster, "metadata", "--relative-path", PATH)
        assert status == 0 and "Primary: gitaly-2" in shown and "gitaly-1" in shown, shown


async def _view(cluster: FailoverCluster) -> dict[str, bool]:
    """The routers' shared health view."""
    return {name: state.healthy for name, state in (await cluster.votes.view(VS)).items()}


async def _down(cluster: FailoverCluster, *names: str) -> bool:
    view = await _view(cluster)
    return all(view.get(name) is False for name in names)


async def _up(cluster: FailoverCluster, *names: str) -> bool:
    view = await _view(cluster)
    return all(view.get(name, True) for name in names)
