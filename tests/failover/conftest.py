from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from praefect.plugins.failover.election import Elector
from praefect.plugins.failover.scripts import FailoverScripts
from praefect.plugins.replication.embedded_redis import EmbeddedRedis
from praefect.plugins.replication.state import RepositoryStore
from praefect.settings import to_toml
from tests.support.failover_cluster import NAMES, FailoverCluster, failover_cluster
from tests.support.redis_fixtures import client, redis_dir, redis_server, store
from tests.support.router import router_settings_mapping

#: the shared fixtures, imported here for pytest to find
__all__ = ["client", "redis_dir", "redis_server", "store"]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[FailoverCluster]:
    """Redis and three real nodes; routers on demand (``cluster.router()``)."""
    async with failover_cluster(tmp_path) as cluster:
        yield cluster


@pytest.fixture
def elector(store: RepositoryStore) -> Elector:
    return Elector(store, FailoverScripts.register(store.client))


@pytest.fixture
def settings_file(tmp_path: Path, redis_server: EmbeddedRedis) -> Path:
    """Settings of a router with NAMES on ``redis_server``, for the operator
    commands: they work on Redis only and never dial the nodes."""
    mapping = router_settings_mapping(
        {name: f"tcp://127.0.0.1:{9000 + i}" for i, name in enumerate(NAMES)},
        redis={"url": redis_server.url},
    )
    path = tmp_path / "praefect.toml"
    path.write_text(to_toml(mapping))
    return path
