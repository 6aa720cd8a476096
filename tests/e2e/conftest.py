"""Fixtures: a real demo cluster (three node processes, a router with its
embedded Redis, the gateway) in a short work directory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from praefect.core.demo.clients import ClusterClients
from praefect.core.demo.cluster import VIRTUAL_STORAGE, DemoCluster
from tests.support.replication_cluster import short_tmp_dir


@pytest.fixture
def demo_workdir() -> Iterator[Path]:
    """Short, under /tmp: the embedded Redis's unix socket lives in it."""
    with short_tmp_dir("pre2e-") as path:
        yield path / "demo"


@pytest.fixture
async def cluster(demo_workdir: Path) -> AsyncIterator[DemoCluster]:
    async with DemoCluster(demo_workdir) as running:
        yield running


@pytest.fixture
async def clients(cluster: DemoCluster) -> AsyncIterator[ClusterClients]:
    async with ClusterClients(cluster.settings, cluster.router_address, VIRTUAL_STORAGE) as opened:
        yield opened
