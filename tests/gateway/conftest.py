"""Fixtures: a real node process (the gateway calls it as its router: a
node is a Gitaly-protocol server too) and an in-process gateway in front."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from praefect.gateway.config import GatewayConfig
from praefect.gateway.server import GatewayServer
from tests.support.gateway import repo_url
from tests.support.gateway_faults import SilentServer
from tests.support.processes import ServerProcess, start_node

NODE_TOKEN = "gateway-test-node-token"
STORAGE = "praefect"
PASSWORD = "correct horse battery staple"

_names = itertools.count()


@pytest.fixture(scope="module")
def node_storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("storage")


@pytest.fixture(scope="module")
def node(node_storage: Path) -> Iterator[ServerProcess]:
    """One node process per test module; each test uses its own repositories."""
    process = start_node({STORAGE: node_storage}, NODE_TOKEN)
    yield process
    process.stop()


def gateway_config(router_addr: str, **overrides: Any) -> GatewayConfig:
    config = GatewayConfig(
        listen_addr="127.0.0.1:0",
        router_addr=router_addr,
        token=NODE_TOKEN,
        storage=STORAGE,
        password=PASSWORD,
    )
    return dataclasses.replace(config, **overrides)


@pytest.fixture
async def gateway(node: ServerProcess) -> AsyncIterator[GatewayServer]:
    async with GatewayServer(gateway_config(node.address)) as server:
        yield server


@pytest.fixture
async def silent_router() -> AsyncIterator[SilentServer]:
    """A router that accepts connections and never answers."""
    async with SilentServer() as server:
        yield server


@pytest.fixture
def project() -> str:
    """A relative path no other test uses (the node is shared in a module)."""
    return f"group/project-{next(_names)}.git"


@pytest.fixture
def url(gateway: GatewayServer, project: str) -> str:
    """The project's clone URL with the right credentials."""
    return repo_url(gateway.url, project, password=PASSWORD)
