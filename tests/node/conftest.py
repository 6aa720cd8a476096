from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpc import aio

from praefect.node.server import NodeServer, NodeServerConfig

NODE_TOKEN = "node-secret-token"
STORAGE = "default"


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[NodeServer]:
    """An in-process node on a free loopback port with one storage `default`."""
    config = NodeServerConfig(
        listen_addr="127.0.0.1:0",
        storages={STORAGE: tmp_path / "storage"},
        token=NODE_TOKEN,
    )
    async with NodeServer(config) as server:
        yield server


@pytest.fixture
async def channel(node: NodeServer) -> AsyncIterator[aio.Channel]:
    assert node.bound_addr
    async with aio.insecure_channel(node.bound_addr) as ch:
        yield ch
