"""The storage node server: configuration and lifecycle.

`NodeServerConfig` is plain data; `NodeServer` owns the grpc.aio server and
has the uvicorn-style lifecycle `startup()`, `serve()`, `shutdown()`
(:class:`praefect.core.lifecycle.Server`). Tests use it as an async context
manager.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from praefect.core import __version__
from praefect.core.child_watcher import use_pidfd_child_watcher
from praefect.core.keepalive import SERVER_KEEPALIVE_OPTIONS
from praefect.core.lifecycle import Server
from praefect.node.auth import TokenAuthInterceptor
from praefect.node.context import NodeContext
from praefect.node.git import run_git
from praefect.node.services import SERVICE_MODULES
from praefect.node.source_channels import close_source_channels
from praefect.node.storage import StorageLocator
from praefect.node.telemetry import node_interceptor, observe_git_processes, setup_node_process
from praefect.settings import TracingConfig

log = logging.getLogger("praefect.node")

DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024


@dataclass(slots=True)
class NodeServerConfig:
    listen_addr: str
    storages: dict[str, Path]
    token: str
    graceful_stop_timeout: float = 10.0
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    allow_v1_tokens: bool = False
    extra_options: list[tuple[str, int]] = field(default_factory=list)
    #: process-wide, applied by serve(): tracing settings (None: OTEL_* variables
    #: only) and the log format (text or json)
    tracing: TracingConfig | None = None
    log_format: str = "text"

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("the node needs a token (--token or node.token)")
        if not self.storages:
            raise ValueError("the node needs at least one storage (--storage NAME=PATH)")


def node_server_options(config: NodeServerConfig) -> list[tuple[str, int]]:
    """Options of the node's gRPC server."""
    return [
        ("grpc.max_receive_message_length", config.max_message_size),
        ("grpc.max_send_message_length", config.max_message_size),
        ("grpc.so_reuseport", 0),
        *SERVER_KEEPALIVE_OPTIONS,
        *config.extra_options,
    ]


class NodeServer(Server[NodeServerConfig]):
    kind = "node"

    def __init__(self, config: NodeServerConfig) -> None:
        super().__init__(config)
        self.server: aio.Server | None = None
        self.health = health.aio.HealthServicer()

    async def startup(self) -> None:
        # git runs for nearly every call: no thread per git process (Python 3.11)
        use_pidfd_child_watcher()
        for name, root in self.config.storages.items():
            root.mkdir(parents=True, exist_ok=True)
            log.info("storage %s at %s", name, root)
        git_version = (await run_git(["version"])).stdout.decode().strip().removeprefix("git version ")
        ctx = NodeContext(
            locator=StorageLocator(self.config.storages),
            token=self.config.token,
            server_version=__version__,
            git_version=git_version,
        )
        options = node_server_options(self.config)
        observe_git_processes()
        self.server = aio.server(
            interceptors=[
                node_interceptor(),  # first: also observes calls the token check rejects
                TokenAuthInterceptor(self.config.token, allow_v1=self.config.allow_v1_tokens),
            ],
            options=options,
        )
        for module in SERVICE_MODULES:
            module.register(self.server, ctx)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        host, _, _ = self.config.listen_addr.rpartition(":")
        port = self.server.add_insecure_port(self.config.listen_addr)
        if port == 0:
            raise OSError(f"cannot listen on {self.config.listen_addr}")
        self.bound_addr = f"{host}:{port}"
        await self.server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("praefect node listening on %s", self.bound_addr)

    async def shutdown(self, grace: float | None = None) -> None:
        if self.server is None:
            return
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(self.grace_period(grace))
        self.server = None
        # Only after the stop: replications in flight use them until they end.
        # They are the event loop's, and a loop serves one node outside tests.
        await close_source_channels()

    def stop_message(self) -> str:
        return (
            f"stopping: waiting up to {self.config.graceful_stop_timeout:.0f} s for calls in flight"
        )

    async def serve(self) -> None:
        """Set up the process's tracing and logging, then serve (see :class:`Server`)."""
        flush_telemetry = setup_node_process(self.config.tracing, self.config.log_format)
        try:
            await super().serve()
        finally:
            flush_telemetry()
