"""A real in-process node with a seeded repository, and routers in front of it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from grpc import aio
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from praefect.core.server import RouterServer
from praefect.node.server import NodeServer, NodeServerConfig
from tests.support.repos import SeededRepository, copy_repository, template_repository
from tests.support.router import NODE_TOKEN, router_settings, running_router
from tests.support.telemetry import in_memory_tracing

NODE = "gitaly-1"
#: the replication plugin needs Redis; these tests are about the call path
NO_REPLICATION = {"blocked": ["praefect.plugins.replication"]}


@dataclass
class Backend:
    node: NodeServer
    root: Path
    repository: SeededRepository

    @property
    def address(self) -> str:
        assert self.node.bound_addr
        return f"tcp://{self.node.bound_addr}"


@pytest.fixture
def tracing() -> Iterator[InMemorySpanExporter]:
    with in_memory_tracing() as exporter:
        yield exporter


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> SeededRepository:
    return template_repository(tmp_path_factory.mktemp("telemetry-template"))


@pytest.fixture
async def backend(tmp_path: Path, template: SeededRepository) -> AsyncIterator[Backend]:
    root = tmp_path / NODE
    repository = copy_repository(template, root)
    config = NodeServerConfig(listen_addr="127.0.0.1:0", storages={NODE: root}, token=NODE_TOKEN)
    async with NodeServer(config) as node:
        yield Backend(node, root, repository)


@contextlib.asynccontextmanager
async def router_for(
    backend: Backend, *, extra_plugins: Sequence[tuple[str, object]] = (), **sections: Any
) -> AsyncIterator[RouterServer]:
    """A router whose one virtual storage is ``backend``'s node; ``sections`` are settings."""
    sections.setdefault("plugins", NO_REPLICATION)
    settings = router_settings({NODE: backend.address}, **sections)
    async with running_router(settings, extra_plugins=extra_plugins) as router:
        yield router


@contextlib.asynccontextmanager
async def channel_to(server: RouterServer | NodeServer) -> AsyncIterator[aio.Channel]:
    assert server.bound_addr
    async with aio.insecure_channel(server.bound_addr) as channel:
        yield channel


@contextlib.contextmanager
def captured_log(logger_name: str, handler: logging.Handler, level: int = logging.INFO) -> Iterator[None]:
    """Send ``logger_name``'s records at ``level`` and above to ``handler``."""
    logger = logging.getLogger(logger_name)
    saved = logger.level
    logger.setLevel(level)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)
