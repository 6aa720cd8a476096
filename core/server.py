"""The router's gRPC server and its lifecycle.

``RouterServer(RouterConfig)`` has uvicorn's shape: ``startup()`` builds the
router (plugins, node channels), registers the services the router answers
itself and the forwarding handler, runs the ``startup`` hooks and listens;
``shutdown()`` stops accepting calls, lets the calls in flight finish within
``server.graceful_stop_timeout``, runs the ``shutdown`` hooks and closes the
node channels; ``serve()`` does both around SIGTERM/SIGINT
(:class:`praefect.core.lifecycle.Server`). Tests use it as an async context
manager.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from praefect.core import server_service
from praefect.core.keepalive import SERVER_KEEPALIVE_OPTIONS
from praefect.core.lifecycle import Server
from praefect.core.local_services import ServiceRegistrar
from praefect.core.proxy import ProxyHandler
from praefect.core.router import Router
from praefect.core.router_config import RouterConfig
from praefect.core.telemetry import TELEMETRY, RouterTelemetry

__all__ = ["RouterServer", "server_options"]

log = logging.getLogger("praefect.router")


def server_options(config: RouterConfig) -> list[tuple[str, Any]]:
    """Options of the router's own gRPC server."""
    return [
        ("grpc.max_receive_message_length", config.max_message_size),
        ("grpc.max_send_message_length", config.max_message_size),
        ("grpc.so_reuseport", 1 if config.reuse_port else 0),
        *SERVER_KEEPALIVE_OPTIONS,
    ]


class RouterServer(Server[RouterConfig]):
    """One router: a ``grpc.aio`` server around a :class:`Router`."""

    kind = "router"

    def __init__(
        self,
        config: RouterConfig,
        *,
        extra_plugins: Sequence[tuple[str, object]] = (),
        load_entry_points: bool = True,
    ) -> None:
        super().__init__(config)
        self._extra_plugins = tuple(extra_plugins)
        self._load_entry_points = load_entry_points
        self.router: Router | None = None
        self.server: aio.Server | None = None
        self.health = health.aio.HealthServicer()

    async def startup(self) -> None:
        router = Router(
            self.config,
            extra_plugins=self._extra_plugins,
            load_entry_points=self._load_entry_points,
        )
        router.open()
        self.router = router
        telemetry = RouterTelemetry(router)
        server = aio.server(options=server_options(self.config), interceptors=(telemetry.interceptor,))
        try:
            health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
            registrar = ServiceRegistrar(server, router)
            server_service.register(router, registrar)
            router.hooks.register_services(router, registrar)
            # Last: registered methods above take precedence over this
            # catch-all, so intercepted services are never forwarded.
            server.add_generic_rpc_handlers((ProxyHandler(router),))
            host = self.config.bind_addr.rpartition(":")[0]
            try:
                port = server.add_insecure_port(self.config.bind_addr)
            except RuntimeError as error:  # gRPC's way of saying the bind failed
                raise OSError(
                    f"cannot listen on {self.config.bind_addr}: the address is in use or "
                    "not local; set listen_addr or --listen"
                ) from error
            self.bound_addr = f"{host}:{port}"
            await telemetry.start()
            await router.hooks.startup(router)
            await server.start()
        except BaseException:
            await server.stop(0)
            await telemetry.stop()
            await router.close()
            self.router = None
            raise
        self.server = server
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("listening on %s", self.bound_addr)

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting calls; let calls in flight finish within ``grace`` seconds."""
        server, router = self.server, self.router
        self.server = None
        if server is not None:
            await self.health.enter_graceful_shutdown()
            await server.stop(self.grace_period(grace))
        if router is not None:
            await router.stash[TELEMETRY].stop()
            await router.hooks.shutdown(router)
            await router.close()
            self.router = None

    @property
    def install_signal_handlers(self) -> bool:
        return self.config.install_signal_handlers

    def stop_message(self) -> str:
        return (
            "stopping: new calls are refused; calls in flight have "
            f"{self.config.graceful_stop_timeout:.1f} s to finish"
        )
