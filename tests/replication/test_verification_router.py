"""Verification end to end: a router, its embedded Redis, real nodes, `praefect verify`.

A replica whose directory is deleted behind the router's back gets reads
(and NOT_FOUND) until verification finds it; then its generation drops,
reads stop going to it, and the replay worker repairs it.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from praefect.core.server import RouterServer
from praefect.plugins.replication.runtime import ReplicationRuntime
from praefect.plugins.replication.verification_store import (
    VerdictStatus,
    VerificationClaim,
    VerificationStore,
)
from praefect.protos.gitaly import (
    ref_pb2,
    ref_pb2_grpc,
    repository_pb2,
    repository_pb2_grpc,
    shared_pb2,
)
from praefect.settings import Config, to_toml
from tests.support.gitenv import git, make_work_repo
from tests.support.grpc_client import auth
from tests.support.replication_cluster import (
    NODE_TOKEN,
    ReplicaNode,
    eventually,
    refs_of,
    runtime_of_router,
    short_tmp_dir,
    start_nodes,
)
from tests.support.router import ROUTER_TOKEN, clean_env, router_settings_mapping, running_router

NAMES = ["gitaly-1", "gitaly-2", "gitaly-3"]
VS = "praefect"
PATH = "g/verified.git"
PRAEFECT = [sys.executable, "-m", "praefect.core.cli"]
#: reads after which a replica that serves a third of them has surely served one
READS = 60


@dataclass
class Cluster:
    nodes: dict[str, ReplicaNode]
    router: RouterServer
    channel: aio.Channel
    config: Path

    @property
    def runtime(self) -> ReplicationRuntime:
        return runtime_of_router(self.router)

    def repository(self) -> shared_pb2.Repository:
        return shared_pb2.Repository(storage_name=VS, relative_path=PATH)

    async def praefect(self, *args: str) -> tuple[int, str, str]:
        env = clean_env()
        env["COLUMNS"] = "250"
        process = await asyncio.create_subprocess_exec(
            *PRAEFECT, *args, "--config", str(self.config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )
        async with asyncio.timeout(30):
            out, err = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()


@pytest.fixture
def redis_data_dir() -> Iterator[Path]:
    with short_tmp_dir() as path:
        yield path


@pytest.fixture
async def cluster(tmp_path: Path, redis_data_dir: Path) -> AsyncIterator[Cluster]:
    nodes = {node.name: node for node in await start_nodes(tmp_path / "nodes", NAMES)}
    mapping: dict[str, Any] = router_settings_mapping(
        {name: node.address for name, node in nodes.items()},
        node_tokens=dict.fromkeys(NAMES, NODE_TOKEN),
        redis={"data_dir": str(redis_data_dir)},
        plugins={"blocked": ["praefect.plugins.failover"]},
        # A pass every 5 s; nothing is due again within the test unless marked.
        replication={"verification_interval": 3600.0},
    )
    config = tmp_path / "praefect.toml"
    config.write_text(to_toml(mapping))
    try:
        async with running_router(Config.from_mapping(mapping)) as router:
            assert router.bound_addr
            async with aio.insecure_channel(router.bound_addr) as channel:
                yield Cluster(nodes, router, channel, config)
    finally:
        for node in nodes.values():
            node.stop()


async def _reads(cluster: Cluster) -> list[grpc.StatusCode]:
    """The status of READS reads of the repository, spread over its up-to-date replicas."""
    stub = ref_pb2_grpc.RefServiceStub(cluster.channel)
    codes = []
    for _ in range(READS):
        try:
            response = await stub.RefExists(
                ref_pb2.RefExistsRequest(repository=cluster.repository(), ref=b"refs/heads/main"),
                metadata=auth(ROUTER_TOKEN),
            )
            assert response.value
            codes.append(grpc.StatusCode.OK)
        except aio.AioRpcError as error:
            codes.append(error.code())
    return codes


async def test_a_replica_deleted_on_disk_is_found_missing_kept_from_reads_and_repaired(
    cluster: Cluster, tmp_path: Path
) -> None:
    runtime = cluster.runtime
    assert runtime.verifier is not None and runtime.workers is not None
    store = runtime.store
    await _create(cluster, tmp_path)

    async def everywhere() -> bool:
        metadata = await store.get(VS, PATH)
        return metadata is not None and metadata.up_to_date == tuple(NAMES)

    await eventually(everywhere, what="the repository on every node")
    expected_refs = refs_of(cluster.nodes["gitaly-1"].repo(PATH))

    # The router puts the new replicas in the due sets, first due in an hour.
    verifications = VerificationStore(store)

    async def all_scheduled() -> bool:
        entries = await verifications.entries(VS, PATH, NAMES)
        return all(entry.verified_at is not None for entry in entries.values())

    await eventually(all_scheduled, within=20, what="the router to add the new replicas to the due sets")

    # gitaly-2's disk loses the repository; its repair waits until we let it run.
    worker = runtime.workers.worker(VS, "gitaly-2")
    await worker.stop()
    shutil.rmtree(cluster.nodes["gitaly-2"].repo(PATH))
    before = await _reads(cluster)
    assert grpc.StatusCode.NOT_FOUND in before, "unverified, the empty replica still gets reads"

    code, out, err = await cluster.praefect("verify", "--node", "gitaly-2")
    assert code == 0, err
    assert out.splitlines()[0] == "Marked 1 replica on gitaly-2 in praefect for verification."

    def dropped() -> bool:
        cached = runtime.cache.get(VS, PATH)
        return cached is not None and cached.replica_generation("gitaly-2") == -1

    # The router's next pass (within 5 s), long before the interval (1 h).
    await eventually(_sync(dropped), within=15, what="verification to find gitaly-2's replica missing")
    metadata = await store.require(VS, PATH)
    assert metadata.up_to_date == ("gitaly-1", "gitaly-3")
    after = await _reads(cluster)
    assert after == [grpc.StatusCode.OK] * READS, "no read goes to the missing replica"

    await worker.start()

    async def repaired() -> bool:
        return (await store.require(VS, PATH)).up_to_date == tuple(NAMES)

    await eventually(repaired, what="gitaly-2 to be repaired from an up-to-date replica")
    assert refs_of(cluster.nodes["gitaly-2"].repo(PATH)) == expected_refs
    assert await _reads(cluster) == [grpc.StatusCode.OK] * READS
    assert runtime.verifier.stats.checks["missing"] == 1


def _sync(check: Any) -> Any:
    async def wrapped() -> bool:
        return bool(check())

    return wrapped


async def _create(cluster: Cluster, tmp_path: Path) -> str:
    """Create the repository through the router (two commits); returns the older commit."""
    work = make_work_repo(tmp_path / "work", 2)
    git(["bundle", "create", str(tmp_path / "repo.bundle"), "--all"], cwd=work)
    data = (tmp_path / "repo.bundle").read_bytes()
    stub = repository_pb2_grpc.RepositoryServiceStub(cluster.channel)

    async def requests() -> AsyncIterator[repository_pb2.CreateRepositoryFromBundleRequest]:
        yield repository_pb2.CreateRepositoryFromBundleRequest(repository=cluster.repository())
        for start in range(0, len(data), 16 * 1024):
            yield repository_pb2.CreateRepositoryFromBundleRequest(data=data[start : start + 16 * 1024])

    await stub.CreateRepositoryFromBundle(requests(), metadata=auth(ROUTER_TOKEN))
    return git(["rev-parse", "HEAD~1"], cwd=work).strip()


async def test_a_write_to_a_primary_whose_replica_is_missing_is_refused_before_it_is_sent(
    cluster: Cluster, tmp_path: Path
) -> None:
    runtime = cluster.runtime
    store = runtime.store
    await _create(cluster, tmp_path)

    async def everywhere() -> bool:
        metadata = await store.get(VS, PATH)
        return metadata is not None and metadata.up_to_date == tuple(NAMES)

    await eventually(everywhere, what="the repository on every node")
    # What verification leaves when the primary's replica is missing and no
    # replica could take over yet (the verifier is stopped so it does not).
    assert runtime.verifier is not None
    await runtime.verifier.stop()
    verifications = VerificationStore(store)
    await verifications.mark(VS, [("gitaly-1", PATH)])
    claim = await verifications.claim(VS, PATH, "gitaly-1", lease=30, interval=3600)
    assert isinstance(claim, VerificationClaim), claim
    shutil.rmtree(cluster.nodes["gitaly-1"].repo(PATH))
    verdict = await verifications.record(claim, exists=False)
    assert verdict.status is VerdictStatus.MISSING_PRIMARY

    stub = repository_pb2_grpc.RepositoryServiceStub(cluster.channel)
    with pytest.raises(aio.AioRpcError) as refused:
        await stub.CreateRepository(
            repository_pb2.CreateRepositoryRequest(repository=cluster.repository()),
            metadata=auth(ROUTER_TOKEN),
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "lost its copy" in (refused.value.details() or "")
    assert not cluster.nodes["gitaly-1"].repo(PATH).exists(), "nothing was sent to the node"
    metadata = await store.require(VS, PATH)
    assert (metadata.generation, metadata.replica_generation("gitaly-1")) == (0, -1)
    assert runtime.intents is not None and await runtime.intents.list(VS) == []


async def test_a_primary_whose_replica_is_missing_hands_over_and_is_repaired(
    cluster: Cluster, tmp_path: Path
) -> None:
    runtime = cluster.runtime
    store = runtime.store
    older = await _create(cluster, tmp_path)

    async def everywhere() -> bool:
        metadata = await store.get(VS, PATH)
        return metadata is not None and metadata.up_to_date == tuple(NAMES)

    await eventually(everywhere, what="the repository on every node")
    assert (await store.require(VS, PATH)).primary == "gitaly-1"
    shutil.rmtree(cluster.nodes["gitaly-1"].repo(PATH))
    code, _, err = await cluster.praefect("verify", "--relative-path", PATH)
    assert code == 0, err

    async def handed_over() -> bool:
        metadata = await store.require(VS, PATH)
        return metadata.primary != "gitaly-1"

    await eventually(handed_over, within=15, what="the primary role to leave gitaly-1")

    # Writes go to the new primary; the former one is repaired from it.
    stub = repository_pb2_grpc.RepositoryServiceStub(cluster.channel)
    await stub.WriteRef(
        repository_pb2.WriteRefRequest(
            repository=cluster.repository(), ref=b"refs/heads/after", revision=older.encode()
        ),
        metadata=auth(ROUTER_TOKEN),
    )

    async def converged() -> bool:
        metadata = await store.require(VS, PATH)
        return metadata.generation == 1 and metadata.up_to_date == tuple(NAMES)

    await eventually(converged, what="every replica, the former primary too, at the new write")
    new_primary = (await store.require(VS, PATH)).primary
    for name in NAMES:
        assert refs_of(cluster.nodes[name].repo(PATH)) == refs_of(cluster.nodes[new_primary].repo(PATH))
    assert "refs/heads/after" in refs_of(cluster.nodes["gitaly-1"].repo(PATH))
    assert runtime.verifier is not None and runtime.verifier.stats.primaries_replaced == 1
