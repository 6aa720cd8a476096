"""Two in-process nodes, a source (storage-a) and a target (storage-b), for
ReplicateRepository tests that look inside the nodes (spans, channels,
processes). Tests of behaviour between node processes use
`tests.support.processes.start_node` instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from grpc import aio

from praefect.node.gitaly_servers import GitalyServer, gitaly_servers_metadata
from praefect.node.server import NodeServer, NodeServerConfig
from praefect.node.source_channels import close_source_channels
from praefect.protos.gitaly import repository_pb2 as pb
from praefect.protos.gitaly import repository_pb2_grpc, shared_pb2
from tests.support.gitenv import git
from tests.support.grpc_client import auth

TOKEN_A, TOKEN_B = "token-of-a", "token-of-b"
STORAGE_A, STORAGE_B = "storage-a", "storage-b"


@dataclass
class NodePair:
    source: NodeServer
    target: NodeServer
    root_a: Path
    root_b: Path
    channel_b: aio.Channel

    @property
    def source_address(self) -> str:
        address: str | None = self.source.bound_addr
        assert address
        return address

    def on_a(self, path: str) -> shared_pb2.Repository:
        return shared_pb2.Repository(storage_name=STORAGE_A, relative_path=path)

    def on_b(self, path: str) -> shared_pb2.Repository:
        return shared_pb2.Repository(storage_name=STORAGE_B, relative_path=path)

    def seed_source(self, path: str, work: Path) -> Path:
        """A bare copy of the work repository `work` as `path` on the source."""
        destination = self.root_a / path
        git(["clone", "--quiet", "--bare", str(work), str(destination)])
        return destination

    async def replicate(
        self,
        path: str,
        *,
        source_address: str | None = None,
        extra_metadata: tuple[tuple[str, str], ...] = (),
        deadline: float = 30,
    ) -> None:
        servers = {STORAGE_A: GitalyServer(source_address or f"tcp://{self.source_address}", TOKEN_A)}
        await repository_pb2_grpc.RepositoryServiceStub(self.channel_b).ReplicateRepository(
            pb.ReplicateRepositoryRequest(repository=self.on_b(path), source=self.on_a(path)),
            metadata=(*auth(TOKEN_B), gitaly_servers_metadata(servers), *extra_metadata),
            timeout=deadline,
        )


@contextlib.asynccontextmanager
async def node_pair(root: Path) -> AsyncIterator[NodePair]:
    """Both nodes on this test's event loop; the source channels closed at the end."""
    root_a, root_b = root / "a", root / "b"
    source = NodeServer(NodeServerConfig("127.0.0.1:0", {STORAGE_A: root_a}, TOKEN_A))
    target = NodeServer(NodeServerConfig("127.0.0.1:0", {STORAGE_B: root_b}, TOKEN_B))
    async with source, target:
        assert target.bound_addr
        try:
            async with aio.insecure_channel(target.bound_addr) as channel_b:
                yield NodePair(source, target, root_a, root_b, channel_b)
        finally:
            await close_source_channels()
