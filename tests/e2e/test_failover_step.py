"""The scenario's failover step when the router does not fail over by itself:
it asks `praefect failover`, as an operator would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from praefect.core.demo.clients import ClusterClients
from praefect.core.demo.cluster import PROJECT_PATH, VIRTUAL_STORAGE, DemoCluster
from praefect.core.demo.failover import fail_over
from praefect.core.demo.scenario import wait_for_convergence
from tests.support.replication_cluster import short_tmp_dir


@pytest.fixture
def workdir() -> Iterator[Path]:
    with short_tmp_dir("pre2e-") as path:
        yield path / "demo"


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_without_automatic_failover_the_step_runs_praefect_failover(workdir: Path) -> None:
    cluster = DemoCluster(workdir, settings_overrides={"failover": {"enabled": False}})
    assert cluster.settings.failover.enabled is False
    async with cluster, ClusterClients(cluster.settings, cluster.router_address, VIRTUAL_STORAGE) as clients:
        await clients.create_project(PROJECT_PATH, "Failover")
        await wait_for_convergence(clients, PROJECT_PATH, time_limit=30)
        await cluster.kill_node("gitaly-1")

        outcome = await fail_over(cluster, clients, PROJECT_PATH, "gitaly-1", automatic_wait=1)

        assert outcome == (
            "manual (praefect failover --to gitaly-2): gitaly-2 became the primary of demo/project.git"
        )
        metadata = await clients.repository(PROJECT_PATH)
        assert metadata is not None and metadata.primary == "gitaly-2"
