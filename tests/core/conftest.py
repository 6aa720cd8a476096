"""Three real node processes shared by a test module, and routers in front of them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc import aio

from praefect.core.server import RouterServer
from tests.support.processes import ServerProcess, start_node
from tests.support.router import NODE_TOKEN, router_settings, running_router

NODE_NAMES = ("gitaly-1", "gitaly-2", "gitaly-3")


@dataclass
class Nodes:
    """Three node processes; node ``name`` serves storage ``name`` at ``roots[name]``."""

    processes: dict[str, ServerProcess]
    roots: dict[str, Path]

    def address(self, name: str) -> str:
        return f"tcp://{self.processes[name].address}"

    @property
    def addresses(self) -> dict[str, str]:
        return {name: self.address(name) for name in self.processes}


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    base = tmp_path_factory.mktemp("nodes")
    roots = {name: base / name for name in NODE_NAMES}
    processes: dict[str, ServerProcess] = {}
    try:
        for name in NODE_NAMES:
            processes[name] = start_node({name: roots[name]}, NODE_TOKEN)
        yield Nodes(processes, roots)
    finally:
        for process in processes.values():
            process.stop()


@pytest.fixture
async def router(nodes: Nodes) -> AsyncIterator[RouterServer]:
    async with running_router(router_settings(nodes.addresses)) as server:
        yield server


@pytest.fixture
async def channel(router: RouterServer) -> AsyncIterator[aio.Channel]:
    assert router.bound_addr
    async with aio.insecure_channel(router.bound_addr) as ch:
        yield ch
